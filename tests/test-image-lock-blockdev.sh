#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# One image, one writer, on a block device (a loop device): mirrord
# locks the device node as QEMU does, so qemu-io cannot write the
# device while mirrord serves it (readers with -U can) and a second
# mirrord is refused; within the daemon, the device is one file by
# any name — a symlink, or another device node of the same device
# (same device number).  Needs root and losetup (else skipped).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires test "$(id -u)" -eq 0
requires losetup --version
requires qemu-io --version

truncate -s 16M "$TESTDIR/backing.img"
dev=$(losetup -f --show "$TESTDIR/backing.img" 2>/dev/null) \
  || { echo "$0: test skipped: losetup cannot attach a loop device"; exit 77; }
cleanup_fn '[ -z "$dev" ] || losetup -d "$dev"'
[ -b "$dev" ] || fail "$dev is not a block device"

start_mirrord a --export "vm=$dev"
[ "$(image_locks "$dev")" = "100 101 201 203" ] \
  || fail "device locks: $(image_locks "$dev")"
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c flush "$(uri a vm)" >/dev/null

out=$(qemu-io -f raw -c 'write -P 0x77 0 4k' "$dev" 2>&1) \
  && fail "qemu-io wrote a served device: $out"
[[ $out == *'Failed to get "write" lock'* ]] || fail "qemu-io: $out"
qemu-io -f raw -r -U -c 'read -P 0x5a 0 1M' "$dev" | grep -q '^read 1048576' \
  || fail "qemu-io -r -U cannot read the served device"

# Other names of the device, in this daemon.
ln -s "$dev" "$TESTDIR/dev-link"
mknod "$TESTDIR/dev-node" b "$((0x$(stat -c %t "$dev")))" "$((0x$(stat -c %T "$dev")))"
for path in "$TESTDIR/dev-link" "$TESTDIR/dev-node"; do
  out=$(ctl a export add vm2 "$path" 2>&1) && fail "$path exported twice"
  [[ $out == *"$path is already exported as vm ($dev)"* ]] || fail "export add $path: $out"
done

# Another daemon.
out=$(timeout 20 "$MIRRORD" -f --export "vm=$TESTDIR/dev-link" --nbd-socket "$TESTDIR/b.nbd" \
        --control "$TESTDIR/b.ctl" --state-dir "$TESTDIR/b.state" 2>&1) \
  && status=0 || status=$?
[ "$status" -eq 1 ] || fail "second mirrord on $dev: exit $status: $out"
[[ $out == *"image locked by another process"* ]] || fail "second mirrord: $out"

qemu-io -f raw -c 'read -P 0x5a 0 1M' "$(uri a vm)" | grep -q '^read 1048576' \
  || fail "the export lost its data"
stop_mirrord a
qemu-io -f raw -c 'write -P 0x77 0 4k' "$dev" >/dev/null || fail "device still locked"
exit 0
