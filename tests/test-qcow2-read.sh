#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Reading qcow2 images that qemu-img and qemu-io made: scattered data
# (aligned, unaligned, straddling clusters, at the last byte), zero
# clusters (kept allocated and -u), compressed clusters, cluster sizes
# 512 B to 2 MiB, a virtual size that ends inside a cluster, compat=0.10
# (version 2), and an L1 table bigger than one cluster.  Every byte read
# through mirrord (nbdcopy --no-extents: no block status shortcut)
# equals qemu-img's reading of the same image, and format=auto finds
# qcow2.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
requires nbdcopy --version

make_samples
images=("${samples[@]}")
declare -A sum vsize
for i in "${images[@]}"; do
  sum[$i]=$(sha256sum < "$TESTDIR/$i.qcow2")
  vsize[$i]=$(qemu-img info --output=json "$TESTDIR/$i.qcow2" \
              | $PY -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
done

# Two at start-up (qcow2 and auto), the rest through the control API,
# alternating readonly and writable opens.
start_mirrord a --export "c512=$TESTDIR/c512.qcow2,format=qcow2" \
  --export "c4k=$TESTDIR/c4k.qcow2,format=auto,readonly"
declare -A ro=([c4k]=1)
n=0
for i in "${images[@]:2}"; do
  opt=(); (( n++ % 2 )) && { opt=(--readonly); ro[$i]=1; }
  ctl a export add "$i" "$TESTDIR/$i.qcow2" --format qcow2 "${opt[@]}" >/dev/null \
    || fail "export add $i"
done
ctl a --json status c4k | grep -q '"format": "qcow2"' || fail "format=auto did not find qcow2"

for i in "${images[@]}"; do
  nbdinfo --size "$(uri a "$i")" | grep -qx "${vsize[$i]}" \
    || fail "$i: export size is not ${vsize[$i]}"
  if [ "$i" = bigl1 ]; then
    continue
  fi
  rm -f "$TESTDIR/out.raw"
  nbdcopy --no-extents "$(uri a "$i")" "$TESTDIR/out.raw" || fail "$i: nbdcopy failed"
  qemu-img convert -U -f qcow2 -O raw "$TESTDIR/$i.qcow2" "$TESTDIR/ref.raw"
  cmp "$TESTDIR/out.raw" "$TESTDIR/ref.raw" || fail "$i: export differs from the image"
done

# The 4 GiB image: patterns where written, zeroes around them (a whole
# compare would take minutes with 512-byte clusters).
qio "$(uri a bigl1)" 'read -P 0x31 0 4k' 'read -P 0 4k 60k' 'read -P 0x32 2G 64k' \
  'read -P 0 2047M 1M' 'read -P 0 2149646336 1M' \
  'read -P 0x33 4294966784 512' 'read -P 0 4294966272 512' \
  'read -P 0x34 3000000000 7000' 'read -P 0 2999999488 512' 'read -P 0 3000007000 600'

# Unaligned reads across cluster boundaries, through the guest's eyes.
qio "$(uri a c512)" 'read -P 0x18 33554431 513' 'read -P 0x14 5000001 100000' \
  'read -P 0x15 65535 2' 'read -P 0x13 1000 3000'
qio "$(uri a c2m)" 'read -P 0x19 73400320 512' 'read -P 0x1a 69M 1M' \
  'read -P 0x16 8M 3M' 'read -P 0 11M 1M'

stop_mirrord a
# Only reads happened: each image is still clean, and a read-only
# open did not change a byte.
for i in "${images[@]}"; do
  if [ -n "${ro[$i]:-}" ]; then
    [ "$(sha256sum < "$TESTDIR/$i.qcow2")" = "${sum[$i]}" ] || fail "$i changed by reads"
  fi
  check_clean "$TESTDIR/$i.qcow2"
done
exit 0
