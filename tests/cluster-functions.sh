# SPDX-License-Identifier: MIT
# Helpers for the Pacemaker cluster test: two "nodes", pcmk-a and
# pcmk-b, each a network namespace (joined by a veth pair) plus a
# private mount and UTS namespace in which corosync, pacemakerd and the
# resource agent's mirrord run.  Each node has its own /run,
# /var/lib/pacemaker, /var/lib/corosync, /etc/corosync and /dev/shm
# (directories under $TESTDIR/NODE bind-mounted there, so the test reads
# them from outside), and sees the test's fence agent in /usr/sbin and
# the built resource agent as ocf:mirrord:mirrord (read-only overlays).
#
#   make_cluster_net       namespaces and veth: NS[a] NS[b], IP[a] IP[b]
#   node_start N           start node N (a or b): namespaces, corosync,
#                          pacemakerd; returns once corosync answers
#   node_exec N CMD...     run CMD inside node N
#   node_kill N            SIGKILL every process of node N (power off)
#   cmon N                 crm_mon -1 --output-as=xml, as node N sees it
#   cq N PYEXPR            evaluate PYEXPR on that XML (s = the root)
# Names carry the "pcmk" prefix and the test's pid, so nothing collides
# with other tests' namespaces.

declare -A NS IP HOLDER
CLUSTER_NODES_DIR=$TESTDIR/nodes

make_cluster_net () {
  local n
  make_netns_pair pcmk 232
  NS[a]=$NA NS[b]=$NB IP[a]=$IPA IP[b]=$IPB
  mkdir -p "$CLUSTER_NODES_DIR"
  # The fence agent finds a node's processes by this identity.
  for n in a b; do
    ip netns exec "${NS[$n]}" readlink /proc/self/ns/net > "$CLUSTER_NODES_DIR/pcmk-$n.netns"
  done
}

_node_dirs () {
  local d=$TESTDIR/$1
  mkdir -p "$d/run/mirrord" "$d/lib-corosync" "$d/etc-corosync" "$d/state" \
           "$d/lib-pacemaker/cib" "$d/lib-pacemaker/pengine" \
           "$d/lib-pacemaker/blackbox" "$d/lib-pacemaker/cores"
  chmod 755 "$d/run"
  chown -R hacluster:haclient "$d/lib-pacemaker"
  chmod 750 "$d/lib-pacemaker"/*
}

# corosync: knet on the veth address, two_node (which implies
# wait_for_all: the first start waits for both nodes), a 1 s token so
# that a lost node is noticed in about 2.5 s.
_corosync_conf () {
  cat <<EOF
totem {
  version: 2
  cluster_name: mirrordtest
  transport: knet
  crypto_cipher: none
  crypto_hash: none
  token: 1000
}
nodelist {
  node {
    ring0_addr: ${IP[a]}
    name: pcmk-a
    nodeid: 1
  }
  node {
    ring0_addr: ${IP[b]}
    name: pcmk-b
    nodeid: 2
  }
}
quorum {
  provider: corosync_votequorum
  two_node: 1
}
logging {
  to_stderr: no
  to_syslog: no
  to_logfile: yes
  logfile: /run/corosync.log
  timestamp: on
}
EOF
}

# A first CIB, the same on both nodes: no fencing until the test
# configures its devices, and a short dc-deadtime so that the first
# election does not wait the default 20 s.
_seed_cib () {
  cat > "$1/cib.xml" <<'EOF'
<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.8" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="5s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
EOF
  chown hacluster:haclient "$1/cib.xml"
  chmod 600 "$1/cib.xml"
}

node_exec () {
  local n=$1; shift
  nsenter -t "${HOLDER[$n]}" -m -n -u -- "$@"
}

# The node's mount namespace lives as long as its holder process (a
# plain sleep: an anchor, not a wait).
node_start () {
  local n=$1 d=$TESTDIR/$1
  _node_dirs "$n"
  _corosync_conf > "$d/etc-corosync/corosync.conf"
  [ -f "$d/lib-pacemaker/cib/cib.xml" ] || _seed_cib "$d/lib-pacemaker/cib"
  rm -f "$d/run/node-ready"
  ip netns exec "${NS[$n]}" unshare -m -u --propagation private bash -c '
    set -e
    d=$1
    mount --bind "$d/run" /run
    mount --bind "$d/lib-pacemaker" /var/lib/pacemaker
    mount --bind "$d/lib-corosync" /var/lib/corosync
    mount --bind "$d/etc-corosync" /etc/corosync
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
    mount -t overlay overlay -o "lowerdir=$2:/usr/sbin" /usr/sbin
    mount -t overlay overlay -o "lowerdir=$3:/usr/lib/ocf/resource.d" /usr/lib/ocf/resource.d
    hostname "$4"
    touch /run/node-ready
    exec sleep infinity' node "$d" "$TESTDIR/fence-bin" "$TESTDIR/ocf-rd" "pcmk-$n" \
    >"$d/holder.log" 2>&1 &
  HOLDER[$n]=$!
  # Killed with the node (node_kill), never waited for: no job notices.
  disown
  poll 10 test -e "$d/run/node-ready" || { cat "$d/holder.log" >&2; fail "node $n: no namespaces"; }
  node_exec "$n" corosync -f >"$d/corosync.out" 2>&1 &
  disown
  poll 30 node_exec "$n" corosync-cmapctl -g runtime.votequorum.this_node_id \
    || { cat "$d/run/corosync.log" "$d/corosync.out" >&2 || :; fail "node $n: corosync did not start"; }
  node_exec "$n" env PCMK_logfile=/run/pacemaker.log PCMK_logfacility=none \
    pacemakerd >"$d/pacemakerd.out" 2>&1 &
  disown
}

# The whole node, at once: what a power cut does.  Reuses the test's
# fence agent, which is exactly that.
node_kill () {
  "$TESTDIR/fence-bin/fence_mirrord_netns" -o off -n "pcmk-$1" \
    --nodes-dir "$CLUSTER_NODES_DIR" 2>/dev/null
}

cmon () { node_exec "$1" crm_mon -1 --output-as=xml 2>/dev/null; }
cq () {
  cmon "$1" | $PY -c "
import sys, xml.etree.ElementTree as ET
s = ET.fromstring(sys.stdin.read())
def online(n): return any(x.get('name') == n and x.get('online') == 'true' for x in s.iter('node'))
def role(rsc, n):
    for r in s.iter('resource'):
        if r.get('id').split(':')[0] == rsc and any(x.get('name') == n for x in r.iter('node')):
            return r.get('role')
    return 'Stopped'
def promoted(rsc):
    return sorted(x.get('name') for r in s.iter('resource') if r.get('id').split(':')[0] == rsc
                  and r.get('role') == 'Promoted' for x in r.iter('node'))
def dc(): return s.find('summary/current_dc').get('name', '')
print($2)"
}
