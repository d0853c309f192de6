#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrord-migrate's mirrord flow, driven against a stand-in mirrorctl
# (the daemons' own are tested in test-e2e-migrate-mirrord.sh) and two
# real QEMUs with the test guest writing: the daemon steps come where
# they must — "migrate incoming" on the destination, then "migrate
# start" on the source, before the destination QEMU starts, "migrate
# handover" while the source is paused at pre-switchover — and the
# daemon's figures are reported.  A hand-over that fails cancels the
# migration: the guest goes on on the source, and both windows are
# aborted.  --phase prepare runs only the daemons' first two steps.
# The disks are not really handed over here (the stand-in
# does nothing), so only the guest's run is checked, not its data.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/guest-functions.sh"
guest_requires
JOB="mirrord.seed=$$ mirrord.count=64"

# The stand-in: logs its arguments, knows the migrate commands.
cat > "$TESTDIR/mirrorctl" <<'STUB'
#!/bin/sh
echo "$*" >> "$STUB_LOG"
case "$*" in
  --help) printf '  migrate start EXPORT\n  migrate incoming EXPORT\n  migrate handover EXPORT\n  migrate abort EXPORT\n' ;;
  *"migrate handover"*)
    if [ -e "$STUB_FAIL" ]; then echo "mirrorctl: hand-over refused (stand-in)" >&2; exit 1; fi
    echo '{"handover_ms": 1.5, "bytes": 4096}' ;;
  *status*) echo '{"exports": [{"name": "vm1", "mirror": null}]}' ;;
esac
STUB
chmod +x "$TESTDIR/mirrorctl"
export STUB_LOG=$TESTDIR/stub.log STUB_FAIL=$TESTDIR/fail
DAEMONS=(--storage mirrord --export vm1 --src-control "$TESTDIR/src.ctl"
         --dst-control "$TESTDIR/dst.ctl" --mirrorctl "$TESTDIR/mirrorctl" --timeout 240)

# --phase prepare: only the two steps before the destination QEMU starts
# (no QEMU is asked anything: these monitors do not exist).
"$top_srcdir/ctl/mirrord-migrate" --src-qmp "$TESTDIR/none.qmp" --dst-qmp "$TESTDIR/none2.qmp" \
  --uri "unix:$TESTDIR/none.mig" "${DAEMONS[@]}" --phase prepare 2>/dev/null \
  || fail "--phase prepare failed"
[ "$(grep -c migrate "$STUB_LOG")" = 2 ] && grep -q 'src.ctl migrate start vm1' "$STUB_LOG" \
  && grep -q 'dst.ctl migrate incoming vm1' "$STUB_LOG" || fail "--phase prepare: $(cat "$STUB_LOG")"
: > "$STUB_LOG"

start_migration_source w1 "$JOB"
truncate -s 64M "$TESTDIR/x.img" "$TESTDIR/d.img"

# The hand-over fails: cancelled, both windows aborted, destination first.
touch "$STUB_FAIL"
dest_guest_cmd x1 "driver=file,node-name=d0,filename=$TESTDIR/x.img" "mirrord.mode=writeloop $JOB"
st=0
migrate_guest w1 x1 "$TESTDIR/x1.json" "${DAEMONS[@]}" 2>/dev/null || st=$?
[ $st = 1 ] || fail "a failed hand-over: exit $st"
cat "$STUB_LOG"
grep -q 'migrate_cancel; the source guest is running' "$TESTDIR/w1.migrate" || fail "not cancelled: $(cat "$TESTDIR/w1.migrate")"
[ "$(grep -c 'migrate abort vm1' "$STUB_LOG")" = 2 ] || fail "both windows not aborted"
[ "$(grep 'migrate abort' "$STUB_LOG" | head -1)" = "-s $TESTDIR/dst.ctl migrate abort vm1" ] \
  || fail "the destination's window must be aborted first"
[ "$(guest_qmp w1 query-status | $PY -c 'import json,sys; print(json.load(sys.stdin)["status"])')" = running ] \
  || fail "the source guest is not running after the cancel"
n=$(guest_acks w1)
poll 120 _guest_acked_at_least w1 $((n + 5)) || fail "the guest stopped writing after the cancel"
adopt_guest x1
poll 30 _guest_gone x1 || fail "the destination QEMU of the failed migration is still there"

# The hand-over succeeds.
rm "$STUB_FAIL"; : > "$STUB_LOG"
dest_guest_cmd w2 "driver=file,node-name=d0,filename=$TESTDIR/d.img" "mirrord.mode=writeloop $JOB"
# Over TCP on loopback this time (the later --uri wins).
migrate_guest w1 w2 "$TESTDIR/figures.json" "${DAEMONS[@]}" --uri "tcp:127.0.0.1:$(free_port)" \
  || fail "the migration failed"
grep -v 'starting QEMU' "$TESTDIR/w1.migrate"
# The order of the steps, from the progress log.
steps=$(sed -n 's/^\[ *[0-9.]*\] //p' "$TESTDIR/w1.migrate" | awk '
  /source: mirrorctl .*migrate start vm1/      { print "start" }
  /destination: mirrorctl .*migrate incoming/  { print "incoming" }
  /destination: starting QEMU/                 { print "qemu" }
  /source: migrate tcp:127.0.0.1:/             { print "migrate" }
  /^pre-switchover:/                           { print "pre-switchover" }
  /source: mirrorctl .*migrate handover vm1/   { print "handover" }
  /migrate-continue$/                          { print "continue" }
  /-> cont:/                                   { print "cont" }' | tr '\n' ' ')
echo "steps: $steps"
[ "$steps" = "incoming start qemu migrate pre-switchover handover continue cont " ] \
  || fail "the steps came in the wrong order: $steps"
$PY - "$TESTDIR/figures.json" <<'PY' || fail "figures: $(cat "$TESTDIR/figures.json")"
import json, sys
f = json.load(open(sys.argv[1]))
print(f)
assert f["storage"] == "mirrord" and f["status"] == "completed"
assert f["handover_ms"] == 1.5 and f["disk_bytes"] == 4096
assert f["downtime_ms"] >= 0 and f["ram_bytes"] > 0
PY
grep -q 'migrate abort' "$STUB_LOG" && fail "a successful migration aborted a window"
poll 60 _guest_gone w1 || fail "the source QEMU did not quit"
n=$(guest_acks w2)
poll 120 _guest_acked_at_least w2 $((n + 5)) || fail "the guest does not run on the destination"
before=$(guest_acks w1)
migrated_console w1 w2 | grep -E '^E2E (READY|ACK|IOERR)\b' \
  | awk -v boundary="$before" -f "$top_srcdir/tests/guest/check-running.awk" \
  || fail "the guest did not run on unbroken"
exit 0
