#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A raw image on a block device (a loop device over a file): size from
# the device, O_DIRECT with the device's sector size; reads, unaligned
# writes (pipelined, sharing sectors), write-zeroes and trim are all
# correct, and the backing file holds exactly what was acknowledged
# (qemu-img compare).  Needs root and a working losetup (else skipped).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires test "$(id -u)" -eq 0
requires losetup --version
requires $PY -c 'import nbd'
requires qemu-img --version

$PY -c '
import random, sys
open(sys.argv[1], "wb").write(random.Random(9).randbytes(32 << 20))' "$TESTDIR/backing.img"
dev=$(losetup -f --show "$TESTDIR/backing.img" 2>/dev/null) \
  || { echo "$0: test skipped: losetup cannot attach a loop device"; exit 77; }
cleanup_fn '[ -z "$dev" ] || losetup -d "$dev"'
[ -b "$dev" ] || fail "$dev is not a block device"

start_mirrord b --export "vm=$dev"
ctl b --json status vm | $PY -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["size"] == 32 << 20 and e["direct_io"] is True, e
assert e["format"] == "raw", e'
grep -q "export vm: $dev (raw, 33554432 bytes, O_DIRECT)" "$TESTDIR/b.log" \
  || fail "not logged: $(cat "$TESTDIR/b.log")"

$PY - "$(uri b vm)" "$TESTDIR/backing.img" > "$TESTDIR/model.img" <<'PY'
import nbd, random, sys
uri, path = sys.argv[1:]
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
size = h.get_size()
model = bytearray(open(path, "rb").read())
assert len(model) == size
rng = random.Random(13)
SECTOR = 512

def check(off, n, what):
    got = h.pread(n, off)
    if got != model[off:off + n]:
        bad = next(i for i in range(n) if got[i] != model[off + i])
        sys.exit("%s: byte %d differs" % (what, off + bad))

for i in range(800):
    n = rng.randint(1, rng.choice((600, 9000, 400000)))
    off = rng.randint(0, size - n)
    op = rng.random()
    if op < 0.45:
        data = rng.randbytes(n)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if op < 0.1 else 0)
        model[off:off + n] = data
    elif op < 0.6:
        flags = rng.choice((0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FAST_ZERO))
        try:
            h.zero(n, off, flags)
        except nbd.Error as e:
            assert flags == nbd.CMD_FLAG_FAST_ZERO and e.errno == "ENOTSUP", e
            continue
        model[off:off + n] = bytes(n)
    elif op < 0.7:
        # TRIM is advisory: only whole sectors may change, and only to
        # zero; partial sectors at the edges keep their data.
        old = bytes(model[off:off + n])
        h.trim(n, off)
        got = h.pread(n, off)
        lo = -off % SECTOR
        hi = n - (off + n) % SECTOR
        if hi <= lo:
            assert got == old, "trim changed a partial sector"
        else:
            assert got[:lo] == old[:lo] and got[hi:] == old[hi:], \
                "trim changed a partial sector"
            if got[lo:hi] not in (old[lo:hi], bytes(hi - lo)):
                assert all(g == 0 or g == o for g, o in zip(got[lo:hi], old[lo:hi])), \
                    "trim wrote garbage"
        model[off:off + n] = got
    else:
        check(off, n, "read")
    if i % 100 == 0:
        h.flush()

# Pipelined unaligned writes sharing sectors: none may undo another.
pos = rng.randint(0, 511)
cookies = []
while pos < 8 << 20:
    n = rng.randint(1, 3000)
    data = rng.randbytes(n)
    cookies.append(h.aio_pwrite(data, pos))
    model[pos:pos + n] = data
    pos += n
while h.aio_in_flight() > 0:
    h.poll(-1)
assert all(h.aio_command_completed(c) for c in cookies)

# A block device is reported fully allocated.
def extent_cb(meta, offset, entries, err):
    assert entries[0] > 0 and not (entries[1] & nbd.STATE_HOLE), entries
h.block_status(1 << 20, 0, extent_cb)

h.pwrite(b"\x7f" * 5, size - 5)
model[size - 5:] = b"\x7f" * 5
h.flush()
for off in range(0, size, 4 << 20):
    check(off, 4 << 20, "final read")
h.shutdown()
sys.stdout.buffer.write(model)
PY
[ "$(stat -c %s "$TESTDIR/model.img")" = $((32 << 20)) ] || fail "no model"

# The export, the device and its backing file all agree with the model.
qemu-img compare -f raw -F raw "$(uri b vm)" "$TESTDIR/model.img" \
  || fail "export differs from the model"
stop_mirrord b
qemu-img compare -f raw -F raw "$dev" "$TESTDIR/model.img" \
  || fail "device differs from the model"
losetup -d "$dev"
dev=
qemu-img compare -f raw -F raw "$TESTDIR/backing.img" "$TESTDIR/model.img" \
  || fail "backing file differs from the model"
exit 0
