#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC §2.2 with a real guest (tests/guest/): a guest keeps rewriting
# stamped blocks through mirrord while the disk is pre-synced to a
# qemu-nbd target and cut over; after the cut-over the source refuses
# the guest's writes (it sees EIO, as a VM left behind would), and a
# guest booted on the target finds every write the first one
# acknowledged; the two images are identical.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/guest-functions.sh"
requires qemu-nbd --version
guest_requires
SIZE=$((64 << 20))
JOB="mirrord.seed=$$ mirrord.count=256"

truncate -s $SIZE "$TESTDIR/s.img" "$TESTDIR/t.img"
start_mirrord s --export "vm1=$TESTDIR/s.img"
qemu-nbd -f raw -x vm1 -t -k "$TESTDIR/t.sock" "$TESTDIR/t.img" 2>"$TESTDIR/qemu-nbd.log" &
qpid=$!
cleanup_fn "kill $qpid 2>/dev/null; wait $qpid 2>/dev/null"
poll 30 nbdinfo "nbd+unix:///vm1?socket=$TESTDIR/t.sock" || fail "qemu-nbd did not start"

start_guest w1 "$TESTDIR/s.nbd" vm1 "mirrord.mode=writeloop $JOB"
poll 180 _guest_acked_at_least w1 20 || fail "the guest wrote nothing: $(tail -5 "$TESTDIR/w1.console")"
ctl s mirror start vm1 "nbd+unix:///vm1?socket=$TESTDIR/t.sock" --mode async >/dev/null
ctl s mirror wait vm1 --until ready --timeout 60 >/dev/null || fail "mirror not ready: $(ctl s status vm1)"
# The guest goes on writing while the mirror is ready.
n=$(guest_acks w1)
poll 120 _guest_acked_at_least w1 $((n + 30)) || fail "the guest stopped writing"
ctl s --json mirror cutover vm1 --timeout 30 > "$TESTDIR/cutover.json" \
  || fail "cut-over failed: $(cat "$TESTDIR/cutover.json")"
echo "cut-over with the guest writing: downtime $($PY -c 'import json,sys; print("%.2f ms" % json.load(sys.stdin)["downtime_ms"])' < "$TESTDIR/cutover.json")"
# The source refuses the guest's next write: the guest sees it fail.
ioerr () { [ -n "$(guest_lines w1 IOERR)" ]; }
poll 60 ioerr || fail "the guest's writes after the cut-over did not fail"
kill_guest w1

start_guest v1 "$TESTDIR/t.sock" vm1 "mirrord.mode=verify $JOB" ,read-only=on
wait_guest v1 180
check_acked w1 v1 || fail "acknowledged writes missing on the target"
cmp "$TESTDIR/s.img" "$TESTDIR/t.img" || fail "the target differs from the source"
exit 0
