#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Failback over TLS-PSK on loopback, three times: kill -9 the primary,
# promote the secondary, write there, restart the old primary; it must
# come back as an up-to-date secondary promptly.  On loopback libnbd can
# get through a whole TLS negotiation inside its connect call; the
# daemon used to wait for an event that never came, so heartbeats, the
# peer-bitmap read and the mirror's connection each stalled until a
# timeout (resyncs took 5 to 45 s instead of a quarter of a second).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"

make_psk "$TESTDIR/keys.psk" pair
declare -A port=([a]=$(free_port) [b]=$(free_port))
member () {   # member NAME ROLE
  local other=a
  [ "$1" = a ] && other=b
  start_mirrord "$1" --tls-psk "$TESTDIR/keys.psk" --nbd-listen "127.0.0.1:${port[$1]}" \
    --export "vm1=$TESTDIR/$1.img,role=$2,peer=nbds://pair@127.0.0.1:${port[$other]}/vm1,peer-timeout=1,mode=sync"
}
peer_down () { [ "$(hfield "$1" 'e["peer"]["connected"]')" = False ]; }
is_secondary_uptodate () { [ "$(hfield "$1" 'e["role"] + "/" + e["disk"]')" = secondary/uptodate ]; }

truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
member a primary
member b secondary
poll 30 pair_in_sync a || fail "never in sync: $(hfield a e)"
old=a new=b
for round in 1 2 3; do
  qemu-io -f raw -c "write -P $round $((round * 4))M 1M" "$(uri $old vm1)" >/dev/null
  kill9_mirrord $old
  poll 10 peer_down $new || fail "round $round: $new never saw $old go"
  ctl $new promote vm1 >/dev/null
  qemu-io -f raw -c "write -P $((round + 10)) $((round * 4 + 32))M 1M" "$(uri $new vm1)" >/dev/null
  t0=$(date +%s%N)
  member $old primary          # configured primary; the generations say otherwise
  poll 30 is_secondary_uptodate $old || fail "round $round: $old never resynced: $(hfield $old e)"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "round $round: $old back as an up-to-date secondary in $ms ms"
  # A stall costs at least one peer timeout (1 s) per connection.
  [ "$ms" -lt 5000 ] || fail "round $round: failback took $ms ms (a connection stalled?)"
  poll 30 pair_in_sync $new || fail "round $round: not in sync: $(hfield $new e)"
  cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "round $round: images differ"
  t=$old old=$new new=$t
done
