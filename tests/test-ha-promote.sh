#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# promote and demote (SPEC §2.3, §4): promote refuses, saying why, an
# inconsistent replica, a peer that is a connected primary, and what
# the fence-peer hook forbids; --force overrides and is logged; demote
# refuses while clients are connected.  Roles and generations persist
# across restarts; the configured role applies only the first time.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version

truncate -s 16M "$TESTDIR/a.img" "$TESTDIR/b.img"
refused () {   # refused NAME WANT ARGS...: exit 1 and the reason
  local n=$1 want=$2 out; shift 2
  out=$(ctl "$n" "$@" 2>&1) && fail "$* accepted: $out"
  [[ $out == *"$want"* ]] || fail "$*: '$out' lacks '$want'"
}

# A fresh secondary never synced: inconsistent, so promote refuses.
start_pair_member b secondary
[ "$(hfield b 'e["disk"]')" = inconsistent ] || fail "fresh secondary: $(hfield b e)"
refused b "inconsistent" promote vm1
refused b "already secondary" demote vm1
ctl b promote vm1 --force >/dev/null
grep -q "promotion forced" "$TESTDIR/b.log" || fail "--force not logged"
[ "$(hfield b 'e["role"]')" = primary ] || fail "forced promote"
stop_mirrord b
# The saved role wins over the configured one.
start_pair_member b secondary
[ "$(hfield b 'e["role"]')" = primary ] || fail "role not persisted"
ctl b demote vm1 >/dev/null
stop_mirrord b
rm -rf "$TESTDIR/b.state"

# A connected primary peer: promote refuses.
start_pair_member a primary
start_pair_member b secondary
poll 30 pair_in_sync a || fail "never in sync"
refused b "connected primary" promote vm1
refused a "already primary" promote vm1

# Demote refuses while a client is connected.
$PY - "$(uri a vm1)" "$TESTDIR/hold" <<'PY' &
import nbd, os, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
open(sys.argv[2], "w").close()
while os.path.exists(sys.argv[2]):
    time.sleep(0.05)
PY
holder=$!
poll 10 test -e "$TESTDIR/hold"
refused a "client" demote vm1
rm -f "$TESTDIR/hold"
wait $holder

# The fence-peer hook: with the peer gone, it decides.
stop_mirrord a
cat > "$TESTDIR/fence" <<SH
#!/bin/sh
echo "\$MIRRORD_EXPORT \$MIRRORD_PEER" >> "$TESTDIR/fence.calls"
exit \$(cat "$TESTDIR/fence.exit")
SH
chmod +x "$TESTDIR/fence"
stop_mirrord b
start_pair_member b secondary ",fence-peer=$TESTDIR/fence"
peer_down () { [ "$(hfield b 'e["peer"]["connected"]')" = False ]; }
poll 10 peer_down
echo 1 > "$TESTDIR/fence.exit"
refused b "fence-peer hook" promote vm1
grep -q "^vm1 nbd+unix" "$TESTDIR/fence.calls" || fail "hook not called with the export"
[ "$(hfield b 'e["role"]')" = secondary ] || fail "promoted against the hook"
echo 0 > "$TESTDIR/fence.exit"
ctl b promote vm1 >/dev/null
[ "$(hfield b 'e["role"]')" = primary ] || fail "hook allowed, not promoted"
[ "$(wc -l < "$TESTDIR/fence.calls")" = 2 ] || fail "hook calls: $(cat "$TESTDIR/fence.calls")"
stop_mirrord b
exit 0
