#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Backing chains: a qcow2 overlay on a raw base, and a three-image chain
# (compressed qcow2 base <- qcow2 <- overlay) where the overlay is
# larger than its backing file.  Reads and block status through the
# chain match qemu; writes into backing-covered clusters (partial ones
# copy the rest of the cluster from the backing file, zero writes hide
# the backing data, trims never expose anything but zeroes or the
# backing data) give the same image as the same qemu-io commands
# applied by qemu; the backing files are never written.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
requires nbdcopy --version
cd "$TESTDIR"

# Raw base, data almost everywhere; the overlay names it relatively.
truncate -s 64M base.raw
qemu-io -f raw -c 'write -P 0xb1 0 24M' -c 'write -P 0xb2 24M 24M' \
  -c 'write -P 0xb3 60M 4M' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw ovl-raw.qcow2 64M
qio ovl-raw.qcow2 'write -P 0x01 0 64k' 'write -P 0x02 1M 4k' 'write -z 2M 64k' \
  'write -z -u 3M 128k' 'write -P 0x03 5000001 70000'

# Three images: compressed qcow2 base (32M), mid (48M), top (64M).
truncate -s 32M b.raw
qemu-io -f raw -c 'write -P 0xc1 0 16M' -c 'write -P 0xc2 20M 4M' b.raw >/dev/null
qemu-img convert -c -O qcow2 -o cluster_size=4096 b.raw base.qcow2
qemu-img create -q -f qcow2 -b "$TESTDIR/base.qcow2" -F qcow2 mid.qcow2 48M
qio mid.qcow2 'write -P 0xd1 4M 1M' 'write -z 6M 1M' 'write -P 0xd2 40M 1M'
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 64M
qio top.qcow2 'write -P 0xe1 4M 64k' 'write -P 0xe2 6M 4k' 'write -z 0 64k' \
  'write -P 0xe3 60M 1M'
qemu-img info --backing-chain top.qcow2 | grep -c '^image:' | grep -qx 3 \
  || fail "top.qcow2 is not a three-image chain"

declare -A sum
for f in base.raw base.qcow2 mid.qcow2; do sum[$f]=$(sha256sum < "$f"); done
# References for the writes: copies of the overlays, same backing files.
cp ovl-raw.qcow2 ref-raw.qcow2
cp top.qcow2 ref-top.qcow2

start_mirrord a --export "ovl=$TESTDIR/ovl-raw.qcow2,format=qcow2" \
  --export "top=$TESTDIR/top.qcow2,format=auto"
for e in ovl:ovl-raw top:top; do
  name=${e%%:*} img=$TESTDIR/${e#*:}.qcow2
  rm -f out.raw
  nbdcopy --no-extents "$(uri a "$name")" out.raw || fail "$name: nbdcopy"
  qemu-img convert -U -f qcow2 -O raw "$img" ref.raw
  cmp out.raw ref.raw || fail "$name: export differs from qemu's reading of the chain"
  map_agrees "$(uri a "$name")" "$img"
done
# Beyond the end of the 32M and 48M backing files, zeroes.
qio "$(uri a top)" 'read -P 0 48M 12M' 'read -P 0 33M 1M' 'read -P 0xc2 20M 4M' \
  'read -P 0xd2 40M 1M'

# Writes into clusters the backing files cover: partial (the rest of
# the cluster must come from the backing file), straddling, zeroes
# over backing data, overwrites of overlay clusters.
writes=(
  'write -P 0x51 10M 512' 'write -P 0x52 12345678 1' 'write -P 0x53 16777000 1000'
  'write -P 0x54 4128768 8192' 'write -z 20M 64k' 'write -z -u 22M 64k'
  'write -z 23M 1000' 'write -P 0x55 1M 64k' 'write -P 0x56 2M 512'
  'write -P 0x57 47M 2M' 'write -P 0x58 31M 2M'
)
qio "$(uri a ovl)" "${writes[@]}"
qio "$(uri a top)" "${writes[@]}"
qio ref-raw.qcow2 "${writes[@]}"
qio ref-top.qcow2 "${writes[@]}"
qemu-img compare -q -U -f raw -F qcow2 "$(uri a ovl)" ref-raw.qcow2 || fail "ovl after writes"
qemu-img compare -q -U -f raw -F qcow2 "$(uri a top)" ref-top.qcow2 || fail "top after writes"

# A trim of backing-covered clusters: the range then reads as zeroes or
# as the backing file's data, cluster by cluster, never anything else.
qio "$(uri a ovl)" 'discard 40M 1M'
qio "$(uri a top)" 'discard 8M 1M' 'discard 40M 256k'
$PY - "$(uri a ovl)" "$TESTDIR/base.raw" "$(uri a top)" "$TESTDIR/b.raw" <<'PY'
import nbd, sys
def check(u, base, ranges):
    h = nbd.NBD(); h.connect_uri(u)
    for off, length in ranges:
        with open(base, "rb") as f:
            f.seek(off)
            b = f.read(length)
        got = h.pread(length, off)
        for c in range(0, length, 4096):
            piece = got[c:c + 4096]
            if piece != bytes(len(piece)) and piece != b[c:c + 4096]:
                sys.exit("%s: after trim, [%d, +4096) is neither zero nor the "
                         "backing data" % (u, off + c))
    h.shutdown()
check(sys.argv[1], sys.argv[2], [(40 << 20, 1 << 20)])
check(sys.argv[3], sys.argv[4], [(8 << 20, 1 << 20)])
PY
# Then rewritten: the same as qemu again.
qio "$(uri a ovl)" 'write -P 0x59 40M 1M'
qio "$(uri a top)" 'write -P 0x59 8M 1M' 'write -P 0x5a 40M 256k'
qio ref-raw.qcow2 'write -P 0x59 40M 1M'
qio ref-top.qcow2 'write -P 0x59 8M 1M' 'write -P 0x5a 40M 256k'
for e in ovl:ovl-raw top:top; do
  map_agrees "$(uri a "${e%%:*}")" "$TESTDIR/${e#*:}.qcow2"
done

stop_mirrord a
qemu-img compare -q ovl-raw.qcow2 ref-raw.qcow2 || fail "ovl-raw.qcow2 differs from the reference"
qemu-img compare -q top.qcow2 ref-top.qcow2 || fail "top.qcow2 differs from the reference"
check_clean ovl-raw.qcow2
check_clean top.qcow2
for f in base.raw base.qcow2 mid.qcow2; do
  [ "$(sha256sum < "$f")" = "${sum[$f]}" ] || fail "backing file $f was written"
done
# The overlays still name their backing files as before.
qemu-img info top.qcow2 | grep -qx 'backing file: mid.qcow2' || fail "top's backing name changed"
exit 0
