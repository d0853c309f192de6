#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The death of the peer's process is seen at once, and status never
# shows a ghost.  A primary killed with kill -9 leaves its replication
# connections closed without a goodbye and its port refusing: the
# secondary marks it down in milliseconds, and `promote` right after
# the kill succeeds without --force.  Status then says "disconnected"
# and shows the peer's role only as last known, with its age.  After
# the failback both sides' status agree on who is primary, the disks
# and that they are in sync.  Over the unix socket (plaintext,
# --insecure) and over TLS-PSK on loopback TCP.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version

make_psk "$TESTDIR/keys.psk" pair
declare -A port=([a]=$(free_port) [b]=$(free_port))
[ "${port[a]}" != "${port[b]}" ] || port[b]=$(free_port)
tls_member () {   # tls_member NAME ROLE
  local other=a
  [ "$1" = a ] && other=b
  start_mirrord "$1" --tls-psk "$TESTDIR/keys.psk" --nbd-listen "127.0.0.1:${port[$1]}" \
    --export "vm1=$TESTDIR/$1.img,role=$2,peer=nbds://pair@127.0.0.1:${port[$other]}/vm1,peer-timeout=5,mode=sync"
}
unix_member () { start_pair_member "$1" "$2" ",mode=sync,peer-timeout=5"; }
view () { hfield "$1" 'e["role"] + "/" + e["disk"] + " peer " + str(e["peer"]["connected"]) + " " + str(e["peer"]["role"]) + "/" + str(e["peer"]["disk"]) + " in_sync=" + str(e["peer"].get("in_sync")) + " last_known=" + str(e["peer"]["last_known"])'; }
# agree: each side's view of the other is what the other says of itself.
agree () {
  local a b
  a=$(ctl a --json status vm1) b=$(ctl b --json status vm1)
  $PY - "$a" "$b" <<'PY'
import json, sys
a, b = (json.loads(x)["exports"][0] for x in sys.argv[1:3])
for me, other in ((a, b), (b, a)):
    p = me["peer"]
    assert p["connected"] and not p["last_known"], p
    assert (p["role"], p["disk"]) == (other["role"], other["disk"]), (p, other)
assert {a["role"], b["role"]} == {"primary", "secondary"}
# The primary says it is in sync (the secondary hears it), at one
# generation, both disks up to date.
sec = a if a["role"] == "secondary" else b
assert sec["peer"]["in_sync"] and a["disk"] == b["disk"] == "uptodate", (a, b)
assert a["generation"]["current"] == b["generation"]["current"], (a, b)
PY
}

run () {   # run MEMBER-FUNCTION
  local member=$1 t0 ms
  rm -rf "$TESTDIR"/[ab].state
  truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
  $member a primary
  $member b secondary
  poll 30 agree || fail "$member: the pair never agreed: a: $(view a); b: $(view b)"
  qemu-io -f raw -c 'write -P 0x5a 1M 1M' "$(uri a vm1)" >/dev/null
  # kill -9, then promote at once: the peer-timeout (5 s) is far away.
  kill9_mirrord a
  t0=$(date +%s%N)
  promote () { ctl b promote vm1 >/dev/null 2>&1; }
  poll 2 promote || fail "$member: promote refused after the kill: $(ctl b promote vm1 2>&1)"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "$member: promoted $ms ms after kill -9 of the primary"
  [ $ms -le 500 ] || fail "$member: promotion took $ms ms (peer-timeout is 5 s)"
  grep -q "considered down (last known primary/uptodate)" "$TESTDIR/b.log" \
    || fail "$member: no log line on the peer's death"
  # No ghost: disconnected, and the role only as last known.
  [ "$(hfield b 'e["peer"]["connected"]')" = False ] || fail "$member: ghost: $(view b)"
  [ "$(hfield b 'e["peer"]["last_known"] and e["peer"]["last_seen_s"] < 5')" = True ] \
    || fail "$member: the peer's state is not shown as last known: $(view b)"
  ctl b status vm1 | grep -q "peer: disconnected, last known primary/uptodate (" \
    || fail "$member: human status: $(ctl b status vm1)"
  qemu-io -f raw -c 'write -P 0x6b 2M 1M' "$(uri b vm1)" >/dev/null
  # Failback: a returns, becomes b's secondary; both sides agree.
  $member a primary
  poll 30 agree || fail "$member: after failback: a: $(view a); b: $(view b)"
  qemu-io -f raw -r -U -c 'read -P 0x6b 2M 1M' "$TESTDIR/a.img" >/dev/null \
    || fail "$member: b's write did not reach a"
  # And back: b killed, a promoted at once, b returns.
  kill9_mirrord b
  t0=$(date +%s%N)
  promote_a () { ctl a promote vm1 >/dev/null 2>&1; }
  poll 2 promote_a || fail "$member: a not promotable after b's kill"
  echo "$member: a promoted $(( ($(date +%s%N) - t0) / 1000000 )) ms after kill -9 of b"
  $member b primary
  poll 30 agree || fail "$member: after the second failback: a: $(view a); b: $(view b)"
  stop_mirrord a
  stop_mirrord b
}

run unix_member
run tls_member
exit 0
