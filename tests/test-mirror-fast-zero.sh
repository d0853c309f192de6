#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# How the source's holes reach targets of each kind.  Zeroes the target
# cannot be asked about (no useful block status) go with FAST_ZERO where
# the target offers it; a target that refuses FAST_ZERO (ENOTSUP: it
# would zero by writing) gets plain WRITE_ZEROES from then on; a target
# without WRITE_ZEROES gets zeroes written as data.  The targets start
# full of 0xff (or the buffers are reused), so every zero range must
# really be zeroed, and all end identical to the source.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdkit --version
requires nbdkit --filter=nozero --filter=noextents memory 1M --dump-plugin
requires qemu-io --version

truncate -s 64M "$TESTDIR/src.img"
qemu-io -f raw -c 'write -P 0x11 0 8M' -c 'write -P 0x22 40M 1M' \
  "$TESTDIR/src.img" >/dev/null
cp --sparse=always "$TESTDIR/src.img" "$TESTDIR/src2.img"
# 128M: the holes' copies come after 16 copies of data and reuse
# their buffers.
truncate -s 128M "$TESTDIR/src3.img"
qemu-io -f raw -c 'write -P 0x33 0 64M' "$TESTDIR/src3.img" >/dev/null
ZERO=$((64 * 1024 * 1024 - 9 * 1024 * 1024))      # the source's holes

target () {   # target NAME NBDKIT-ARGS...: a 64M memory disk full of 0xff
  local name=$1; shift
  nbdkit -f -U "$TESTDIR/$name.sock" "$@" &
  cleanup_fn "kill $! 2>/dev/null"
  poll 10 test -S "$TESTDIR/$name.sock"
  qemu-io -f raw -c 'write -P 0xff 0 64M' "nbd+unix:///?socket=$TESTDIR/$name.sock" >/dev/null
}
field () {   # field EXPORT KEY: a mirror status field
  ctl a --json status "$1" | $PY -c "import json,sys; print(json.load(sys.stdin)['exports'][0]['mirror']['$2'])"
}
mirror () {  # mirror EXPORT TARGET: sync, cut over, compare
  ctl a mirror start "$1" "nbd+unix:///?socket=$TESTDIR/$2.sock"
  ctl a mirror wait "$1" --until ready --timeout 30
  ctl a mirror cutover "$1" >/dev/null
  qemu-img compare -f raw "$TESTDIR/$3" "nbd+unix:///?socket=$TESTDIR/$2.sock" \
    || fail "$2: target differs from the source"
}

start_mirrord a --export "vm1=$TESTDIR/src.img" --export "vm2=$TESTDIR/src2.img" \
  --export "vm3=$TESTDIR/src3.img"

# Block status says nothing useful (all data) and zeroing is fast:
# every hole goes as FAST_ZERO, none is skipped.
target fast --filter=noextents memory 64M
mirror vm1 fast src.img
fz=$(field vm1 fast_zero_bytes)
[ "$fz" -eq "$ZERO" ] || fail "fast_zero_bytes $fz, expected $ZERO"
[ "$(field vm1 zeroes_skipped_bytes)" -eq 0 ] || fail "zeroes skipped on an all-data target"

# No block status at all (no structured replies), and FAST_ZERO offered
# but always refused: one refusal, logged, then plain zeroes.
target slow --no-sr --filter=nozero memory 64M zeromode=plugin fastzeromode=slow
mirror vm2 slow src2.img
[ "$(field vm2 fast_zero_bytes)" -eq 0 ] || fail "a refused FAST_ZERO was counted"
grep -q 'zeroes slowly (FAST_ZERO refused)' "$TESTDIR/a.log" || fail "fallback not logged"
[ "$(grep -c 'zeroes slowly' "$TESTDIR/a.log")" -eq 1 ] || fail "fallback logged more than once"

# No WRITE_ZEROES at all: the holes are read (zeroes) and written.
nbdkit -f -U "$TESTDIR/none.sock" --filter=nozero memory 128M zeromode=none &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/none.sock"
mirror vm3 none src3.img
[ "$(field vm3 fast_zero_bytes)" -eq 0 ] || fail "fast zeroes sent to a target without zero"
stop_mirrord a
exit 0
