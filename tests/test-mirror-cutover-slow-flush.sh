#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Cut-over against a target whose FLUSH we hold (nbdkit's eval plugin
# over a file; its flush waits while a flag file exists):
# - a guest write that arrives during the final flush is held and then
#   refused, never acknowledged on the source alone;
# - `--timeout` expires in the final flush: exit 4, the mirror goes on;
#   that flush, returning later, does not complete the next cut-over,
#   which still has data to drain.
# The target ends identical either way.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdkit eval --version
requires qemu-io --version

SIZE=$((16 << 20))
truncate -s 16M "$TESTDIR/src.img" "$TESTDIR/dst.img"
qemu-io -f raw -c 'write -P 0x11 0 4M' "$TESTDIR/src.img" >/dev/null
HOLD="$TESTDIR/hold-flush"
# One request at a time (the eval default): a held flush stalls the
# target entirely, as a slow disk's would.
nbdkit -f -U "$TESTDIR/dst.sock" eval \
  get_size="echo $SIZE" \
  pread="exec dd if='$TESTDIR/dst.img' bs=1M iflag=skip_bytes,count_bytes skip=\$4 count=\$3 status=none" \
  can_write='exit 0' \
  pwrite="exec dd of='$TESTDIR/dst.img' bs=1M oflag=seek_bytes conv=notrunc seek=\$4 status=none" \
  can_flush='exit 0' \
  flush="while [ -e '$HOLD' ]; do sleep 0.01; done" &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/dst.sock"
DST="nbd+unix:///?socket=$TESTDIR/dst.sock"
field () {   # field DAEMON EXPR
  ctl "$1" --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($2)"
}
clean () { [ "$(field "$1" 'e["dirty_bytes"]')" = 0 ]; }
cutting () { [ "$(field "$1" 'e["mirror"]["state"]')" = cutover ]; }
arrived () { [ "$(field "$1" 'e["bytes_written"]')" -gt "$2" ]; }
synced () {  # synced DAEMON: mirrored, nothing dirty
  ctl "$1" mirror start vm1 "$DST" --mode async >/dev/null
  ctl "$1" mirror wait vm1 --until ready --timeout 30 >/dev/null
  poll 20 clean "$1"
}
# held_write DAEMON OFFSET: a guest write sent during a cut-over (pid
# in $w), once the daemon has it.
held_write () {
  local before
  before=$(field "$1" 'e["bytes_written"]')
  qemu-io -f raw -c "write -P 0x77 $2 64k" "$(uri "$1" vm1)" >/dev/null 2>&1 & w=$!
  poll 10 arrived "$1" "$before"
}

# Nothing dirty: the cut-over goes straight to its final flush, held.
start_mirrord a --export "vm1=$TESTDIR/src.img"
synced a
touch "$HOLD"
ctl a mirror cutover vm1 >/dev/null & cut=$!
poll 10 cutting a
held_write a 8M
rm -f "$HOLD"
wait $cut || fail "cut-over failed"
wait $w && fail "a write during the final flush was acknowledged"
clean a || fail "cut over with $(field a 'e["dirty_bytes"]') bytes dirty"
qemu-img compare -f raw "$TESTDIR/src.img" "$DST" || fail "target differs"
stop_mirrord a

# The timeout expires in the final flush.
start_mirrord b --export "vm1=$TESTDIR/src.img"
synced b
touch "$HOLD"
expect_status 4 ctl b mirror cutover vm1 --timeout 0.5 2>"$TESTDIR/cut.err"
grep -q "flush had not returned" "$TESTDIR/cut.err" || fail "message: $(cat "$TESTDIR/cut.err")"
[ "$(field b 'e["mirror"]["state"]')" = ready ] || fail "not back to ready"
qemu-io -f raw -c 'write -P 0x66 12M 64k' "$(uri b vm1)" >/dev/null \
  || fail "the export refuses writes after a timed-out cut-over"
# The next cut-over starts while the old flush is still held; that
# flush must not finish it: 12M is still to copy.
ctl b mirror cutover vm1 >/dev/null & cut=$!
poll 10 cutting b
held_write b 14M
rm -f "$HOLD"
wait $cut || fail "cut-over after a timed-out one failed"
wait $w && fail "a write during the cut-over was acknowledged"
# Completed only after the target flushed all of it: nothing dirty.
clean b || fail "cut over with $(field b 'e["dirty_bytes"]') bytes dirty"
qemu-img compare -f raw "$TESTDIR/src.img" "$DST" || fail "target differs"
stop_mirrord b
exit 0
