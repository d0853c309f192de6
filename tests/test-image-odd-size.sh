#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A raw file whose size is not a multiple of the block size (10000000
# bytes): served buffered, with a log line; reads and writes up to the
# last byte are exact; anything past the end is refused (writes with
# ENOSPC) and the file never grows.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'
requires nbdcopy --version
requires qemu-img --version

size=10000000
$PY -c '
import random, sys
open(sys.argv[1], "wb").write(random.Random(7).randbytes(int(sys.argv[2])))' \
  "$TESTDIR/odd.img" $size
cp "$TESTDIR/odd.img" "$TESTDIR/orig.img"
start_mirrord o --export "odd=$TESTDIR/odd.img"
grep -q "odd.img: size $size is not a multiple of the direct I/O alignment [0-9]*; using buffered I/O" \
  "$TESTDIR/o.log" || fail "no log line about buffered I/O: $(cat "$TESTDIR/o.log")"
ctl o --json status odd | $PY -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["size"] == 10000000 and e["direct_io"] is False, e'

# A whole copy through NBD is the file, byte for byte.
nbdcopy "$(uri o odd)" "$TESTDIR/copy.img"
cmp "$TESTDIR/copy.img" "$TESTDIR/orig.img" || fail "nbdcopy of the export differs"

$PY - "$(uri o odd)" "$TESTDIR/odd.img" <<'PY'
import nbd, random, sys
uri, path = sys.argv[1:]
h = nbd.NBD()
h.set_strict_mode(0)            # let the server judge the ranges
h.add_meta_context("base:allocation")
h.connect_uri(uri)
size = h.get_size()
assert size == 10000000, size
model = bytearray(open(path, "rb").read())
rng = random.Random(11)

def check(off, n):
    assert h.pread(n, off) == model[off:off + n], "read %d+%d" % (off, n)

def refused(op, errno):
    try:
        op()
    except nbd.Error as e:
        assert e.errno == errno, "%s, expected %s" % (e, errno)
    else:
        raise AssertionError("an out-of-range request succeeded")

# Reads and writes that end at the last byte, of every shape.
for n in (1, 7, 100, 128, 129, 4096, 5000, 70000):
    check(size - n, n)
for off, n in ((size - 1, 1), (size - 7, 7), (size - 2000, 2000),
               (size - 128, 128), (size - 70001, 70001), (9999872, 128)):
    data = rng.randbytes(n)
    h.pwrite(data, off, nbd.CMD_FLAG_FUA)
    model[off:off + n] = data
    check(size - 100000, 100000)
h.zero(10, size - 10)
model[size - 10:] = bytes(10)
h.trim(500, size - 500)         # a file: a punched hole reads as zero
model[size - 500:] = bytes(500)
check(size - 4096, 4096)

# Past the end: refused, the connection stays usable.
refused(lambda: h.pwrite(b"x", size), "ENOSPC")
refused(lambda: h.pwrite(b"xy", size - 1), "ENOSPC")
refused(lambda: h.pwrite(b"x" * 65536, size + 65536), "ENOSPC")
refused(lambda: h.zero(2, size - 1), "ENOSPC")
refused(lambda: h.zero(4096, size), "ENOSPC")
refused(lambda: h.pread(2, size - 1), "EINVAL")
refused(lambda: h.pread(1, size), "EINVAL")
refused(lambda: h.trim(4096, size - 1), "EINVAL")
check(size - 4096, 4096)

# Random unaligned traffic all over, then everything read back.
for i in range(500):
    n = rng.randint(1, 200000)
    off = rng.randint(0, size - n)
    op = rng.random()
    if op < 0.6:
        data = rng.randbytes(n)
        h.pwrite(data, off)
        model[off:off + n] = data
    elif op < 0.8:
        h.zero(n, off, nbd.CMD_FLAG_NO_HOLE if op < 0.7 else 0)
        model[off:off + n] = bytes(n)
    else:
        check(off, n)

# Block status covers the export exactly, and its zeros are zeros.
seen = [0]
def extent_cb(meta, offset, entries, err):
    for i in range(0, len(entries), 2):
        if entries[i + 1] & nbd.STATE_ZERO:
            assert model[offset:offset + entries[i]] == bytes(entries[i])
        offset += entries[i]
    seen[0] = offset
h.block_status(size - 9990000, 9990000, extent_cb)
assert seen[0] <= size, seen
h.flush()
check(0, size)
h.shutdown()
open(path + ".model", "wb").write(model)
PY
stop_mirrord o
[ "$(stat -c %s "$TESTDIR/odd.img")" = $size ] || fail "the file changed size"
cmp "$TESTDIR/odd.img" "$TESTDIR/odd.img.model" || fail "the file lacks acknowledged writes"

# qemu's own client sees the same size and refuses to cross the end.
start_mirrord q --export "odd=$TESTDIR/odd.img"
qemu-img compare -f raw -F raw "$(uri q odd)" "$TESTDIR/odd.img.model" >/dev/null \
  || fail "qemu-img compare"
qemu-io -f raw -c "write 9999500 1000" "$(uri q odd)" >/dev/null 2>&1 \
  && fail "qemu-io wrote past the end"
stop_mirrord q
[ "$(stat -c %s "$TESTDIR/odd.img")" = $size ] || fail "the file changed size"
exit 0
