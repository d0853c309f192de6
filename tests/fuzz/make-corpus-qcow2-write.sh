#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Regenerates the seed corpus of fuzz-qcow2-write in
# tests/fuzz/corpus-qcow2-write/: each seed is 64 bytes of requests
# (8 records of kind, 24-bit offset, 16-bit length, fill byte, flags:
# fuzz-qcow2-write.c) followed by a tiny image qemu-img made, clean or
# corrupted on purpose with tests/qcow2util.py (the cases of the
# test-qcow2-overlap*.sh and test-qcow2-shared-cluster.sh tests).
#   tests/fuzz/make-corpus-qcow2-write.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus-qcow2-write}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
export PYTHONPATH=$here/..
q () { qemu-io -f qcow2 "${@:2}" "$tmp/$1" >/dev/null; }
mk () { qemu-img create -q -f qcow2 "${@:3}" "$tmp/$1" "$2"; }

mk c512 256k -o cluster_size=512
q c512 -c 'write -P 0x11 0 4k' -c 'write -P 0x12 33k 1k' -c 'write -z 100k 2k'
mk c4k 256k -o cluster_size=4096
q c4k -c 'write -P 0x21 0 12k' -c 'write -P 0x22 64k 4k' -c 'write -P 0x23 200k 1000'
mk v2 256k -o cluster_size=4096,compat=0.10
q v2 -c 'write -P 0x41 4k 8k' -c 'write -P 0x42 128k 4k'
mk rc1 256k -o cluster_size=4096,refcount_bits=1
q rc1 -c 'write -P 0x51 0 8k' -c 'write -P 0x52 96k 4k'
mk rc64 256k -o cluster_size=4096,refcount_bits=64
q rc64 -c 'write -P 0x61 0 8k'
mk zero 256k -o cluster_size=4096
q zero -c 'write -P 0x71 0 64k' -c 'write -z 0 8k' -c 'write -z -u 32k 8k'
truncate -s 256k "$tmp/c.raw"
qemu-io -f raw -c 'write -P 0x81 0 32k' "$tmp/c.raw" >/dev/null
qemu-img convert -c -O qcow2 -o cluster_size=4096 "$tmp/c.raw" "$tmp/compressed"
q compressed -c 'write -P 0x82 64k 4k'
# Corrupt on purpose: guest 64k (4 KiB clusters) pointing at metadata,
# or at guest 0's cluster.
for c in zero-in-l1 zero-in-l2 compressed-in-l1 shared uncounted reftable-at-l2; do
  cp "$tmp/c4k" "$tmp/corrupt-$c"
  /usr/bin/python3 - "$tmp/corrupt-$c" "$c" <<'PY'
import sys, qcow2util as q
img, kind = q.Image(sys.argv[1]), sys.argv[2]
g = 64 << 10
x = 62 - (img.h["cluster_bits"] - 8)
e0, e1 = img.l2_entry(0), img.l2_entry(g)
if kind == "zero-in-l1":
    img.set_l2_entry(g, img.l1_offset | q.ZERO | q.COPIED)
elif kind == "zero-in-l2":
    img.set_l2_entry(g, img.l2_offset(0) | q.ZERO | q.COPIED)
elif kind == "compressed-in-l1":
    img.set_l2_entry(g, q.COMPRESSED | img.l1_offset)
elif kind == "shared":
    img.set_l2_entry(g, e0)
    img.set_refcount((e1 & q.OFFSET_MASK) // img.cs, 0)
elif kind == "uncounted":
    img.set_refcount((e1 & q.OFFSET_MASK) // img.cs, 0)
elif kind == "reftable-at-l2":
    img.set_reftable(0, img.l2_offset(0))
PY
done

# The requests: writes over data and holes, partial and unaligned,
# FUA, zeroes (plain, MAY_TRIM, FAST_ZERO), a trim, a flush.
/usr/bin/python3 - "$tmp/ops" <<'PY'
import struct, sys
ops = [(0, 0, 4096, 0xa1, 1), (2, 64 << 10, 512, 0xa2, 1),
       (1, 70000, 9000, 0xa3, 0), (3, 8 << 10, 8192, 0, 1),
       (5, 128 << 10, 8192, 0, 1), (6, 200 << 10, 4096, 0, 1),
       (4, 32 << 10, 4096, 0, 1), (7, 0, 0, 0, 0)]
with open(sys.argv[1], "wb") as f:
    for kind, off, length, fill, flags in ops:
        f.write(struct.pack(">B", kind) + off.to_bytes(3, "big")
                + struct.pack(">HBB", length - 1 if length else 0, fill, flags))
PY
for f in c512 c4k v2 rc1 rc64 zero compressed $(cd "$tmp" && echo corrupt-*); do
  cat "$tmp/ops" "$tmp/$f" > "$out/$f"
done
ls -l "$out"
