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
# refuse at once, saying so, and leave the guest alone.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/guest-functions.sh"
guest_requires
export GUEST_RAM=128
SIZE=$((64 << 20))
JOB="mirrord.seed=$$ mirrord.count=128"

truncate -s $SIZE "$TESTDIR/s.img" "$TESTDIR/d.img"
start_mirrord m --export "vm1=$TESTDIR/s.img"
start_guest_qmp w1 "driver=nbd,node-name=d0,server.type=unix,server.path=$TESTDIR/m.nbd,export=vm1" \
  "mirrord.mode=writeloop $JOB"
poll 180 _guest_acked_at_least w1 10 || fail "the guest wrote nothing: $(tail -5 "$TESTDIR/w1.console")"

if ! "$MIRRORCTL" --help | grep -q 'migrate handover'; then
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

dest_guest_cmd w2 "driver=file,node-name=d0,filename=$TESTDIR/d.img" "mirrord.mode=writeloop $JOB"
migrate_guest w1 w2 "$TESTDIR/figures.json" --storage qemu --dst-nbd "$TESTDIR/d.nbd" \
  --max-bandwidth 1073741824 --timeout 240 || fail "the migration failed"
grep -v 'starting QEMU' "$TESTDIR/w1.migrate"
$PY - "$TESTDIR/figures.json" $SIZE <<'PY' || fail "figures: $(cat "$TESTDIR/figures.json")"
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
