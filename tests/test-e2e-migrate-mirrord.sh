#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Issue 17, live: the test guest keeps rewriting stamped blocks while
# ctl/mirrord-migrate --storage mirrord moves it, running, between two
# qemu-system-x86_64 processes whose disks are the exports of an HA pair
# of mirrord daemons (sync mode): A->B, B->A, A->B.  At each hand-over
# the roles move (the destination is primary, the source its in-sync
# secondary); the guest never boots again (one READY, its write counter
# goes on across all four QEMUs), no step copies the whole disk after
# the first sync, and a verify boot on the last destination finds every
# write the guest saw acknowledged.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/guest-functions.sh"
guest_requires
JOB="mirrord.seed=$$ mirrord.count=128"
truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
start_pair_member a primary
start_pair_member b secondary
poll 60 pair_in_sync a || fail "the pair never synced"

disk () { echo "driver=nbd,node-name=d0,server.type=unix,server.path=$TESTDIR/$1.nbd,export=vm1"; }
start_guest_qmp g1 "$(disk a)" "mirrord.mode=writeloop $JOB"
poll 180 _guest_acked_at_least g1 10 || fail "the guest wrote nothing: $(tail -5 "$TESTDIR/g1.console")"

hop () {   # hop SRC-GUEST DST-GUEST SRC-DAEMON DST-DAEMON
  local n
  dest_guest_cmd "$2" "$(disk "$4")" "mirrord.mode=writeloop $JOB"
  MIRRORCTL=$MIRRORCTL migrate_guest "$1" "$2" "$TESTDIR/$2.json" --storage mirrord \
    --export vm1 --src-control "$TESTDIR/$3.ctl" --dst-control "$TESTDIR/$4.ctl" \
    --timeout 240 || fail "the migration $3 -> $4 failed"
  grep -v 'starting QEMU' "$TESTDIR/$1.migrate"
  $PY - "$TESTDIR/$2.json" <<'PY' || fail "figures: $(cat "$TESTDIR/$2.json")"
import json, sys
f = json.load(open(sys.argv[1]))
print({k: f[k] for k in ("total_s", "downtime_ms", "handover_ms", "ram_bytes", "disk_bytes")})
assert f["status"] == "completed" and f["storage"] == "mirrord"
assert f["ram_bytes"] > 0 and isinstance(f["downtime_ms"], int)
assert isinstance(f["handover_ms"], (int, float)) and f["handover_ms"] > 0
PY
  [ "$(hfield "$4" 'e["role"]')" = primary ] || fail "$4 is not primary after the hand-over"
  [ "$(hfield "$3" 'e["role"]')" = secondary ] || fail "$3 is not secondary after the hand-over"
  poll 60 _guest_gone "$1" || fail "the source QEMU did not quit"
  wait "${_guest_pid[$1]}" 2>/dev/null || :
  _guest_pid[$1]=
  n=$(guest_acks "$2")
  poll 300 _guest_acked_at_least "$2" $((n + 10)) \
    || fail "the guest did not go on writing on $4: $(tail -3 "$TESTDIR/$2.console")"
  poll 60 pair_in_sync "$4" || fail "$4 and $3 not in sync after the hand-over"
}
hop g1 g2 a b
hop g2 g3 b a
hop g3 g4 a b
full=$(cat "$TESTDIR/a.log" "$TESTDIR/b.log" | grep -c "full sync" || :)
[ "$full" -le 1 ] || fail "a hop copied the whole disk ($full full syncs)"

# One boot, one counter across the four QEMUs, every acknowledged write
# on b's disk (read by a verify boot through b's export).
kill_guest g4
_guest_argv g5 "mirrord.mode=verify $JOB" "$(disk b),read-only=on"
_start_guest_argv g5 "${_argv[@]}"
wait_guest g5 300
chain () {   # the four consoles as one (a line cut at a switch is whole
  cat "$TESTDIR"/g{1,2,3,4}.console > "$TESTDIR/chain.console"   # again)
  if [ -n "$(tail -c 1 "$TESTDIR/chain.console")" ]; then sed '$d' "$TESTDIR/chain.console"
  else cat "$TESTDIR/chain.console"; fi | tr -d '\r'
}
before=$(( $(guest_lines g1 ACK | wc -l) + $(guest_lines g1 IOERR | wc -l) ))
chain | grep -E '^E2E (READY|ACK|IOERR)\b' \
  | awk -v boundary="$before" -f "$top_srcdir/tests/guest/check-running.awk" \
  || fail "the guest did not run on, unbroken, across the hops"
awk -f "$top_srcdir/tests/guest/check-acked.awk" \
  <(chain | grep '^E2E ACK\b') <(guest_lines g5 BLOCK) \
  || fail "acknowledged writes missing on the last destination"
exit 0
