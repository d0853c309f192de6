#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Concurrent requests racing on the same clusters: rounds of 32
# non-overlapping requests in flight at once, grouped so that four of
# them land in each 64K region (one cluster, part of a 2M cluster, or
# several 512-byte clusters sharing an L2 table): 4K writes, some with
# FUA, 4K zero writes, and whole-64K writes and zero writes.  On empty
# images, an overlay over a raw backing file (copy-on-write from the
# backing file), a compressed image (partial writes reallocate) and a
# v2 image.  Every block holds what the last request to it wrote, while
# running and in the files after a clean stop; qemu-img check is clean.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
cd "$TESTDIR"
seed=${QCOW2_TEST_SEED:-$RANDOM}
echo "seed $seed (QCOW2_TEST_SEED=$seed to repeat)"

size=64M
qemu-img create -q -f qcow2 c64k.qcow2 $size
qemu-img create -q -f qcow2 -o cluster_size=512 c512.qcow2 $size
qemu-img create -q -f qcow2 -o cluster_size=2M c2m.qcow2 $size
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 $size
truncate -s $size base.raw
qemu-io -f raw -c 'write -P 0xba 0 48M' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw ovl.qcow2 $size
qemu-img convert -c -O qcow2 base.raw comp.qcow2
images=(c64k c512 c2m v2 ovl comp)
args=()
for i in "${images[@]}"; do
  qemu-img convert -f qcow2 -O raw "$i.qcow2" "$i.expect.raw"
  args+=(--export "$i=$TESTDIR/$i.qcow2,format=qcow2")
done
start_mirrord a "${args[@]}"

pairs=()
for i in "${images[@]}"; do pairs+=("$(uri a "$i")" "$i.expect.raw"); done
$PY - "$seed" "${pairs[@]}" <<'PY'
import nbd, random, sys
seed = int(sys.argv[1])
BS, REGION = 4096, 65536
status = 0
for k in range(2, len(sys.argv), 2):
    uri, expect_path = sys.argv[k], sys.argv[k + 1]
    rnd = random.Random(seed * 100 + k)
    expect = bytearray(open(expect_path, "rb").read())
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    assert size == len(expect)
    counts = {}
    tag = 0
    for rnd_no in range(120):
        reqs = []
        for region in rnd.sample(range(size // REGION), 8):
            base = region * REGION
            kind = rnd.random()
            if kind < 0.1:
                reqs.append(("zero", base, REGION, 0))
            elif kind < 0.2:
                reqs.append(("write", base, REGION, 0))
            else:
                for blk in rnd.sample(range(REGION // BS), 4):
                    off = base + blk * BS
                    r = rnd.random()
                    if r < 0.15:
                        reqs.append(("zero", off, BS, 0))
                    elif r < 0.3:
                        reqs.append(("write", off, BS, nbd.CMD_FLAG_FUA))
                    else:
                        reqs.append(("write", off, BS, 0))
        rnd.shuffle(reqs)
        for op, off, length, flags in reqs:
            counts[(op, flags)] = counts.get((op, flags), 0) + 1
            if op == "zero":
                h.aio_zero(length, off, flags=flags)
                expect[off:off + length] = bytes(length)
            else:
                tag += 1
                data = (tag.to_bytes(4, "little") + bytes([k, rnd_no & 0xff, 0x5a, 0xa5])) \
                    * (length // 8)
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off, flags=flags)
                expect[off:off + length] = data
        while h.aio_in_flight() > 0:
            h.poll(-1)
        if rnd_no % 10 == 9:
            h.flush()
    h.flush()
    bad = []
    for off in range(0, size, 1 << 20):
        got = h.pread(1 << 20, off)
        if got != expect[off:off + (1 << 20)]:
            bad += [o for o in range(off, off + (1 << 20), BS)
                    if got[o - off:o - off + BS] != expect[o:o + BS]]
    h.shutdown()
    open(expect_path, "wb").write(expect)
    if bad:
        print("%s: %d 4K blocks differ from the last request to them, first at "
              "offsets %s" % (uri, len(bad), bad[:5]), file=sys.stderr)
        status = 1
print("requests:", sorted(counts.items()))
sys.exit(status)
PY
stop_mirrord a
for i in "${images[@]}"; do
  check_clean "$i.qcow2"
  qemu-img compare -q -f qcow2 -F raw "$i.qcow2" "$i.expect.raw" \
    || fail "$i.qcow2 differs from the expected content after the stop (seed $seed)"
done
exit 0
