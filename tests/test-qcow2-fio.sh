#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fio through its nbd engine, random writes of mixed sizes at queue
# depth 32 with crc32c verification, into an empty qcow2 (allocation
# racing with allocation) and into an overlay over a raw backing file
# (partial clusters copied from the backing file).  After a clean stop
# qemu-img check is clean; after a restart fio verifies it all again.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
requires fio --version
fio --enghelp 2>&1 | grep -qw nbd || { echo "fio lacks the nbd engine"; exit 77; }
cd "$TESTDIR"

qemu-img create -q -f qcow2 empty.qcow2 128M
truncate -s 128M base.raw
qemu-io -f raw -c 'write -P 0x5b 0 128M' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw ovl.qcow2 128M

run_fio () {                          # run_fio EXPORT [FIO-ARGS...]
  local e=$1; shift
  fio --name="$e" --ioengine=nbd --uri="$(uri a "$e")" --rw=randwrite \
    --bssplit=4k/50:16k/20:64k/20:1m/10 --iodepth=32 --offset=8M --size=96M \
    --verify=crc32c --verify_fatal=1 "$@" > "fio-$e.out" 2>&1 \
    || { cat "fio-$e.out"; fail "fio on $e failed"; }
}

exports=(--export "empty=$TESTDIR/empty.qcow2,format=qcow2"
         --export "ovl=$TESTDIR/ovl.qcow2,format=qcow2")
start_mirrord a "${exports[@]}"
run_fio empty &
f1=$!
run_fio ovl
wait $f1
stop_mirrord a
check_clean empty.qcow2
check_clean ovl.qcow2

# What fio did not write is unchanged: zeroes, and the backing data.
start_mirrord a "${exports[@]}"
qio "$(uri a empty)" 'read -P 0 0 8M' 'read -P 0 104M 24M'
qio "$(uri a ovl)" 'read -P 0x5b 0 8M' 'read -P 0x5b 104M 24M'
# And everything it wrote is still there.
run_fio empty --verify_only
run_fio ovl --verify_only
stop_mirrord a
check_clean empty.qcow2
check_clean ovl.qcow2
exit 0
