#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# WRITE_ZEROES, TRIM, FLUSH and CACHE.  Zeroing without NO_HOLE
# deallocates, with NO_HOLE keeps the blocks allocated (checked with
# stat on the file and with base:allocation); FAST_ZERO either succeeds
# quickly or fails at once with ENOTSUP, never falls back to writing
# (on a block device, where NO_HOLE zeroing cannot be fast, it must be
# ENOTSUP); TRIM punches holes; unaligned zeroes keep their neighbours.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'
requires qemu-io --version

truncate -s 2G "$TESTDIR/disk.img"
start_mirrord a --export "vm1=$TESTDIR/disk.img"

$PY - "$(uri a vm1)" "$TESTDIR/disk.img" "$(stat -f -c %T "$TESTDIR")" <<'PY'
import nbd, os, sys, time
uri, image, fstype = sys.argv[1], sys.argv[2], sys.argv[3]
MiB = 1 << 20
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
assert h.can_zero() and h.can_fast_zero() and h.can_trim()
assert h.can_flush() and h.can_cache() and h.can_fua()

def blocks():
    """512-byte blocks allocated to the image file."""
    return os.stat(image).st_blocks

def status(offset, count):
    """base:allocation as [(offset, length, flags)]."""
    out = []
    def cb(ctx, off, entries, err):
        pos = off
        for i in range(0, len(entries), 2):
            out.append((pos, entries[i], entries[i + 1]))
            pos += entries[i]
    h.block_status(count, offset, cb)
    return out

def flags_over(offset, count):
    """The union and intersection of the flags covering the range."""
    s = [f for o, l, f in status(offset, count) if o < offset + count]
    all_ = 3
    for f in s:
        all_ &= f
    return all_

data = os.urandom(16 * MiB)
h.pwrite(data, 0)
h.flush()
full = blocks()
assert full >= 16 * MiB // 512, full
assert flags_over(0, 16 * MiB) == 0

# NO_HOLE: zeroes, blocks stay allocated.
h.zero(4 * MiB, 0, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4 * MiB, 0) == bytes(4 * MiB)
assert blocks() >= full, ("NO_HOLE deallocated", blocks(), full)
assert flags_over(0, 4 * MiB) & nbd.STATE_ZERO, status(0, 4 * MiB)

# Without NO_HOLE (and with FUA): the range becomes a hole.
h.zero(4 * MiB, 4 * MiB, nbd.CMD_FLAG_FUA)
assert h.pread(4 * MiB, 4 * MiB) == bytes(4 * MiB)
assert blocks() <= full - 4 * MiB // 512, ("zero did not punch", blocks(), full)
assert flags_over(4 * MiB, 4 * MiB) == nbd.STATE_HOLE | nbd.STATE_ZERO, status(4 * MiB, 4 * MiB)

# Unaligned zeroes, with and without NO_HOLE: neighbours untouched.
data = bytes(8 * MiB) + data[8 * MiB:]
for off, n, fl in ((8 * MiB + 1000, 3000, 0), (9 * MiB - 1, 2, nbd.CMD_FLAG_NO_HOLE),
                   (10 * MiB + 511, 65538, 0), (11 * MiB + 7, 1, nbd.CMD_FLAG_FUA)):
    h.zero(n, off, fl)
    lo, hi = off - 4096, off + n + 4096
    data = data[:off] + bytes(n) + data[off + n:]
    assert h.pread(hi - lo, lo) == data[lo:hi], ("unaligned zero", off, n)

# TRIM punches a hole (the data may then read as anything; ours reads
# as zeroes since the file system punched it).
before = blocks()
h.trim(2 * MiB, 12 * MiB)
assert blocks() <= before - 2 * MiB // 512, ("trim did not punch", blocks(), before)
assert flags_over(12 * MiB, 2 * MiB) & nbd.STATE_HOLE, status(12 * MiB, 2 * MiB)
h.trim(3000, 14 * MiB + 1000, nbd.CMD_FLAG_FUA)   # advisory: accepted
assert h.pread(1000, 14 * MiB) == data[14 * MiB:14 * MiB + 1000]

def data_in(offset, count):
    """Does the file hold data (per SEEK_DATA) in the range?"""
    fd = os.open(image, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) < offset + count
    except OSError:
        return False            # ENXIO: no data up to the end
    finally:
        os.close(fd)

# FAST_ZERO: success or ENOTSUP, and quick either way, on a large range;
# and never by writing zeroes: ext4 and xfs show a range zeroed without
# writing (a hole, or unwritten extents) as no data to SEEK_DATA.
for fl in (nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE):
    h.pwrite(b"\xff" * 4096, 1024 * MiB)
    t = time.monotonic()
    try:
        h.zero(1024 * MiB, 1024 * MiB, fl)
        ok = True
    except nbd.Error as e:
        assert e.errno == "ENOTSUP", e
        ok = False
    took = time.monotonic() - t
    assert took < 2.0, ("FAST_ZERO was slow", fl, took)
    assert h.pread(4096, 1024 * MiB) == (bytes(4096) if ok else b"\xff" * 4096)
    if not ok:
        continue
    if not fl & nbd.CMD_FLAG_NO_HOLE:
        assert blocks() < 512 * MiB // 512, blocks()    # a hole, not data
    else:
        assert flags_over(1024 * MiB, 64 * MiB) & nbd.STATE_ZERO
    if fstype in ("ext2/ext3", "xfs"):
        assert not data_in(1024 * MiB, 1024 * MiB), ("FAST_ZERO wrote data", fl)

# FLUSH and CACHE succeed and change nothing.
h.flush()
h.cache(32 * MiB, 0)
h.cache(1, 2048 * MiB - 1)
got = h.pread(16 * MiB, 0)
assert got[:12 * MiB] == data[:12 * MiB]      # (12M..14M+4000 was trimmed)
assert got[14 * MiB + 4000:] == data[14 * MiB + 4000:]
PY

# qemu-io's view: write -z (NO_HOLE), -z -u (may unmap), -z -n (fast).
u=$(uri a vm1)
qemu-io -f raw -c 'write -P 0x5a 20M 1M' -c 'write -z 20M 64k' -c 'write -z -u 21954560 64k' \
  -c 'write -z -n 21037056 64k' -c 'read -P 0 20M 128k' -c 'read -P 0x5a 21102592 832k' \
  -c 'read -P 0 21954560 64k' "$u" > "$TESTDIR/qio.out" \
  || { cat "$TESTDIR/qio.out"; fail "qemu-io zero writes"; }
stop_mirrord a

# A block device: NO_HOLE zeroing cannot be fast there, so FAST_ZERO
# with NO_HOLE must fail with ENOTSUP at once; without NO_HOLE it may
# discard.  (Needs a loop device; skipped without one.)
if [ "$(id -u)" -eq 0 ] && truncate -s 4G "$TESTDIR/backing.img" \
   && dev=$(losetup -f --show "$TESTDIR/backing.img" 2>/dev/null); then
  cleanup_fn "losetup -d $dev"
  start_mirrord b --export "bd=$dev"
  $PY - "$(uri b bd)" <<'PY'
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.get_size() == 4 << 30
h.pwrite(b"\xee" * 65536, 0)
t = time.monotonic()
try:
    h.zero(3 << 30, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    raise SystemExit("FAST_ZERO|NO_HOLE on a block device claimed success")
except nbd.Error as e:
    assert e.errno == "ENOTSUP", e
assert time.monotonic() - t < 1.0, "ENOTSUP was not immediate"
assert h.pread(65536, 0) == b"\xee" * 65536, "failed FAST_ZERO changed data"
h.zero(1 << 20, 0, nbd.CMD_FLAG_NO_HOLE)       # slow path allowed here
assert h.pread(65536, 0) == bytes(65536)
h.pwrite(b"\xee" * 65536, 0)
try:
    h.zero(1 << 20, 0, nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(65536, 0) == bytes(65536)
except nbd.Error as e:
    assert e.errno == "ENOTSUP", e
PY
  stop_mirrord b
else
  echo "$0: no loop device: block device part skipped"
fi
exit 0
