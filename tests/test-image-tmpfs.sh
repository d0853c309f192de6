#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Raw images on memory file systems: on tmpfs (which newer kernels let
# use O_DIRECT) and on ramfs (which refuses O_DIRECT, so mirrord logs
# that it falls back to buffered I/O).  Either way every read, write,
# zero and trim is correct, checked against a model of the disk and
# against the file itself.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'
requires test "$(stat -f -c %T /dev/shm)" = tmpfs

# exercise URI FILE SEED TRIM: random unaligned I/O, pipelined, checked.
# TRIM "zero": trimmed bytes read as zero (a hole was punched); "any":
# each trimmed byte reads as zero or as before (TRIM is advisory).
cat > "$TESTDIR/exercise.py" <<'PY'
import nbd, os, random, sys
uri, path, seed, trim = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
size = h.get_size()
model = bytearray(open(path, "rb").read())    # what the disk must hold
assert len(model) == size

def rand_range(maxlen):
    n = rng.randint(1, maxlen)
    off = rng.randint(0, size - n)
    return off, n

def check(off, n, what):
    got = h.pread(n, off)
    if got != model[off:off + n]:
        bad = next(i for i in range(n) if got[i] != model[off + i])
        sys.exit("%s: byte %d differs (got %d, want %d)"
                 % (what, off + bad, got[bad], model[off + bad]))

# Synchronous mixed operations.
for i in range(1000):
    op = rng.choice("wwwwzztr")
    off, n = rand_range(rng.choice((512, 8192, 300000)))
    if op == "w":
        data = rng.randbytes(n)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if rng.random() < 0.2 else 0)
        model[off:off + n] = data
    elif op == "z":
        flags = rng.choice((0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FAST_ZERO))
        try:
            h.zero(n, off, flags)
        except nbd.Error as e:
            assert flags == nbd.CMD_FLAG_FAST_ZERO and e.errno == "ENOTSUP", e
            continue
        model[off:off + n] = bytes(n)
    elif op == "t":
        old = bytes(model[off:off + n])
        h.trim(n, off)
        got = h.pread(n, off)
        if trim == "zero" or got not in (old, bytes(n)):
            assert all(g == 0 or (trim == "any" and g == o)
                       for g, o in zip(got, old)), "trim at %d: %d" % (off, n)
        model[off:off + n] = got
    else:
        check(off, n, "read")
    if i % 50 == 0:
        h.flush()

# Pipelined writes that share blocks but never overlap: none may undo
# another (read-modify-write of shared blocks must be serialised).
pos = rng.randint(0, 4096)
cookies = []
while pos < min(size, 4 << 20):
    n = min(rng.randint(1, 9000), size - pos)
    data = rng.randbytes(n)
    cookies.append(h.aio_pwrite(data, pos))
    model[pos:pos + n] = data
    pos += n
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)

# The last bytes.
h.pwrite(b"\xee" * 3, size - 3)
model[size - 3:] = b"\xee" * 3
check(size - 4096, 4096, "end")

# Block status: whatever is reported as zero reads as zero.
def extent_cb(meta, offset, entries, err):
    for i in range(0, len(entries), 2):
        length, flags = entries[i], entries[i + 1]
        if flags & nbd.STATE_ZERO:
            assert model[offset:offset + length] == bytes(length), \
                "extent at %d reported zero but is not" % offset
        offset += length
off = 0
while off < size:
    n = min(size - off, 1 << 30)
    h.block_status(n, off, extent_cb)
    off += n

h.flush()
for off in range(0, size, 1 << 20):
    check(off, min(1 << 20, size - off), "final read")
h.shutdown()
with open(path, "rb") as f:
    assert f.read() == model, "the file does not hold what was acknowledged"
print("ok")
PY

run () {
  local name=$1 file=$2 direct=$3 trim=$4
  truncate -s 24M "$file"
  start_mirrord "$name" --export "vm1=$file"
  [ "$(ctl "$name" --json status vm1 | $PY -c '
import json, sys; print(json.load(sys.stdin)["exports"][0]["direct_io"])')" = "$direct" ] \
    || fail "$name: direct_io is not $direct"
  $PY "$TESTDIR/exercise.py" "$(uri "$name" vm1)" "$file" "$RANDOM" "$trim" \
    | grep -qx ok || fail "$name: data checks failed"
  stop_mirrord "$name"
  rm -f "$file"
}

# tmpfs: O_DIRECT used if the kernel allows it, buffered with a log
# line if not.
shm=$(mktemp -d /dev/shm/mirrord-test.XXXXXX)
cleanup_fn "rm -rf '$shm'"
touch "$shm/probe"
if $PY -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT))' \
    "$shm/probe" 2>/dev/null; then
  tmpfs_direct=True
else
  tmpfs_direct=False
fi
run shm "$shm/disk.img" "$tmpfs_direct" zero
if [ $tmpfs_direct = False ]; then
  grep -q "O_DIRECT refused by the file system.*using buffered I/O" "$TESTDIR/shm.log" \
    || fail "no log line about buffered I/O"
fi

# ramfs refuses O_DIRECT outright (needs root to mount).
mkdir "$TESTDIR/ramfs"
if mount -t ramfs ramfs "$TESTDIR/ramfs" 2>/dev/null; then
  cleanup_fn "umount '$TESTDIR/ramfs'"
  run ram "$TESTDIR/ramfs/disk.img" False any
  grep -q "ramfs/disk.img: O_DIRECT refused by the file system.*using buffered I/O" \
    "$TESTDIR/ram.log" || fail "no log line about buffered I/O: $(cat "$TESTDIR/ram.log")"
  grep -q "export vm1: .*buffered" "$TESTDIR/ram.log" || fail "export not logged as buffered"
else
  echo "$0: cannot mount ramfs; the O_DIRECT refusal part is skipped"
fi
exit 0
