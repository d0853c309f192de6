#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A real two-node Pacemaker cluster (docs/pacemaker.md) managing export
# vm1 with the OCF agent as a promotable clone: two network namespaces
# joined by veth, in each corosync (knet, two_node) and pacemakerd
# started by hand with private /run, /var/lib/pacemaker,
# /var/lib/corosync and /etc/corosync (tests/cluster-functions.sh), and
# mirrord replicating over TCP with TLS-PSK in sync mode.
#
#  1. The cluster promotes a (the side with data: a location preference
#     that is removed then); b syncs to uptodate.
#  2. A writer makes FUA writes through a; a's mirrord is killed
#     (kill -9).  Pacemaker sees the monitor fail, demotes and stops the
#     instance on a (migration-threshold=1: a is not retried), promotes b
#     (mirrord's fence-peer hook asks the cluster, which shows a's
#     instance is no longer promoted).  Every acknowledged write is on b.
#  3. The failure is cleaned up: a rejoins as secondary and resyncs.
#  4. A writer runs through b; b's node is cut off with nftables.  Both
#     halves keep quorum (two_node), so fencing decides: the test's fence
#     agent kills a node's every process, and the device that would fence
#     a is delayed, so that b loses the race (as an isolated node does
#     that cannot reach its fencing device).  a fences b, then promotes;
#     every write b acknowledged is on a: b held its writes while its
#     peer was silent (peer-timeout 10 s) and was fenced before that ran
#     out.
#  5. b's node is powered on again: it rejoins, its instance comes up
#     secondary, resyncs from a, and the two images verify identical.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/cluster-functions.sh"
requires corosync -v
requires pacemakerd --version
requires crm --version
requires nsenter --version
requires nft --version
requires qemu-io --version
requires $PY -c 'import nbd'
# Several times slower under ASan, and it proves the integration, not
# the C: one build runs it (the optimised one, first in run-tests.sh).
if [ -n "${ASAN_BUILD:-}" ] || grep -q '^SAN_CFLAGS = .*-fsanitize' "$top_builddir/Makefile" 2>/dev/null; then
  echo "$0: test skipped: not under sanitizers (timing-sensitive cluster test)"
  exit 77
fi
WRITER="$top_srcdir/tests/ha-writer.py"
T0=$(date +%s)
step () { echo "[$(( $(date +%s) - T0 ))s] $*"; }

mkdir -p "$TESTDIR/fence-bin" "$TESTDIR/ocf-rd/mirrord"
install -m 755 "$top_srcdir/tests/fence_mirrord_netns" "$TESTDIR/fence-bin/"
install -m 755 "$top_builddir/ocf/mirrord" "$TESTDIR/ocf-rd/mirrord/mirrord"
make_cluster_net
cleanup_fn "node_kill a; node_kill b"
# On failure, what each node saw.
cleanup_fn '[ -n "${TEST_OK:-}" ] || for n in a b; do echo "---- node $n: pacemaker"; grep -E "error|warning|notice: (Result|Operation|Peer)" "$TESTDIR/$n/run/pacemaker.log" | tail -25; echo "---- node $n: mirrord"; tail -25 "$TESTDIR/$n/run/mirrord/mirrord.log"; done >&2 2>/dev/null'

# CLUSTER_TEST_LOGS=DIR keeps each node's logs there.
[ -z "${CLUSTER_TEST_LOGS:-}" ] || cleanup_fn 'for n in a b; do mkdir -p "$CLUSTER_TEST_LOGS/$n"; cp "$TESTDIR/$n"/run/*.log "$TESTDIR/$n"/run/mirrord/*.log "$CLUSTER_TEST_LOGS/$n/"; done 2>/dev/null'
truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
qemu-io -f raw -c 'write -P 0x11 0 8M' "$TESTDIR/a.img" >/dev/null
make_psk "$TESTDIR/keys.psk" pair
for n in a b; do
  [ $n = a ] && other=b role=primary || other=a role=secondary
  mkdir -p "$TESTDIR/$n/run/mirrord"
  # The node's own file at the same path on both nodes (/run is
  # per-node), as a clone's parameters are the same everywhere.
  cat > "$TESTDIR/$n/run/mirrord/vm1.conf" <<EOF
[mirrord]
nbd-socket = /run/mirrord/nbd.sock
nbd-listen = ${IP[$n]}:10809
state-dir = $TESTDIR/$n/state
tls-psk = $TESTDIR/keys.psk

[export vm1]
path = $TESTDIR/$n.img
role = $role
peer = nbds://pair@${IP[$other]}:10809/vm1
mode = sync
peer-timeout = 10
fence-peer = $top_srcdir/ocf/mirrord-fence-peer
EOF
done
mctl () { local n=$1; shift; "$MIRRORCTL" -s "$TESTDIR/$n/run/mirrord/vm1.ctl" "$@"; }
mfield () {
  mctl "$1" --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($2)"
}
in_sync () {
  [ "$(mfield "$1" 'e["peer"]["connected"] and e["disk"] == "uptodate" and e["peer"]["disk"] == "uptodate" and e["peer"]["generation"]["current"] == e["generation"]["current"]')" = True ]
}
nbd_uri () { echo "nbd+unix:///vm1?socket=$TESTDIR/$1/run/mirrord/nbd.sock"; }
promoted_is () { [ "$(cq "$1" 'promoted("vm1")')" = "$2" ]; }
role_is () { [ "$(cq "$1" "role('vm1', 'pcmk-$2')")" = "$3" ]; }
acked () { [ "$(wc -l < "$1" 2>/dev/null || echo 0)" -ge "$2" ]; }

# ---- 1. The cluster, the clone, the first promotion.
node_start a
node_start b
both_online () { [ "$(cq "$1" 'online("pcmk-a") and online("pcmk-b") and dc() != ""')" = True ]; }
poll 90 both_online a || fail "the cluster did not form"
step "cluster formed, DC $(cq a 'dc()')"
cat > "$TESTDIR/cluster.crm" <<EOF
property stonith-enabled=true stonith-timeout=30s no-quorum-policy=stop
rsc_defaults resource-stickiness=100
primitive fence-a stonith:fence_mirrord_netns \\
  params nodes_dir="$CLUSTER_NODES_DIR" pcmk_host_list=pcmk-a pcmk_delay_base=10s \\
  op monitor interval=60s
primitive fence-b stonith:fence_mirrord_netns \\
  params nodes_dir="$CLUSTER_NODES_DIR" pcmk_host_list=pcmk-b \\
  op monitor interval=60s
# The first promotion goes to a, the side with the data (removed once a
# is promoted).  Without it, a is no better than b once b is in sync,
# which can happen before the first promotion: b could be promoted.
location vm1-first-promoted vm1-clone role=Promoted 100: pcmk-a
location fence-a-elsewhere fence-a -inf: pcmk-a
location fence-b-elsewhere fence-b -inf: pcmk-b
primitive vm1 ocf:mirrord:mirrord \\
  params export=vm1 config=/run/mirrord/vm1.conf control=/run/mirrord/vm1.ctl \\
    pid_file=/run/mirrord/vm1.pid logfile=/run/mirrord/mirrord.log \\
    mirrord="$MIRRORD" mirrorctl="$MIRRORCTL" \\
  op start timeout=60s op stop timeout=60s \\
  op promote timeout=90s op demote timeout=60s op notify timeout=20s \\
  op monitor interval=2s role=Promoted timeout=20s \\
  op monitor interval=3s role=Unpromoted timeout=20s
clone vm1-clone vm1 \\
  meta promotable=true promoted-max=1 promoted-node-max=1 clone-max=2 \\
    clone-node-max=1 notify=true migration-threshold=1
EOF
node_exec a crm configure load update "$TESTDIR/cluster.crm" \
  || fail "crm refused the configuration"
poll 90 promoted_is a "['pcmk-a']" || fail "a was not promoted: $(node_exec a crm_mon -1)"
step "a promoted"
node_exec a crm configure delete vm1-first-promoted \
  || fail "crm could not remove the first promotion's preference"
poll 60 in_sync a || fail "replication never reached uptodate: $(mfield a e)"
[ "$(mfield b 'e["role"]')" = secondary ] || fail "b is not secondary"
role_is a b Unpromoted || fail "b's instance: $(cq a "role('vm1', 'pcmk-b')")"
step "b in sync (uptodate)"

# ---- 2. kill -9 of the primary's mirrord under a write load.
$PY "$WRITER" write "$(nbd_uri a)" "$TESTDIR/acked1" $((4 << 20)) 2>/dev/null &
writer=$!
cleanup_fn "kill $writer 2>/dev/null"
poll 60 acked "$TESTDIR/acked1" 300 || fail "the writer made no progress"
kill -9 "$(cat "$TESTDIR/a/run/mirrord/vm1.pid")"
wait $writer 2>/dev/null || :
step "a's mirrord killed after $(wc -l < "$TESTDIR/acked1") acknowledged writes"
poll 90 promoted_is b "['pcmk-b']" || fail "b was not promoted: $(node_exec b crm_mon -1)"
step "b promoted"
# mirrord's fence-peer hook asked the cluster: a demoted, no fencing.
grep -q "vm1 is not promoted on pcmk-a: promotion allowed" "$TESTDIR/b/run/mirrord/mirrord.log" \
  || fail "the fence-peer hook did not allow b's promotion for the right reason"
out=$($PY "$WRITER" verify "$(nbd_uri b)" "$TESTDIR/acked1") \
  || fail "acknowledged writes lost on failover: $out"
step "kill -9 failover: $out"

# ---- 3. The failure cleaned up: a rejoins as secondary and resyncs.
node_exec a crm_resource --cleanup -r vm1-clone >/dev/null
poll 60 role_is b a Unpromoted || fail "a's instance did not start again"
poll 60 in_sync b || fail "a did not resync: $(mfield a e)"
[ "$(mfield a 'e["role"]')" = secondary ] || fail "a did not come back secondary"
step "a rejoined as secondary, in sync"

# ---- 4. Partition b's node (the primary's) under a write load.
$PY "$WRITER" write "$(nbd_uri b)" "$TESTDIR/acked2" $((4 << 20)) 2>/dev/null &
writer=$!
cleanup_fn "kill $writer 2>/dev/null"
poll 60 acked "$TESTDIR/acked2" 300 || fail "the writer on b made no progress"
b_log_lines=$(wc -l < "$TESTDIR/b/run/mirrord/mirrord.log")
ip netns exec "${NS[b]}" nft -f - <<NFT
table inet part {
  chain in { type filter hook input priority 0; ip saddr ${IP[a]} drop; }
  chain out { type filter hook output priority 0; ip daddr ${IP[a]} drop; }
}
NFT
cleanup_fn "ip netns exec ${NS[b]} nft delete table inet part 2>/dev/null"
step "b partitioned after $(wc -l < "$TESTDIR/acked2") acknowledged writes"
b_fenced () { [ "$(cq a 'not online("pcmk-b")')" = True ] && ! kill -0 "${HOLDER[b]}" 2>/dev/null; }
poll 60 b_fenced || fail "b was not fenced: $(node_exec a crm_mon -1)"
wait $writer 2>/dev/null || :
step "b fenced"
poll 90 promoted_is a "['pcmk-a']" || fail "a was not promoted: $(node_exec a crm_mon -1)"
step "a promoted"
grep -q "peer node pcmk-b is down and clean: promotion allowed" "$TESTDIR/a/run/mirrord/mirrord.log" \
  || fail "the fence-peer hook did not allow a's promotion for the right reason"
tail -n +$((b_log_lines + 1)) "$TESTDIR/b/run/mirrord/mirrord.log" | grep -q "writing without the peer" \
  && fail "b acknowledged writes without its peer before it was fenced"
out=$($PY "$WRITER" verify "$(nbd_uri a)" "$TESTDIR/acked2") \
  || fail "acknowledged writes lost in the partition: $out"
step "partition failover: $out"
qemu-io -f raw -c 'write -P 0x44 40M 1M' "$(nbd_uri a)" >/dev/null

# ---- 5. b powered on again: rejoins as secondary, resyncs.
ip netns exec "${NS[b]}" nft delete table inet part
node_start b
poll 90 both_online a || fail "b did not rejoin the cluster"
poll 60 role_is a b Unpromoted || fail "b's instance did not start: $(node_exec a crm_mon -1)"
poll 60 in_sync a || fail "b did not resync: $(mfield b e)"
promoted_is a "['pcmk-a']" || fail "the promoted instance moved"
# Only what diverged was copied (a's writes and the regions b's
# bitmap held), not the 64 MiB disk.
moved=$(mfield a 'e["mirror"]["total_bytes"]')
[ "$moved" -le $((16 << 20)) ] || fail "b's resync moved $moved bytes (whole disk?)"
diff=$(mctl a --json verify vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["differing_blocks"])')
[ "$diff" = 0 ] || fail "$diff blocks differ after b's resync"
step "b rejoined as secondary, resynced $moved bytes, images verified identical"
TEST_OK=1
exit 0
