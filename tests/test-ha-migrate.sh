#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Live migration at the block level (docs/migration.md), with python
# libnbd clients held open as the two QEMUs would be:
#  1. The destination's window: its export looks writable to a client
#     (QEMU -incoming refuses a read-only one), reads work, writes are
#     refused (EPERM) until the hand-over.
#  2. start waits for sync and the window; handover moves the roles in
#     one step: the destination is primary with a new generation and
#     takes writes, the source is secondary, refuses its QEMU's late
#     writes (EPERM) and answers its flushes; every acknowledged write
#     is on the destination; the pair is in sync again.
#  3. Back and forth, A->B->A->B, with no full copy after the first.
#  4. Faults: the destination QEMU gone mid-window (the hand-over is
#     refused, the source is primary and writable again), the
#     destination mirrord killed mid-window, the source mirrord killed
#     right after the hand-over: always exactly one primary with every
#     acknowledged write.
#  5. An async pair runs sync for the window.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires $PY -c 'import nbd'

declare -A agent_pid agent_fd
agent_start () {   # agent_start ID URI: a client held open
  mkfifo "$TESTDIR/ag-$1.in"
  $PY "$top_srcdir/tests/nbd-agent.py" "$2" <"$TESTDIR/ag-$1.in" \
    >"$TESTDIR/ag-$1.out" 2>"$TESTDIR/ag-$1.err" &
  agent_pid[$1]=$!
  cleanup_fn "kill ${agent_pid[$1]} 2>/dev/null"
  local fd
  exec {fd}>"$TESTDIR/ag-$1.in"
  agent_fd[$1]=$fd
  poll 10 grep -q connected "$TESTDIR/ag-$1.out" || fail "agent $1 did not connect: $(cat "$TESTDIR/ag-$1.err")"
}
answered () { [ "$(wc -l <"$TESTDIR/ag-$1.out")" -gt "$2" ]; }
agent () {         # agent ID COMMAND...: prints its answer
  local id=$1 n; shift
  n=$(wc -l <"$TESTDIR/ag-$id.out")
  echo "$*" >&"${agent_fd[$id]}"
  poll 30 answered "$id" "$n" || fail "agent $id: no answer to $*: $(cat "$TESTDIR/ag-$id.err")"
  tail -1 "$TESTDIR/ag-$id.out"
}
agent_kill () {    # the QEMU dies: no goodbye
  kill -9 "${agent_pid[$1]}"; wait "${agent_pid[$1]}" 2>/dev/null || :
  exec {agent_fd[$1]}>&-
}
agent_quit () {
  agent "$1" quit >/dev/null
  wait "${agent_pid[$1]}" 2>/dev/null || :
  exec {agent_fd[$1]}>&-
}
expect () { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
mig () { hfield "$1" 'e["migration"]["state"] if e.get("migration") else None'; }
mig_is () { [ "$(mig "$1")" = "$2" ]; }
mirror_mode_is () { [ "$(hfield "$1" 'e["mirror"]["mode"] if e.get("mirror") else None')" = "$2" ]; }
role () { hfield "$1" 'e["role"]'; }
acked=()           # "OFF BYTE" of every acknowledged guest write
guest_writes () {  # guest_writes AGENT FIRST COUNT BYTE
  local i off
  for i in $(seq "$2" $(( $2 + $3 - 1 ))); do
    off=$(( i * 65536 ))
    expect "$(agent "$1" write $off 4096 "$4")" ok "guest write $i"
    acked+=("$off $4")
  done
  expect "$(agent "$1" flush)" ok "guest flush"
}
verify_acked () {  # verify_acked AGENT
  local w
  for w in "${acked[@]}"; do
    expect "$(agent "$1" check "${w% *}" 4096 "${w#* }")" ok "acknowledged write at ${w% *}"
  done
}
# One migration from SRC to DST, the source's guest on agent GS, the
# destination's QEMU on agent GD (opened on DST's export first).
migrate () {       # migrate SRC DST GS GD
  local src=$1 dst=$2 out
  ctl "$dst" migrate incoming vm1 --timeout 60 >/dev/null
  expect "$(mig "$dst")" incoming "$dst's window"
  agent_start "$4" "$(uri "$dst" vm1)"
  expect "$(agent "$4" ro)" "ro False" "the destination as QEMU -incoming sees it"
  out=$(agent "$4" check 0 512 0)
  [[ $out != err* ]] || fail "a read in the window: $out"
  expect "$(agent "$4" write 0 512 9)" "err EPERM" "a write before the hand-over"
  ctl "$src" migrate start vm1 --timeout 60 >/dev/null
  expect "$(mig "$src")" outgoing "$src after start"
  guest_writes "$3" $(( ${#acked[@]} )) 4 $(( ${#acked[@]} % 200 + 1 ))
  out=$(ctl "$src" --json migrate handover vm1 --timeout 10) || fail "handover: $out"
  $PY -c 'import json,sys; d=json.loads(sys.argv[1]); m=d.get("exports", [d])[0]["migration"]; assert m["state"] == "handed-over" and m["handover_ms"] > 0, m; print("handover %.1f ms" % m["handover_ms"])' "$out"
  expect "$(role "$dst")" primary "$dst after the hand-over"
  expect "$(role "$src")" secondary "$src after the hand-over"
  expect "$(mig "$dst")" handed-over "$dst's window"
  # The source's QEMU, paused by now, still sends flushes; a late
  # write is refused, never applied.
  expect "$(agent "$3" flush)" ok "the source's late flush"
  expect "$(agent "$3" write 0 4096 250)" "err EPERM" "the source's late write"
  agent_quit "$3"
  verify_acked "$4"
  poll 30 pair_in_sync "$dst" || fail "$dst and $src not in sync after the hand-over: $(hfield "$dst" e)"
}

truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
start_pair_member a primary
start_pair_member b secondary
poll 30 pair_in_sync a || fail "the pair never synced"
agent_start ga "$(uri a vm1)"
guest_writes ga 0 8 1

# 1-3: A->B, B->A, A->B.
migrate a b ga gb
migrate b a gb ga2
migrate a b ga2 gb2
full=$(grep -c "full sync" "$TESTDIR/a.log" "$TESTDIR/b.log" | awk -F: '{s+=$2} END {print s}')
[ "$full" -le 1 ] || fail "a migration copied the whole disk ($full full syncs)"
echo "ok: A->B->A->B, ${#acked[@]} acknowledged writes on b, $full full sync"

# 4a. The destination's QEMU dies in the window: the window closes, the
# hand-over is refused, and the source (b) is primary and writable.
ctl a migrate incoming vm1 >/dev/null
agent_start gx "$(uri a vm1)"
ctl b migrate start vm1 --timeout 60 >/dev/null
agent_kill gx
poll 10 mig_is a aborted || fail "a's window stayed open: $(mig a)"
out=$(ctl b migrate handover vm1 --timeout 10 2>&1) && fail "handover to a closed window: $out"
[[ $out == *"refused the hand-over"* ]] || fail "refusal: $out"
grep -q "no migration window open" "$TESTDIR/a.log" || fail "a did not say why it refused"
expect "$(role b)" primary "b after a refused hand-over"
expect "$(role a)" secondary "a after a refused hand-over"
guest_writes gb2 ${#acked[@]} 4 77
poll 30 pair_in_sync b || fail "not in sync after the refused hand-over"
echo "ok: destination QEMU gone: the hand-over refused, b still primary"

# 4b. The destination's mirrord is killed in the window.
ctl a migrate incoming vm1 >/dev/null
ctl b migrate start vm1 --timeout 60 >/dev/null
kill9_mirrord a
poll 10 mig_is b aborted || fail "b did not see its destination go: $(mig b)"
expect "$(role b)" primary "b after its destination died"
guest_writes gb2 ${#acked[@]} 4 78
start_pair_member a secondary
poll 30 pair_in_sync b || fail "a did not resync after its crash"
echo "ok: destination mirrord killed mid-window: b primary, a resynced"

# 4c. The source's mirrord is killed right after the hand-over.
migrate b a gb2 ga3
kill9_mirrord b
expect "$(role a)" primary "a after its source died"
guest_writes ga3 ${#acked[@]} 4 79
start_pair_member b secondary
poll 30 pair_in_sync a || fail "b did not resync after its crash"
verify_acked ga3
echo "ok: source mirrord killed after the hand-over: a primary with every write"
agent_quit ga3
stop_mirrord a
stop_mirrord b

# 5. An async pair goes sync for the window, and the new primary's
# mirror is async again.
rm -rf "$TESTDIR/a.state" "$TESTDIR/b.state"
start_pair_member a primary ",mode=async"
start_pair_member b secondary ",mode=async"
poll 30 pair_in_sync a || fail "the async pair never synced"
acked=()
agent_start gc "$(uri a vm1)"
guest_writes gc 0 8 5
migrate a b gc gd
grep -q "mirror to .*: now sync" "$TESTDIR/a.log" || fail "the window did not run sync"
poll 10 mirror_mode_is b async || fail "b's mirror: $(hfield b 'e["mirror"]')"
echo "ok: async pair migrated in sync mode"
agent_quit gd
exit 0
