#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Regenerates the seed corpus of fuzz-qcow2 in tests/fuzz/corpus/:
# small images qemu-img makes, each a few KiB to a few hundred KiB.
#   tests/fuzz/make-corpus.sh [DIR]
set -euo pipefail
out=${1:-$(cd "$(dirname "$0")" && pwd)/corpus}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
q () { qemu-io -f qcow2 "${@:2}" "$tmp/$1" >/dev/null; }
mk () { qemu-img create -q -f qcow2 "${@:3}" "$tmp/$1" "$2"; }

# Plain, 4K clusters, scattered data.
mk plain.qcow2 2M -o cluster_size=4096
q plain.qcow2 -c 'write -P 0x11 0 8k' -c 'write -P 0x22 1000 3000' -c 'write -P 0x33 1M 4k'
# Zero clusters, allocated and not.
mk zero.qcow2 2M -o cluster_size=4096
q zero.qcow2 -c 'write -P 0x44 0 64k' -c 'write -z 0 8k' -c 'write -z -u 32k 8k' \
  -c 'write -z 512k 4k'
# 512-byte clusters.
mk c512.qcow2 1M -o cluster_size=512
q c512.qcow2 -c 'write -P 0x55 0 4k' -c 'write -P 0x66 100000 1000' -c 'write -z 64k 2k'
# Version 2.
mk v2.qcow2 1M -o cluster_size=4096,compat=0.10
q v2.qcow2 -c 'write -P 0x77 4096 8k'
# Compressed clusters.
truncate -s 1M "$tmp/c.raw"
qemu-io -f raw -c 'write -P 0x88 0 64k' -c 'write -P 0x99 256k 32k' "$tmp/c.raw" >/dev/null
qemu-img convert -c -O qcow2 -o cluster_size=4096 "$tmp/c.raw" "$tmp/compressed.qcow2"
# A raw backing file and a partial overlay.  The overlay then names its
# backing file "200": fuzz-qcow2 opens inputs as /proc/self/fd/N and
# keeps its own backing memfd at descriptor 200.
truncate -s 1M "$tmp/backing.raw"
qemu-img create -q -f qcow2 -o cluster_size=4096 -b "$tmp/backing.raw" \
  -F raw "$tmp/backing.qcow2" 1M
q backing.qcow2 -c 'write -P 0xaa 6000 100' -c 'write -z 64k 4k'
qemu-img rebase -u -f qcow2 -F raw -b 200 "$tmp/backing.qcow2"
# The default 64K clusters, almost empty.
mk c64k.qcow2 1M
q c64k.qcow2 -c 'write -P 0xbb 0 512'

for f in "$tmp"/*.qcow2; do cp "$f" "$out/$(basename "$f" .qcow2)"; done
ls -l "$out"
