#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Writes that outgrow the refcount table.  With 512-byte clusters one
# refcount table cluster covers 8 MiB of file (16-bit refcounts; 1 MiB
# with 64-bit ones), so 24 MiB of data written through mirrord, in
# order and then as random concurrent 4K writes, makes the table grow
# (and move) several times.  The data reads back, qemu-img check is
# clean after a stop, and the header shows the bigger table.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
requires nbdcopy --version
cd "$TESTDIR"

qemu-img create -q -f qcow2 -o cluster_size=512 r16.qcow2 64M
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 r64.qcow2 64M
for i in r16 r64; do
  [ "$(qcow2util header $i.qcow2 | awk '$1 == "refcount_table_clusters" { print $2 }')" = 1 ] \
    || fail "$i: expected a one-cluster refcount table to start with"
done

# 16M in order, then 8M of random 4K blocks elsewhere, 32 in flight.
truncate -s 64M data.raw
head -c 16M /dev/urandom | dd of=data.raw bs=1M seek=4 conv=notrunc status=none
$PY - data.raw <<'PY' > /dev/null
import random, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(40 << 20)
    f.write(random.randbytes(8 << 20))
PY
start_mirrord a --export "r16=$TESTDIR/r16.qcow2,format=qcow2" \
  --export "r64=$TESTDIR/r64.qcow2,format=qcow2"
for i in r16 r64; do
  $PY - "$(uri a $i)" data.raw <<'PY'
import nbd, random, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
data = open(sys.argv[2], "rb").read()
# In order, 1 MiB requests.
for off in range(4 << 20, 20 << 20, 1 << 20):
    h.pwrite(data[off:off + (1 << 20)], off)
# Random 4K blocks, 32 in flight.
blocks = list(range((40 << 20) // 4096, (48 << 20) // 4096))
random.shuffle(blocks)
for b in blocks:
    while h.aio_in_flight() >= 32:
        h.poll(-1)
    h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data[b * 4096:(b + 1) * 4096])),
                 b * 4096)
while h.aio_in_flight() > 0:
    h.poll(-1)
h.flush()
h.shutdown()
PY
  rm -f out.raw
  nbdcopy --no-extents "$(uri a $i)" out.raw
  cmp out.raw data.raw || fail "$i: data written while the refcount table grew differs"
done
stop_mirrord a

for i in r16 r64; do
  check_clean $i.qcow2
  qemu-img compare -q -f qcow2 -F raw $i.qcow2 data.raw || fail "$i.qcow2 differs after the stop"
  n=$(qcow2util header $i.qcow2 | awk '$1 == "refcount_table_clusters" { print $2 }')
  echo "$i: refcount table now $n clusters"
  [ "$n" -gt 1 ] || fail "$i: the refcount table did not grow ($n cluster)"
done
exit 0
