#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Reads and writes through real clients: qemu-io at aligned and
# unaligned offsets and lengths (down to one byte, up to the last byte
# of the disk), FUA writes, nbdcopy in and out, qemu-img compare and
# convert.  The same writes applied to a local reference file must give
# the same bytes, and nothing is written past the end of the image.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires qemu-img --version
requires nbdcopy --version

size=$((64 << 20))
truncate -s $size "$TESTDIR/disk.img"
truncate -s $size "$TESTDIR/ref.img"
start_mirrord a --export "vm1=$TESTDIR/disk.img"
u=$(uri a vm1)

# Writes of every shape; overlapping ones on purpose (the later wins).
writes=(
  'write -P 0x11 0 1M'
  'write -P 0x22 1000 3000'
  'write -P 0x33 512 512'
  'write -P 0x44 4095 1'
  'write -P 0x45 4096 1'
  'write -P 0x55 65535 2'
  'write -P 0x56 131071 65538'
  'write -f -P 0x66 2M 64k'
  'write -f -P 0x67 3001 7'
  'write -f -P 0x68 5000001 1234567'
  'write -P 0x77 63M 1M'
  'write -P 0x78 67108863 1'
  'write -P 0x79 67108000 863'
)
args=()
for w in "${writes[@]}"; do args+=(-c "$w"); done
qemu-io -f raw "${args[@]}" "$u" > "$TESTDIR/qemu-io.out" \
  || { cat "$TESTDIR/qemu-io.out"; fail "qemu-io writes failed"; }
qemu-io -f raw "${args[@]}" "$TESTDIR/ref.img" > /dev/null
[ "$(grep -c '^wrote' "$TESTDIR/qemu-io.out")" -eq ${#writes[@]} ] \
  || fail "not every write was acknowledged"

# Read back through NBD with pattern checks at the same odd places.
qemu-io -f raw -r \
  -c 'read -P 0x11 0 512' -c 'read -P 0x33 512 512' -c 'read -P 0x22 1024 1977' -c 'read -P 0x22 3008 992' \
  -c 'read -P 0x67 3001 7' -c 'read -P 0x44 4095 1' -c 'read -P 0x45 4096 1' \
  -c 'read -P 0x55 65535 2' -c 'read -P 0x56 131071 65538' \
  -c 'read -P 0x66 2M 64k' -c 'read -P 0x68 5000001 1234567' \
  -c 'read -P 0x79 67108000 863' -c 'read -P 0x78 67108863 1' \
  -c 'read -P 0x00 6234568 1' -c 'read -P 0x00 60M 1M' \
  "$u" > "$TESTDIR/read.out" || { cat "$TESTDIR/read.out"; fail "pattern check"; }

# Everything, byte for byte: over NBD and in the file itself.
qemu-img compare -f raw -F raw "$u" "$TESTDIR/ref.img" || fail "NBD differs from reference"
qemu-img compare -f raw -F raw "$TESTDIR/disk.img" "$TESTDIR/ref.img" \
  || fail "image file differs from reference"
[ "$(stat -c %s "$TESTDIR/disk.img")" -eq $size ] || fail "image size changed"

# qemu-img convert from NBD.
qemu-img convert -f raw -O raw "$u" "$TESTDIR/converted.img"
cmp "$TESTDIR/converted.img" "$TESTDIR/ref.img" || fail "convert from NBD differs"

# nbdcopy in (a random file) and out, then compare all three.
head -c $size /dev/urandom > "$TESTDIR/random.img"
nbdcopy "$TESTDIR/random.img" "$u"
nbdcopy "$u" "$TESTDIR/out.img"
cmp "$TESTDIR/random.img" "$TESTDIR/out.img" || fail "nbdcopy round trip differs"
cmp "$TESTDIR/random.img" "$TESTDIR/disk.img" || fail "image differs after nbdcopy"
qemu-img compare -f raw -F raw "$u" "$TESTDIR/random.img" || fail "compare after nbdcopy"

# Small unaligned writes over random data: the bytes around them stay.
qemu-io -f raw -c 'write -P 0xa5 1 1' -c 'write -f -P 0x5a 4097 4094' \
  -c 'write -P 0xc3 33554431 2' "$u" > /dev/null
qemu-io -f raw -c 'write -P 0xa5 1 1' -c 'write -f -P 0x5a 4097 4094' \
  -c 'write -P 0xc3 33554431 2' "$TESTDIR/random.img" > /dev/null
qemu-img compare -f raw -F raw "$u" "$TESTDIR/random.img" \
  || fail "unaligned writes damaged neighbouring bytes"

stop_mirrord a
cmp "$TESTDIR/random.img" "$TESTDIR/disk.img" || fail "image differs after shutdown"
exit 0
