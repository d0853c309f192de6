#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A guest whose NBD drive has reconnect-delay (QEMU's nbd blockdev
# option) rides through mirrord restarts: SIGTERM (drain, flush, exit 0)
# and kill -9, each followed by a new mirrord on the same socket.  The
# guest keeps writing and sees no I/O error; afterwards every write it
# acknowledged reads back.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/guest-functions.sh"
guest_requires
SIZE=$((64 << 20))
JOB="mirrord.seed=$$ mirrord.count=128"
# Requests wait this long for the server to come back before failing.
DELAY=20

truncate -s $SIZE "$TESTDIR/s.img"
start_mirrord s --export "vm1=$TESTDIR/s.img"
start_guest w1 "$TESTDIR/s.nbd" vm1 "mirrord.mode=writeloop $JOB" ",reconnect-delay=$DELAY"
poll 180 _guest_acked_at_least w1 20 || fail "the guest wrote nothing: $(tail -5 "$TESTDIR/w1.console")"

guest_errors () {
  guest_lines w1 IOERR
  tr -d '\r' < "$TESTDIR/w1.console" | grep -i 'I/O error\|blk_update_request\|critical' || :
}
# restart HOW: stop mirrord (stop_mirrord or kill9_mirrord), start it
# again, and wait until the guest has made 20 more durable writes.
restart () {
  local n t0 t1
  n=$(guest_acks w1)
  t0=$(date +%s%N)
  $1 s
  start_mirrord s --export "vm1=$TESTDIR/s.img"
  poll $((DELAY + 60)) _guest_acked_at_least w1 $((n + 20)) \
    || fail "the guest did not resume after $1: $(tail -5 "$TESTDIR/w1.console")"
  t1=$(date +%s%N)
  echo "$1: the guest wrote on; 20 writes durable $(( (t1 - t0) / 1000000 )) ms after the stop"
  [ -z "$(guest_errors)" ] || fail "the guest saw I/O errors after $1: $(guest_errors | head -5)"
}
restart stop_mirrord
restart kill9_mirrord
kill_guest w1
[ -z "$(guest_errors)" ] || fail "the guest saw I/O errors: $(guest_errors | head -5)"
echo "the guest acknowledged $(guest_acks w1) writes across two restarts, no I/O error"

start_guest v1 "$TESTDIR/s.nbd" vm1 "mirrord.mode=verify $JOB" ,read-only=on
wait_guest v1 180
check_acked w1 v1 || fail "acknowledged writes lost across the restarts"
exit 0
