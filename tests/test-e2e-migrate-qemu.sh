#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Issue 17's baseline, live: the test guest keeps rewriting stamped
# blocks while ctl/mirrord-migrate --storage qemu moves it, running,
# from one qemu-system-x86_64 (its disk a mirrord export) to another
# (started with -incoming defer -S, its disk a local file), with QEMU's
# own flow: blockdev-mirror to the destination's NBD server, the mirror
# cancelled at pre-switchover, migrate-continue, cont.  The guest never
# boots again (one READY, its write counter goes on on the
# destination), every acknowledged write is on the destination's disk,
# and the figures are there.  Before that, the mirrord flow is asked
# for while this build's mirrorctl has no migrate commands: it must
# refuse at once, saying so, and leave the guest alone; and a migration
# whose destination QEMU dies in the RAM phase, or whose orchestrator
# gets SIGTERM then, is cancelled, the guest going on on the source
# with no mirror job or target node left.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/guest-functions.sh"
guest_requires
JOB="mirrord.seed=$$ mirrord.count=128"
start_migration_source w1 "$JOB"

if ! "$MIRRORCTL" --help | grep 'migrate handover' >/dev/null; then
  st=0
  MIRRORCTL=$MIRRORCTL "$top_srcdir/ctl/mirrord-migrate" --src-qmp "$TESTDIR/w1.qmp" \
    --dst-qmp "$TESTDIR/none.qmp" --uri "unix:$TESTDIR/none.mig" --export vm1 \
    --src-control "$TESTDIR/m.ctl" --dst-control "$TESTDIR/none.ctl" \
    > "$TESTDIR/refused.out" 2>&1 || st=$?
  [ $st = 1 ] || fail "mirrord-migrate without the daemon's migrate commands: exit $st"
  grep -q "has no 'migrate" "$TESTDIR/refused.out" \
    || fail "no clear message: $(cat "$TESTDIR/refused.out")"
  grep -q -- "--storage qemu" "$TESTDIR/refused.out" || fail "no hint at --storage qemu"
  echo "refused as it should: $(tail -1 "$TESTDIR/refused.out")"
fi

# A migration that fails in its RAM phase (the destination QEMU killed):
# cancelled, the guest goes on on the source, nothing of the mirror left.
dest_guest_cmd x1 "driver=file,node-name=d0,filename=$TESTDIR/x.img" "mirrord.mode=writeloop $JOB"
truncate -s 64M "$TESTDIR/x.img"
migrate_guest w1 x1 "$TESTDIR/x1.json" --storage qemu --dst-nbd "$TESTDIR/x.nbd" \
  --max-bandwidth 2097152 --timeout 240 2>/dev/null &
mpid=$!
in_ram_phase () { grep -q 'migration active' "$TESTDIR/w1.migrate"; }
poll 120 in_ram_phase || fail "the RAM phase did not start: $(cat "$TESTDIR/w1.migrate")"
adopt_guest x1
kill_guest x1
st=0; wait $mpid || st=$?
[ $st = 1 ] || fail "a migration whose destination died: exit $st"
grep -q 'migrate_cancel; the source guest is running' "$TESTDIR/w1.migrate" || fail "not cancelled: $(cat "$TESTDIR/w1.migrate")"
grep 'FAILED' "$TESTDIR/w1.migrate"
[ "$(guest_qmp w1 query-status | $PY -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = running ] \
  || fail "the source guest is not running after the cancel"
[ "$(guest_qmp w1 query-block-jobs)" = "[]" ] || fail "a block job is left: $(guest_qmp w1 query-block-jobs)"
guest_qmp w1 query-named-block-nodes | grep -q mig-target && fail "the mirror's target node is left"
n=$(guest_acks w1)
poll 120 _guest_acked_at_least w1 $((n + 5)) || fail "the guest stopped writing after the cancel"
echo "cancelled: the guest goes on writing on the source"

# The orchestrator is told to stop (SIGTERM) in the RAM phase: the same.
truncate -s 64M "$TESTDIR/y.img"
dest_guest_cmd y1 "driver=file,node-name=d0,filename=$TESTDIR/y.img" "mirrord.mode=writeloop $JOB"
"$top_srcdir/ctl/mirrord-migrate" --src-qmp "$TESTDIR/w1.qmp" --dst-qmp "$TESTDIR/y1.qmp" \
  --uri "unix:$TESTDIR/y.mig" --dst-exec "$DEST_CMD" --storage qemu --dst-nbd "$TESTDIR/y.nbd" \
  --max-bandwidth 2097152 --timeout 240 2> "$TESTDIR/w1.migrate" &
mpid=$!
poll 120 in_ram_phase || fail "the RAM phase did not start: $(cat "$TESTDIR/w1.migrate")"
kill -TERM $mpid
st=0; wait $mpid || st=$?
[ $st = 1 ] || fail "mirrord-migrate stopped by SIGTERM: exit $st"
grep 'FAILED' "$TESTDIR/w1.migrate"
grep -q 'migrate_cancel; the source guest is running' "$TESTDIR/w1.migrate" \
  || fail "not cancelled: $(cat "$TESTDIR/w1.migrate")"
grep -q 'destination: quit' "$TESTDIR/w1.migrate" || fail "the destination QEMU was not quit"
adopt_guest y1
poll 30 _guest_gone y1 || fail "the destination QEMU is still there"
[ "$(guest_qmp w1 query-block-jobs)" = "[]" ] || fail "a block job is left: $(guest_qmp w1 query-block-jobs)"
n=$(guest_acks w1)
poll 120 _guest_acked_at_least w1 $((n + 5)) || fail "the guest stopped writing after the cancel"
echo "stopped by SIGTERM: cancelled, the guest goes on writing on the source"

truncate -s 64M "$TESTDIR/d.img"
dest_guest_cmd w2 "driver=file,node-name=d0,filename=$TESTDIR/d.img" "mirrord.mode=writeloop $JOB"
# The destination's NBD server on loopback TCP this time.
migrate_guest w1 w2 "$TESTDIR/figures.json" --storage qemu --dst-nbd "127.0.0.1:$(free_port)" \
  --max-bandwidth 1073741824 --timeout 240 || fail "the migration failed"
grep -v 'starting QEMU' "$TESTDIR/w1.migrate"
$PY - "$TESTDIR/figures.json" $((64 << 20)) <<'PY' || fail "figures: $(cat "$TESTDIR/figures.json")"
import json, sys
f = json.load(open(sys.argv[1]))
print(f)
assert f["status"] == "completed" and f["storage"] == "qemu"
assert f["ram_bytes"] > 0 and f["total_s"] > 0 and f["qemu_total_ms"] > 0
assert isinstance(f["downtime_ms"], int) and f["downtime_ms"] >= 0
# sync=full copies every byte of the disk at least once (zeroes count).
assert f["disk_bytes"] >= int(sys.argv[2]), f["disk_bytes"]
assert f["storage_switch_ms"] >= 0 and f["handover_ms"] is None
PY
verify_migrated w1 w2 "driver=file,node-name=d0,filename=$TESTDIR/d.img,read-only=on" "$JOB" \
  || fail "the guest did not survive the migration intact"
exit 0
