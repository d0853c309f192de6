#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The soak and fault campaign (make check-soak; docs/soak.md), run by
# hand: an HA pair in sync mode under FUA writes (tests/ha-writer.py
# counts what was acknowledged), through three kinds of faults.
#
#   kill     SOAK_CYCLES (100) times: the primary is killed with kill -9
#            after a random stretch of writes; the secondary is promoted
#            and must hold every acknowledged write; the dead one comes
#            back, resyncs as secondary, and the images must be equal.
#            The roles alternate.
#   netsplit SOAK_PARTITIONS (5) times, between two network namespaces
#            (TCP, TLS-PSK): nftables drops everything between them while
#            a writer runs, then the partition heals, the writer still
#            running; the secondary must hold every acknowledged write
#            once resynced, images equal.  Every other cycle runs over a
#            link slowed by tc tbf (40 Mbit/s).
#   eio      SOAK_EIO (8) times: strace injects EIO into the primary's
#            bitmap writes (pwrite64, fdatasync) or image writes
#            (io_submit, pwritev2)
#            while a writer keeps going through the failures; the daemon
#            must report the errors, every acknowledged write must be
#            on both disks, and the images equal once the pair resyncs.
#
# SOAK_TIME (seconds, 0 = no limit) bounds the whole run: once it has
# passed, no new cycle starts.  SOAK_PHASES picks phases ("kill
# netsplit eio").  The summary at the end is the campaign's result; the
# exit status is 1 if any write was lost or any check failed.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version
requires $PY -c 'import nbd'
WRITER="$top_srcdir/tests/ha-writer.py"
: "${SOAK_CYCLES:=100}" "${SOAK_PARTITIONS:=5}" "${SOAK_EIO:=8}" "${SOAK_TIME:=0}"
: "${SOAK_PHASES:=kill netsplit eio}"
SIZE=$((512 << 20))
AREA=$((2 << 20))              # each cycle writes its own 2 MiB
START=$(date +%s)

declare -A stat=()
bump () {
  local v=${2:-1}
  [[ $v =~ ^[0-9]+$ ]] || v=0   # a status field that is null
  stat[$1]=$(( ${stat[$1]:-0} + v ))
}
note () { echo "[$(( $(date +%s) - START ))s] $*"; }
problem () { bump problems; note "PROBLEM: $*"; }
time_left () { [ "$SOAK_TIME" -eq 0 ] || [ $(( $(date +%s) - START )) -lt "$SOAK_TIME" ]; }
ms () { echo $(( $(date +%s%N) / 1000000 )); }
# Cycle N's area and first write number.  Kill cycles count from 0,
# partitions from 1000, EIO cycles from 2000: their areas (232 and 208
# on) stay apart for up to 208 kill cycles, so EIO cycles write fresh
# granules (the bitmap must record them), and write numbers never
# repeat, so verify cannot take an older cycle's data for this one's.
area_of () { echo $(( ($1 % (SIZE / AREA)) * AREA )); }
gen0_of () { echo $(( $1 * 1000000 )); }

# verify NAME LOG: the acknowledged writes in LOG read back from NAME;
# adds to the acked and lost counts.
verify () {
  local out acked lost
  out=$($PY "$WRITER" verify "$(uri "$1" vm1)" "$2") || :
  acked=$(sed -n 's/^acknowledged \([0-9]*\), lost \([0-9]*\)$/\1/p' <<<"$out" | head -1)
  lost=$(sed -n 's/^acknowledged \([0-9]*\), lost \([0-9]*\)$/\2/p' <<<"$out" | head -1)
  if [ -z "$acked" ]; then
    problem "verify on $1 failed: $out"
    return 1
  fi
  bump "${3:-kill}_acked" "$(grep -c '^[0-9]' "$2" || :)"
  bump "${3:-kill}_blocks" "$acked"
  bump "${3:-kill}_lost" "$lost"
  [ "$lost" -eq 0 ] || { problem "$lost acknowledged writes lost on $1: $out"; return 1; }
}

# Once in sync and idle, the two images are equal.
compare () {
  if cmp -s "$TESTDIR/$1.img" "$TESTDIR/$2.img"; then
    bump "${3}_compared"
  else
    problem "images differ after $3 cycle $4: $(cmp "$TESTDIR/$1.img" "$TESTDIR/$2.img" 2>&1 | head -1)"
  fi
}

acked_at_least () { [ "$(grep -c '^[0-9]' "$1" 2>/dev/null)" -ge "$2" ]; }
peer_gone () { [ "$(hfield "$1" 'e["peer"]["connected"]')" = False ]; }
is_resynced_secondary () { [ "$(hfield "$1" 'e["role"] + "/" + e["disk"]')" = secondary/uptodate ]; }

# ---- kill -9 of the primary under sync-mode writes ----

kill_cycle () {
  local i=$1 p=$2 s=$3 log=$TESTDIR/acked-kill-$1 writer t0 t1
  "$PY" "$WRITER" write "$(uri "$p" vm1)" "$log" $AREA "$(area_of "$i")" 0 \
    "$(gen0_of "$i")" >/dev/null 2>&1 &
  writer=$!
  poll 30 acked_at_least "$log" 1 || { problem "cycle $i: no write acknowledged"; kill $writer; return 1; }
  # The fault's timing is the experiment: 0 to 1.5 s of writes more.
  local r=$(( RANDOM % 1500 ))
  sleep "$(( r / 1000 )).$(printf %03d $(( r % 1000 )))"
  kill9_mirrord "$p"
  wait $writer 2>/dev/null || :
  t0=$(ms)
  poll 20 peer_gone "$s" || { problem "cycle $i: $s did not notice $p died"; return 1; }
  ctl "$s" promote vm1 >/dev/null || { problem "cycle $i: promote failed"; return 1; }
  t1=$(ms)
  bump failover_ms $(( t1 - t0 ))
  verify "$s" "$log" kill || :
  # The dead primary returns, finds the newer generation, resyncs.
  start_pair_member "$p" primary ",mode=sync"
  poll 60 is_resynced_secondary "$p" || { problem "cycle $i: $p did not resync: $(hfield "$p" e)"; return 1; }
  poll 60 pair_in_sync "$s" || { problem "cycle $i: not in sync: $(hfield "$s" e)"; return 1; }
  bump resync_bytes "$(hfield "$s" 'e["mirror"]["total_bytes"]')"
  bump resync_ms $(( $(ms) - t1 ))
  compare "$p" "$s" kill "$i"
  bump kill_cycles
}

phase_kill () {
  local i p=a s=b t
  truncate -s $SIZE "$TESTDIR/a.img" "$TESTDIR/b.img"
  start_pair_member a primary ",mode=sync"
  start_pair_member b secondary ",mode=sync"
  poll 60 pair_in_sync a || fail "never in sync: $(hfield a e)"
  for ((i = 0; i < SOAK_CYCLES && ${stat[problems]:-0} < 5; i++)); do
    time_left || break
    kill_cycle "$i" "$p" "$s" || :
    t=$p; p=$s; s=$t
    (( (i + 1) % 10 )) || note "kill: $((i + 1)) cycles, ${stat[kill_acked]:-0} writes acknowledged, ${stat[kill_lost]:-0} lost"
  done
  PRIMARY=$p SECONDARY=$s      # the eio phase goes on with this pair
}

# ---- partitions between two network namespaces ----

partition () {
  ip netns exec "$NB" nft -f - <<NFT
table inet soak {
  chain in { type filter hook input priority 0; ip saddr $IPA drop; }
  chain out { type filter hook output priority 0; ip daddr $IPA drop; }
}
NFT
}
heal () { ip netns exec "$NB" nft delete table inet soak; }

# Odd partition cycles also run over a slow link: tc's token bucket
# (tbf; netem is not available) on b's side, both ways.
slow_link () {
  fast_link                     # a cycle that failed may have left one
  ip netns exec "$NB" tc qdisc add dev "$VB" root tbf rate 40mbit burst 64kb latency 200ms \
    && ip netns exec "$NA" tc qdisc add dev "$VA" root tbf rate 40mbit burst 64kb latency 200ms
}
fast_link () {
  ip netns exec "$NB" tc qdisc del dev "$VB" root 2>/dev/null || :
  ip netns exec "$NA" tc qdisc del dev "$VA" root 2>/dev/null || :
}

netsplit_cycle () {
  local i=$1 log=$TESTDIR/acked-split-$1 writer n
  if (( i % 2 )); then
    slow_link && bump split_slow || note "split $i: tc tbf unavailable"
  fi
  "$PY" "$WRITER" write "$(uri c vm1)" "$log" $AREA "$(area_of "$i")" 0 \
    "$(gen0_of "$i")" >/dev/null 2>&1 &
  writer=$!
  poll 30 acked_at_least "$log" 50 || { problem "split $i: writer made no progress"; kill $writer; return 1; }
  partition
  poll 20 peer_gone d || { problem "split $i: d did not notice the partition"; heal; kill $writer; return 1; }
  n=$(grep -c '^[0-9]' "$log")
  # Writes go on during the partition (within c's peer-timeout).
  poll 20 acked_at_least "$log" $((n + 100)) || problem "split $i: writes hang during the partition"
  heal
  poll 60 pair_in_sync c || problem "split $i: no resync after healing: $(hfield c e)"
  kill $writer; wait $writer 2>/dev/null || :
  poll 60 pair_in_sync c || { problem "split $i: not in sync: $(hfield c e)"; return 1; }
  fast_link
  verify d "$log" split || :
  compare c d split "$i"
  bump split_cycles
}

phase_netsplit () {
  local i
  if ! ip netns list >/dev/null 2>&1 || ! command -v nft >/dev/null || [ "$(id -u)" != 0 ]; then
    note "netsplit: skipped (needs root, ip netns and nft)"
    return 0
  fi
  make_netns_pair
  truncate -s $SIZE "$TESTDIR/c.img" "$TESTDIR/d.img"
  make_psk "$TESTDIR/keys.psk" pair
  netns_member c primary "$NA" "$IPA" "$IPB" ,mode=sync
  netns_member d secondary "$NB" "$IPB" "$IPA" ,mode=sync
  poll 60 pair_in_sync c || fail "netns pair never in sync: $(hfield c e)"
  for ((i = 0; i < SOAK_PARTITIONS; i++)); do
    time_left || break
    netsplit_cycle "$((1000 + i))" || :
  done
  note "netsplit: ${stat[split_cycles]:-0} partitions, ${stat[split_acked]:-0} writes acknowledged, ${stat[split_lost]:-0} lost"
  stop_mirrord c
  stop_mirrord d
}

# ---- EIO injected into the primary's writes ----

# Which system calls fail, and when: the bitmap's block writes (every
# one, or every other) and its fdatasync (on a worker thread); the
# image's writes, through io_submit (O_DIRECT) and, for FUA writes the
# kernel's aio refused, pwritev2 on a worker thread.
EIO_FAULTS=(
  "pwrite64:error=EIO"
  "fdatasync:error=EIO:when=2+2"
  "io_submit,pwritev2:error=EIO:when=3+4"
  "pwrite64:error=EIO:when=2+2"
)

eio_cycle () {
  local i=$1 p=$2 s=$3 fault=${EIO_FAULTS[$(( $1 % ${#EIO_FAULTS[@]} ))]}
  local log=$TESTDIR/acked-eio-$1 pid spid out failed errs injected
  local sc=${fault%%:*}
  pid=$(mirrord_pid "$p")
  strace -qq -f -p "$pid" -e trace="$sc" -e inject="$fault" -o "$TESTDIR/strace-$i.out" &
  spid=$!
  poll 20 pid_traced "$pid" || { problem "eio $i: strace did not attach"; kill $spid; return 1; }
  errs=$(grep -c '\[error\]' "$TESTDIR/$p.log" || :)
  out=$("$PY" "$WRITER" write "$(uri "$p" vm1)" "$log" $AREA "$(area_of "$i")" 3 \
    "$(gen0_of "$i")" 2>&1) || problem "eio $i: writer: $out"
  kill $spid; wait $spid 2>/dev/null || :
  grep -m3 INJECTED "$TESTDIR/strace-$i.out" >&2 || :
  poll 20 pid_untraced "$pid" || problem "eio $i: strace did not detach"
  failed=$(sed -n 's/.*failed \([0-9]*\)$/\1/p' <<<"$out")
  injected=$(grep -c 'INJECTED' "$TESTDIR/strace-$i.out" || :)
  bump eio_injected "$injected"
  bump eio_failed_writes "${failed:-0}"
  # An injected failure the client saw must be in the daemon's log.
  if [ "${failed:-0}" -gt 0 ] && [ "$(grep -c '\[error\]' "$TESTDIR/$p.log" || :)" -le "$errs" ]; then
    problem "eio $i ($fault): $failed writes failed but the daemon logged no error"
  fi
  [ "${failed:-0}" -gt 0 ] && bump eio_cycles_with_failures
  # The daemon still works (a write outside every cycle's area), and
  # both disks hold what was acknowledged.
  qemu-io -f raw -c "write -P 0x5a $((SIZE - 4096)) 4k" "$(uri "$p" vm1)" >/dev/null 2>&1 \
    || problem "eio $i: writes fail after the fault is gone"
  poll 60 pair_in_sync "$p" || { problem "eio $i: not in sync after the faults: $(hfield "$p" e)"; return 1; }
  verify "$p" "$log" eio || :
  verify "$s" "$log" eio_secondary || :
  compare "$p" "$s" eio "$i"
  bump eio_cycles
  note "eio $i ($fault): $injected injected; $out"
}

phase_eio () {
  local i
  requires strace -V
  if [ -z "${PRIMARY:-}" ]; then
    truncate -s $SIZE "$TESTDIR/a.img" "$TESTDIR/b.img"
    start_pair_member a primary ",mode=sync"
    start_pair_member b secondary ",mode=sync"
    PRIMARY=a SECONDARY=b
  fi
  poll 60 pair_in_sync "$PRIMARY" || fail "not in sync before the eio phase: $(hfield "$PRIMARY" e)"
  for ((i = 0; i < SOAK_EIO; i++)); do
    time_left || break
    eio_cycle "$((2000 + i))" "$PRIMARY" "$SECONDARY" || :
  done
}

for phase in $SOAK_PHASES; do
  note "phase $phase"
  "phase_$phase"
done

summary () {
  local k=${stat[kill_cycles]:-0}
  echo "==== soak summary ($(( $(date +%s) - START )) s)"
  echo "kill -9 cycles:        $k of $SOAK_CYCLES (images equal after ${stat[kill_compared]:-0})"
  echo "  writes acknowledged: ${stat[kill_acked]:-0} (latest of ${stat[kill_blocks]:-0} blocks checked), lost: ${stat[kill_lost]:-0}"
  [ "$k" -eq 0 ] || echo "  failover (peer down noticed, promoted): mean $(( ${stat[failover_ms]:-0} / k )) ms;" \
    "resync: mean $(( ${stat[resync_ms]:-0} / k )) ms, $(( ${stat[resync_bytes]:-0} / k )) bytes"
  echo "partitions:            ${stat[split_cycles]:-0} of $SOAK_PARTITIONS (images equal after ${stat[split_compared]:-0};" \
    "${stat[split_slow]:-0} over a tbf-limited link)"
  echo "  writes acknowledged: ${stat[split_acked]:-0} (latest of ${stat[split_blocks]:-0} blocks checked), lost: ${stat[split_lost]:-0}"
  echo "EIO cycles:            ${stat[eio_cycles]:-0} of $SOAK_EIO (images equal after ${stat[eio_compared]:-0})"
  echo "  faults injected: ${stat[eio_injected]:-0}, writes failed: ${stat[eio_failed_writes]:-0}" \
    "(in ${stat[eio_cycles_with_failures]:-0} cycles)"
  echo "  writes acknowledged: ${stat[eio_acked]:-0} (latest of ${stat[eio_blocks]:-0} blocks checked), lost on the primary: ${stat[eio_lost]:-0}," \
    "on the secondary: ${stat[eio_secondary_lost]:-0}"
  echo "problems:              ${stat[problems]:-0}"
}
summary
[ "${stat[problems]:-0}" -eq 0 ] || exit 1
exit 0
