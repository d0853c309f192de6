#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Writes through mirrord into qcow2 images: a random (seeded) workload
# of pattern writes (unaligned, straddling clusters, partial clusters),
# zero writes (-z, -z -u) and cluster-aligned trims followed by
# re-writes, on empty images of 512 B, 4K, 64K and 2M clusters, a v2
# image, and a compressed image (writes into compressed clusters
# reallocate them).  The same qemu-io commands applied by qemu to a
# copy give the same content, over NBD while running and in the files
# after a clean stop, and qemu-img check finds nothing to report.
# Then concurrent writes to neighbouring blocks of the same unallocated
# clusters (allocation races).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
cd "$TESTDIR"
seed=${QCOW2_TEST_SEED:-$RANDOM}
echo "seed $seed (QCOW2_TEST_SEED=$seed to repeat)"

size=$((48 << 20))
qemu-img create -q -f qcow2 -o cluster_size=512 c512.qcow2 $size
qemu-img create -q -f qcow2 -o cluster_size=4096 c4k.qcow2 $size
qemu-img create -q -f qcow2 c64k.qcow2 $size
qemu-img create -q -f qcow2 -o cluster_size=2M c2m.qcow2 $size
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 $size
# Compressed: every cluster of the first 32M compressed (patterns and
# text compress well).
truncate -s $size src.raw
qemu-io -f raw -c 'write -P 0x21 0 8M' -c 'write -P 0x22 8M 8M' src.raw >/dev/null
seq 1 2500000 > text
dd if=text of=src.raw bs=1M seek=16 count=16 conv=notrunc status=none
qemu-img convert -c -O qcow2 src.raw comp.qcow2
[ "$(qemu-img map --output=json comp.qcow2 | grep -c '"offset"')" -eq 0 ] \
  || fail "comp.qcow2 has clusters that are not compressed"
images=(c512 c4k c64k c2m v2 comp)

# The workload: CMD lines for qemu-io.
$PY - "$seed" $size > workload <<'PY'
import random, sys
rnd = random.Random(int(sys.argv[1]))
size = int(sys.argv[2])
C = 65536
out = []
def span(maxlen):
    length = rnd.choice([1, 512, 4096, 65536, rnd.randint(1, maxlen)])
    off = rnd.choice([rnd.randrange(0, size - length + 1),
                      rnd.randrange(0, size // 512 - 1) * 512,
                      rnd.randrange(1, size // C) * C - rnd.randint(1, 4096)])
    return off, min(length, size - off)
for n in range(240):
    k = rnd.random()
    if k < 0.6:
        off, length = span(300000)
        out.append("write -P 0x%02x %d %d" % (rnd.randint(1, 255), off, length))
    elif k < 0.8:
        off, length = span(300000)
        out.append("write -z%s %d %d" % (rnd.choice(["", " -u"]), off, length))
    else:
        # Trim whole 64K clusters (every cluster size here divides it,
        # so what it frees is well defined), then rewrite part of it.
        off = rnd.randrange(0, size // C - 8) * C
        length = rnd.randint(1, 8) * C
        out.append("discard %d %d" % (off, length))
        if rnd.random() < 0.5:
            o2 = off + rnd.randrange(0, length)
            out.append("write -P 0x%02x %d %d" % (rnd.randint(1, 255), o2,
                                                  min(rnd.randint(1, 2 * C), size - o2)))
# The last byte, and a write over it all at the end of a few clusters.
out.append("write -P 0xee %d 1" % (size - 1))
out.append("write -P 0xef %d %d" % (size - 3 * C - 7, 2 * C + 14))
print("\n".join(out))
PY
mapfile -t W < workload

for i in "${images[@]}"; do cp "$i.qcow2" "ref-$i.qcow2"; done
args=()
for i in "${images[@]}"; do args+=(--export "$i=$TESTDIR/$i.qcow2,format=qcow2"); done
start_mirrord a "${args[@]}"

# In chunks, comparing as we go (a failure then points at a chunk).
chunk=60
for ((s = 0; s < ${#W[@]}; s += chunk)); do
  for i in "${images[@]}"; do
    qio "$(uri a "$i")" "${W[@]:s:chunk}"
    qio "ref-$i.qcow2" "${W[@]:s:chunk}"
    qemu-img compare -q -U -f raw -F qcow2 "$(uri a "$i")" "ref-$i.qcow2" \
      || fail "$i: differs from qemu after workload commands $s..$((s + chunk - 1))" \
              "(seed $seed; see $TESTDIR/workload)"
  done
done

# Partial writes into compressed clusters: the rest of each cluster
# survives the reallocation.
qio "$(uri a comp)" 'write -P 0x61 100000 1' 'write -P 0x62 17M 512' \
  'write -P 0x63 20000000 70000'
qio ref-comp.qcow2 'write -P 0x61 100000 1' 'write -P 0x62 17M 512' \
  'write -P 0x63 20000000 70000'
qemu-img compare -q -U -f raw -F qcow2 "$(uri a comp)" ref-comp.qcow2 \
  || fail "comp: partial writes into compressed clusters"

# Concurrent writes: 8M of random 4K blocks in random order, 64 in
# flight, each cluster's blocks racing to allocate it; the same data
# goes into the references in one write.
base=$((32 << 20))
$PY - "$seed" $base chunk.bin "$(uri a c64k)" "$(uri a c2m)" "$(uri a c512)" <<'PY'
import nbd, random, sys
rnd = random.Random(int(sys.argv[1]))
base = int(sys.argv[2])
n = (8 << 20) // 4096
data = rnd.randbytes(n * 4096)
open(sys.argv[3], "wb").write(data)
for u in sys.argv[4:]:
    h = nbd.NBD()
    h.connect_uri(u)
    order = list(range(n))
    rnd.shuffle(order)
    for b in order:
        while h.aio_in_flight() >= 64:
            h.poll(-1)
        h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data[b * 4096:(b + 1) * 4096])),
                     base + b * 4096)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    got = h.pread(n * 4096, base)
    if got != data:
        bad = [b for b in range(n) if got[b * 4096:(b + 1) * 4096] != data[b * 4096:(b + 1) * 4096]]
        sys.exit("%s: %d of %d concurrent 4K writes lost, first at offset %d"
                 % (u, len(bad), n, base + bad[0] * 4096))
    h.shutdown()
PY
for i in c64k c2m c512; do
  qio "ref-$i.qcow2" "write -s $TESTDIR/chunk.bin $base 8M"
done
stop_mirrord a

for i in "${images[@]}"; do
  check_clean "$i.qcow2"
  qemu-img compare -q "$i.qcow2" "ref-$i.qcow2" \
    || fail "$i.qcow2 differs from the reference after the stop (seed $seed)"
done
exit 0
