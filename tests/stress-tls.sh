#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The TLS start-up stress campaign (issue 15 item 3; docs/ha.md "a 40 s
# stall over TLS"), run by hand, never in CI:
#
#   sudo STRESS_ROUNDS=100 tests/stress-tls.sh      (from a built tree:
#   top_builddir=build for a VPATH build)
#
# An HA pair in sync mode between two network namespaces, TLS-PSK, as
# in the cluster test, started and torn down STRESS_ROUNDS (100) times.
# Each round: both members start at once (the first sync over fresh TLS
# sessions both ways), then STRESS_RECONNECTS (3) reconnects, taken in
# turn: the secondary killed (-9) and started again, the link cut for
# peer-timeout + 1 s (both sides time out, then every connection is made afresh),
# the primary killed and started again.  A write goes in before each
# reconnect, so each resync has something to move.  Every heartbeat is
# a TLS start-up too (one-shot probes, ha/peer.h): the servers' debug
# log counts them all ("TLS up").
#
# Under load (STRESS_LOAD=1, the default): one `yes` per CPU and a
# dd writing and fsyncing 64 MiB at a time, both niced, for the whole run.
#
# Armed: both daemons run with -v; the event loop reports any callback
# that holds it for 1 s or more ("event loop held for"); a prober asks
# both control sockets for their status every 0.2 s and records the
# slowest answer (a frozen loop answers nothing); every start-up and
# reconnect is timed to "in sync".  A round that takes more than
# STRESS_SLOW (10) s to get in sync, any loop-held report, any TLS
# handshake failure or timed-out negotiation in a log, or a status
# answer slower than 5 s counts as a stall: that round's logs are kept
# under STRESS_KEEP (default: a directory named in the summary).
#
# STRESS_TBF=RATE (e.g. 40mbit) shapes both ends of the link with tc
# tbf, as test-ha-async-lag.sh does (two of the three sightings of the
# stall were on such a link); STRESS_DATA (8) MiB of data go on the
# primary's image first, so each first sync moves something.
#
# STRESS_TIME (seconds, 0 = no limit) bounds the run: no new round
# starts after it.  The summary is the campaign's figures; the exit
# status is 1 if a stall was seen.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version
: "${STRESS_ROUNDS:=100}" "${STRESS_RECONNECTS:=3}" "${STRESS_LOAD:=1}"
: "${STRESS_SLOW:=10}" "${STRESS_TIME:=0}" "${STRESS_PEER_TIMEOUT:=2}"
: "${STRESS_TBF:=}" "${STRESS_DATA:=8}"
: "${STRESS_KEEP:=$(mktemp -d /tmp/stress-tls-kept.XXXXXX)}"
START=$(date +%s)
ms () { echo $(( $(date +%s%N) / 1000000 )); }
note () { echo "[$(( $(date +%s) - START ))s] $*"; }
declare -A stat=([startups]=0 [reconnects]=0 [handshakes]=0 [stalls]=0
                 [max_sync_ms]=0 [max_reconnect_ms]=0 [max_held_ms]=0
                 [max_status_ms]=0 [sum_sync_ms]=0 [sum_reconnect_ms]=0
                 [max_handshake_ms]=0 [tls_failures]=0)
max_into () { [ "$2" -le "${stat[$1]}" ] || stat[$1]=$2; }

make_netns_pair str 233
make_psk "$TESTDIR/keys.psk" pair
truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
qemu-io -f raw -c "write -P 0x5a 0 ${STRESS_DATA}M" "$TESTDIR/a.img" >/dev/null
if [ -n "$STRESS_TBF" ]; then
  requires tc -V
  ip netns exec "$NA" tc qdisc add dev "$VA" root tbf rate "$STRESS_TBF" burst 32kbit latency 400ms
  ip netns exec "$NB" tc qdisc add dev "$VB" root tbf rate "$STRESS_TBF" burst 32kbit latency 400ms
fi
declare -A NSOF=([a]=$NA [b]=$NB) IPOF=([a]=$IPA [b]=$IPB) OTHER=([a]=b [b]=a)

if [ "$STRESS_LOAD" = 1 ]; then
  for _ in $(seq "$(nproc)"); do
    nice -n 10 yes >/dev/null &
    cleanup_fn "kill $! 2>/dev/null"
  done
  ( while :; do
      nice -n 10 dd if=/dev/zero of="$TESTDIR/dd.load" bs=1M count=64 conv=fsync status=none
    done ) &
  cleanup_fn "kill $! 2>/dev/null"
fi

# member NAME ROLE: started inside its namespace, debug logging on.
member () {
  local n=$1 o=${OTHER[$1]}
  MIRRORD_WRAPPER="ip netns exec ${NSOF[$n]}" start_mirrord "$n" -v \
    --tls-psk "$TESTDIR/keys.psk" --nbd-listen "${IPOF[$n]}:10809" \
    --export "vm1=$TESTDIR/$n.img,role=$2,peer=nbds://pair@${IPOF[$o]}:10809/vm1,peer-timeout=$STRESS_PEER_TIMEOUT,mode=sync"
}

# The prober: the slowest status answer of each second it saw, to
# $TESTDIR/status.ms (one line per answer over 1 s).
prober () {
  local n t0 t1
  while :; do
    for n in a b; do
      [ -S "$TESTDIR/$n.ctl" ] || continue
      t0=$(ms)
      timeout 60 "$MIRRORCTL" -s "$TESTDIR/$n.ctl" status >/dev/null 2>&1 || :
      t1=$(ms)
      [ $((t1 - t0)) -lt 1000 ] || echo "$n $((t1 - t0))" >> "$TESTDIR/status.ms"
    done
    sleep 0.2
  done
}
prober &
cleanup_fn "kill $! 2>/dev/null"

# in_sync NAME: pair_in_sync, but a status that does not come in 10 s
# fails (and shows in the prober's figures) instead of hanging the run.
in_sync () {
  local j
  j=$(timeout 10 "$MIRRORCTL" -s "$TESTDIR/$1.ctl" --json status vm1) || return 1
  [ "$(printf '%s' "$j" | $PY -c 'import json,sys; e=json.load(sys.stdin)["exports"][0]; print(e["peer"]["connected"] and e["disk"] == "uptodate" and e["peer"]["disk"] == "uptodate" and e["peer"]["generation"]["current"] == e["generation"]["current"])')" = True ]
}

# sync_time NAME: ms until NAME's pair is in sync ("" if not in 60 s).
sync_time () {
  local t0
  t0=$(ms)
  poll 60 in_sync "$1" || return 1
  echo $(( $(ms) - t0 ))
}

# The longest server-side TLS handshake in a debug log (ms from the
# connection's accept to "TLS up" or its failure; midnight ignored).
handshake_ms () {
  awk '
    function t(s) { split(s, f, ":"); return (f[1] * 3600 + f[2] * 60 + f[3]) * 1000 }
    / new connection$/ { start[$3] = t($1) }
    /: TLS up, |: TLS handshake failed/ && ($3 in start) {
      d = t($1) - start[$3]; if (d > max) max = d; delete start[$3] }
    END { print int(max) }'
}

# harvest NAME: NAME's log (about to be replaced by a restart) into
# the round's log for NAME, and its figures into the totals.
harvest () {
  local n=$1 held bad hs
  [ -f "$TESTDIR/$n.log" ] || return 0
  stat[handshakes]=$(( stat[handshakes] + $(grep -c "TLS up" "$TESTDIR/$n.log" || :) ))
  held=$(sed -n 's/.*event loop held for \([0-9]*\) ms.*/\1/p' "$TESTDIR/$n.log" | sort -n | tail -1)
  [ -z "$held" ] || { max_into max_held_ms "$held"; round_bad=1; }
  # TLS failures come with every kill (a client gone mid-handshake);
  # counted, but the stall is a slow handshake, timed below.
  bad=$(grep -cE "TLS handshake failed|negotiation timed out" "$TESTDIR/$n.log" || :)
  stat[tls_failures]=$(( stat[tls_failures] + bad ))
  hs=$(handshake_ms < "$TESTDIR/$n.log")
  max_into max_handshake_ms "$hs"
  [ "$hs" -lt 5000 ] || { note "round $r: $n: a TLS handshake took $hs ms"; round_bad=1; }
  cat "$TESTDIR/$n.log" >> "$TESTDIR/$n.round.log"
  rm -f "$TESTDIR/$n.log"
}

# Ends round R: both members stopped, the figures taken, the logs kept
# if the round stalled.
end_round () {
  local n worst
  for n in a b; do _kill_mirrord $n; _mirrord_pid[$n]=; harvest $n; done
  if [ -s "$TESTDIR/status.ms" ]; then
    worst=$(cut -d' ' -f2 "$TESTDIR/status.ms" | sort -n | tail -1)
    max_into max_status_ms "$worst"
    [ "$worst" -lt 5000 ] || round_bad=1
    : > "$TESTDIR/status.ms"
  fi
  if [ "$round_bad" = 1 ]; then
    stat[stalls]=$(( stat[stalls] + 1 ))
    mkdir -p "$STRESS_KEEP/round-$r"
    cp "$TESTDIR"/a.round.log "$TESTDIR"/b.round.log "$STRESS_KEEP/round-$r/"
    note "round $r: STALL (logs in $STRESS_KEEP/round-$r)"
  fi
  rm -rf "$TESTDIR/a.state" "$TESTDIR/b.state" "$TESTDIR"/*.round.log
}

reconnect () {   # reconnect KIND
  case $1 in
    secondary) kill9_mirrord b; harvest b; member b secondary ;;
    primary)   kill9_mirrord a; harvest a; member a primary ;;
    link)
      ip -n "$NB" link set "$VB" down
      sleep $((STRESS_PEER_TIMEOUT + 1))   # the outage itself, not a wait for readiness
      ip -n "$NB" link set "$VB" up ;;
  esac
}

kinds=(secondary link primary)
r=0
while [ $r -lt "$STRESS_ROUNDS" ]; do
  [ "$STRESS_TIME" -eq 0 ] || [ $(( $(date +%s) - START )) -lt "$STRESS_TIME" ] || break
  r=$((r + 1)) round_bad=0
  member a primary
  member b secondary
  stat[startups]=$(( stat[startups] + 1 ))
  if t=$(sync_time a); then
    max_into max_sync_ms "$t"; stat[sum_sync_ms]=$(( stat[sum_sync_ms] + t ))
    [ "$t" -lt $((STRESS_SLOW * 1000)) ] || round_bad=1
  else
    note "round $r: the pair never got in sync"; round_bad=1
  fi
  for ((k = 0; k < STRESS_RECONNECTS; k++)); do
    kind=${kinds[$(( (r + k) % 3 ))]}
    qemu-io -f raw -c "write -P $((r % 250)) $(( (k % 8) * 4 ))M 1M" "$(uri a vm1)" >/dev/null 2>&1 || :
    reconnect "$kind"
    stat[reconnects]=$(( stat[reconnects] + 1 ))
    if t=$(sync_time a); then
      max_into max_reconnect_ms "$t"; stat[sum_reconnect_ms]=$(( stat[sum_reconnect_ms] + t ))
      [ "$t" -lt $((STRESS_SLOW * 1000)) ] || { note "round $r: $kind reconnect took $t ms"; round_bad=1; }
    else
      note "round $r: no sync after a $kind reconnect"; round_bad=1
    fi
  done
  end_round
  [ $((r % 10)) -ne 0 ] || note "$r rounds: ${stat[handshakes]} TLS handshakes, ${stat[stalls]} stalls"
done

echo "==> stress-tls: $r rounds in $(( $(date +%s) - START )) s, load ${STRESS_LOAD}, link ${STRESS_TBF:-unshaped}"
echo "start-ups ${stat[startups]} (pair), reconnects ${stat[reconnects]}, TLS handshakes (server side) ${stat[handshakes]}"
echo "start-up to in sync: max ${stat[max_sync_ms]} ms, mean $(( stat[sum_sync_ms] / (stat[startups] > 0 ? stat[startups] : 1) )) ms"
echo "reconnect to in sync: max ${stat[max_reconnect_ms]} ms, mean $(( stat[sum_reconnect_ms] / (stat[reconnects] > 0 ? stat[reconnects] : 1) )) ms"
echo "longest loop hold reported: ${stat[max_held_ms]} ms (0: none over 1 s); slowest status answer over 1 s: ${stat[max_status_ms]} ms (0: none)"
echo "slowest server-side TLS handshake: ${stat[max_handshake_ms]} ms; TLS handshake failures logged (clients killed mid-handshake): ${stat[tls_failures]}"
echo "stalls: ${stat[stalls]}${stat[stalls]:+ (kept in $STRESS_KEEP)}"
[ "${stat[stalls]}" -eq 0 ] && rmdir "$STRESS_KEEP" 2>/dev/null
[ "${stat[stalls]}" -eq 0 ]
