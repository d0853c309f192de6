#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The OCF resource agent (ocf/mirrord.in, docs/pacemaker.md) without a
# cluster: ocf-tester (resource-agents) runs every action against an
# export whose peer is a real mirrord, and the agent's results are
# checked by hand where ocf-tester does not look: monitor tells
# promoted (8) from unpromoted (0) and stopped (7), start brings up an
# export configured primary as unpromoted, promote refuses an
# inconsistent replica, and stop leaves no daemon behind.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires ocf-tester --version
requires xmllint --version
AGENT_BUILT="$top_builddir/ocf/mirrord"
[ -x "$AGENT_BUILT" ] || fail "no $AGENT_BUILT: build first"
# ocf-tester runs meta-data as nobody: a copy it can reach.
AGENT_DIR=$(mktemp -d /tmp/mirrord-ocf.XXXXXX)
cleanup_fn "rm -rf '$AGENT_DIR'"
chmod 755 "$AGENT_DIR"
AGENT="$AGENT_DIR/mirrord"
install -m 755 "$AGENT_BUILT" "$AGENT"

truncate -s 16M "$TESTDIR/a.img" "$TESTDIR/b.img"
start_pair_member b secondary
# Replication over the plaintext unix socket: insecure, as b's.
cat > "$TESTDIR/a.conf" <<EOF
[mirrord]
nbd-socket = $TESTDIR/a.nbd
state-dir = $TESTDIR/a.state
insecure = true

[export vm1]
path = $TESTDIR/a.img
role = primary
peer = $(uri b vm1)
peer-timeout = 1
EOF
export OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=mirrord-vm1
export OCF_RESKEY_export=vm1 OCF_RESKEY_config="$TESTDIR/a.conf"
export OCF_RESKEY_control="$TESTDIR/a.ctl" OCF_RESKEY_pid_file="$TESTDIR/a.pid"
export OCF_RESKEY_mirrord="$MIRRORD" OCF_RESKEY_mirrorctl="$MIRRORCTL"
export OCF_RESKEY_logfile="$TESTDIR/a.log" OCF_RESKEY_CRM_meta_timeout=30000
# Whatever happens, no agent-started daemon outlives the test.
cleanup_fn "'$AGENT' stop >/dev/null 2>&1"
agent () { "$AGENT" "$@" 2>>"$TESTDIR/agent.err"; }
expect_rc () {   # expect_rc CODE ACTION
  local got=0
  agent "$2" || got=$?
  [ "$got" -eq "$1" ] || { cat "$TESTDIR/agent.err" >&2; fail "$2 returned $got, expected $1"; }
}

# The meta-data is valid against the OCF DTD and names every action.
"$AGENT" meta-data > "$TESTDIR/meta.xml"
(cd /usr/share/resource-agents && xmllint --noout --valid - < "$TESTDIR/meta.xml") \
  || fail "meta-data is not valid ra-api-1.dtd XML"
for a in start stop promote demote monitor notify meta-data validate-all; do
  grep -q "<action name=\"$a\"" "$TESTDIR/meta.xml" || fail "meta-data lacks $a"
done

# Configuration errors are told apart from a stopped resource.
OCF_RESKEY_export=vm9 expect_rc 6 validate-all
OCF_RESKEY_config=/nonexistent expect_rc 5 validate-all
OCF_RESKEY_config=/nonexistent OCF_RESKEY_CRM_meta_interval=0 __OCF_ACTION=monitor \
  expect_rc 7 monitor

# ocf-tester, with the agent's parameters (it exits non-zero on any error).
args=()
for p in export config control pid_file mirrord mirrorctl logfile; do
  v=OCF_RESKEY_$p; args+=(-o "$p=${!v}")
done
ocf-tester -n mirrord-vm1 "${args[@]}" "$AGENT" > "$TESTDIR/ocf-tester.out" 2>&1 \
  || { cat "$TESTDIR/ocf-tester.out" >&2; fail "ocf-tester failed"; }
cat "$TESTDIR/ocf-tester.out"
grep -q "passed all tests" "$TESTDIR/ocf-tester.out" || fail "ocf-tester did not pass"

# The states, checked against the daemon itself.
expect_rc 7 monitor
expect_rc 0 start
[ "$(hfield a 'e["role"]')" = secondary ] || fail "start left vm1 $(hfield a 'e["role"]')"
expect_rc 0 monitor
expect_rc 0 promote
[ "$(hfield a 'e["role"]')" = primary ] || fail "promote did not make vm1 primary"
expect_rc 8 monitor
poll 30 pair_in_sync a || fail "agent-started primary never in sync: $(hfield a e)"
expect_rc 0 demote
expect_rc 0 monitor
# b, a fresh secondary, was synced by a: it was inconsistent until then;
# the agent refuses a promotion of a replica that is not complete.
stop_mirrord b
truncate -s 16M "$TESTDIR/c.img"
pid=$(cat "$TESTDIR/a.pid")
expect_rc 0 stop
kill -0 "$pid" 2>/dev/null && fail "stop left mirrord $pid running"
expect_rc 7 monitor
rm -rf "$TESTDIR/a.state"
sed -i "s|^path = .*|path = $TESTDIR/c.img|; s|^role = .*|role = secondary|" "$TESTDIR/a.conf"
expect_rc 0 start
[ "$(hfield a 'e["disk"]')" = inconsistent ] || fail "fresh secondary: $(hfield a e)"
expect_rc 1 promote
grep -q "refusing to promote export vm1: disk inconsistent" "$TESTDIR/agent.err" \
  || fail "promote refused without saying why"
# A daemon killed under the agent is a failure the monitor reports as
# "not running", and stop after it succeeds.
pid=$(cat "$TESTDIR/a.pid")
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
expect_rc 7 monitor
expect_rc 0 stop
exit 0
