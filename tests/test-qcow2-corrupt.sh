#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Corrupt qcow2 metadata met at run time (issue 5): a data cluster
# offset past the end of the file, one pointing into the L1 table, and
# a compressed cluster that does not inflate.
# The request fails with EIO, the image is marked corrupt (incompatible
# bit 1, so qemu-img refuses to write it too), later writes are
# refused, other clusters still read, the daemon lives, and nothing is
# written outside the file's valid clusters (the file's size and its
# metadata clusters are unchanged).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-img --version
requires qemu-io --version

img=$TESTDIR/c.qcow2
qemu-img create -q -f qcow2 "$img" 16M
qemu-io -f qcow2 -c 'write -P 0x11 0 64k' -c 'write -P 0x22 1M 64k' \
  -c 'write -P 0x33 2M 64k' "$img" >/dev/null
# Point guest cluster 1M at 1 TiB, and guest cluster 2M at the L1 table.
$PY - "$img" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(104)
l1_off = struct.unpack(">Q", h[40:48])[0]
f.seek(l1_off); l2_off = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
cs = 1 << struct.unpack(">I", h[20:24])[0]
for guest, host in ((1 << 20, 1 << 40), (2 << 20, l1_off)):
    f.seek(l2_off + (guest // cs) * 8)
    f.write(struct.pack(">Q", host | (1 << 63)))
PY
size_before=$(stat -c %s "$img")
start_mirrord a --export "vm1=$img,format=qcow2"
U=$(uri a vm1)
$PY - "$U" <<'PY' || fail "corrupt clusters not refused with EIO"
import errno, nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.pread(4096, 0) == b"\x11" * 4096          # a good cluster reads
for off in (1 << 20, 2 << 20):
    try:
        h.pread(4096, off)
        sys.exit("read at %d succeeded" % off)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
try:
    h.pwrite(b"x" * 4096, 8 << 20)                  # any write, once corrupt
    sys.exit("write accepted on a corrupt image")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
assert h.pread(4096, 0) == b"\x11" * 4096          # reads go on
PY
grep -q "qcow2 metadata is corrupt" "$TESTDIR/a.log" || fail "corruption not logged"
ctl a status >/dev/null || fail "daemon unresponsive"
stop_mirrord a
[ "$(stat -c %s "$img")" = "$size_before" ] || fail "the file grew"
$PY - "$img" <<'PY' || fail "corrupt bit not set"
import struct, sys
h = open(sys.argv[1], "rb").read(80)
sys.exit(0 if struct.unpack(">Q", h[72:80])[0] & 2 else 1)
PY
# A compressed cluster that does not inflate fails its read, and the
# last cluster inflated before it still reads right afterwards (the
# failed inflate used to leave its garbage in the one-cluster cache
# while the cache still claimed the good cluster; found by
# fuzz-qcow2-write).
truncate -s 1M "$TESTDIR/z.raw"
qemu-io -f raw -c 'write -P 0x61 0 64k' -c 'write -P 0x62 64k 64k' "$TESTDIR/z.raw" >/dev/null
qemu-img convert -c -O qcow2 -o cluster_size=4096 "$TESTDIR/z.raw" "$TESTDIR/z.qcow2"
$PY - "$TESTDIR/z.qcow2" <<'PY'
import sys, zlib, qcow2util as q
img = q.Image(sys.argv[1])
e = img.l2_entry(64 << 10)
assert e & q.COMPRESSED, "guest 64k is not compressed"
x = 62 - (img.h["cluster_bits"] - 8)
start = e & ((1 << x) - 1)
# A valid deflate stream that ends 3 KiB short of a cluster: it
# inflates part way, then fails.
z = zlib.compressobj(9, zlib.DEFLATED, -15)
short = z.compress(b"\x77" * 1024) + z.flush()
with open(sys.argv[1], "r+b") as f:
    f.seek(start)
    f.write(short)
PY
start_mirrord z --export "vm1=$TESTDIR/z.qcow2,format=qcow2,readonly"
$PY - "$(uri z vm1)" <<'PY' || fail "a failed inflate changed what another cluster reads"
import errno, nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.pread(4096, 0) == b"\x61" * 4096
try:
    h.pread(4096, 64 << 10)
    sys.exit("the broken compressed cluster read")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
assert h.pread(4096, 0) == b"\x61" * 4096, "guest 0 reads garbage"
assert h.pread(4096, 512) == b"\x61" * 4096
PY
stop_mirrord z

# A writable open now refuses it, naming the bit.
expect_status 1 timeout 20 "$MIRRORD" -f --export "vm1=$img,format=qcow2" \
  --nbd-socket "$TESTDIR/x.nbd" --control "$TESTDIR/x.ctl" --state-dir "$TESTDIR/x.state" \
  2>"$TESTDIR/err"
grep -q "unsupported qcow2 feature: corrupt bit" "$TESTDIR/err" || fail "$(cat "$TESTDIR/err")"
exit 0
