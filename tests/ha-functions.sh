# SPDX-License-Identifier: MIT
# Helpers for the HA pair tests: two daemons, a and b, each with export
# vm1 whose peer is the other, on unix sockets.  Replication there is
# plaintext, so the members run with --insecure (SPEC §3); the TLS
# pairs (netns_member, test-ha-claim-auth.sh) show the secure way.
#   start_pair_member NAME ROLE [extra export keys]
#   hfield NAME PYEXPR   a field of vm1's status (e = the export)
start_pair_member () {
  local name=$1 role=$2 extra=${3:-} other
  [ "$name" = a ] && other=b || other=a
  start_mirrord "$name" --insecure \
    --export "vm1=$TESTDIR/$name.img,role=$role,peer=$(uri "$other" vm1),peer-timeout=1$extra"
}
hfield () {
  ctl "$1" --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($2)"
}
# In sync: connected, both uptodate at the same generation.
pair_in_sync () {
  [ "$(hfield "$1" 'e["peer"]["connected"] and e["disk"] == "uptodate" and e["peer"]["disk"] == "uptodate" and e["peer"]["generation"]["current"] == e["generation"]["current"]')" = True ]
}

# Two network namespaces joined by a veth pair, cleaned up at exit:
# sets NA NB (namespaces), IPA IPB (addresses), VA VB (interfaces).
# PREFIX (default mrd) names them, in 10.SUBNET.x.0/24 (default 231),
# so suites running side by side do not collide.
# Skips the test (exit 77) where namespaces cannot be made.
make_netns_pair () {   # make_netns_pair [PREFIX SUBNET]
  local prefix=${1:-mrd} tag=$$ net=$(( $$ % 200 + 20 ))
  [ "$(id -u)" = 0 ] || { echo "$0: test skipped: needs root"; exit 77; }
  NA=$prefix-a-$tag NB=$prefix-b-$tag VA=${prefix:0:2}a$tag VB=${prefix:0:2}b$tag
  IPA=10.${2:-231}.$net.1 IPB=10.${2:-231}.$net.2
  ip netns add "$NA" || { echo "$0: test skipped: no network namespaces"; exit 77; }
  cleanup_fn "ip netns del $NA"
  ip netns add "$NB"
  cleanup_fn "ip netns del $NB"
  ip link add "$VA" type veth peer name "$VB"
  ip link set "$VA" netns "$NA"
  ip link set "$VB" netns "$NB"
  ip -n "$NA" addr add "$IPA/24" dev "$VA"
  ip -n "$NB" addr add "$IPB/24" dev "$VB"
  ip -n "$NA" link set lo up
  ip -n "$NB" link set lo up
  ip -n "$NA" link set "$VA" up
  ip -n "$NB" link set "$VB" up
}
# member NAME ROLE NS MYIP PEERIP [extra export keys]: a pair member on
# TCP with TLS-PSK ($TESTDIR/keys.psk, user "pair").
netns_member () {
  MIRRORD_WRAPPER="ip netns exec $3" start_mirrord "$1" \
    --tls-psk "$TESTDIR/keys.psk" --nbd-listen "$4:10809" \
    --export "vm1=$TESTDIR/$1.img,role=$2,peer=nbds://pair@$5:10809/vm1,peer-timeout=1${6:-}"
}
