#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The mirrord demo, from a fresh Debian 12 machine: installs what is
# missing, builds mirrord and a test guest (a Debian cloud kernel and a
# busybox initramfs, tests/guest/), then tells one of two stories with
# the guest doing real I/O through mirrord under qemu-system-x86_64:
#
#   ./demo.sh            failover: a primary and a secondary in sync
#                        mode (TLS-PSK over TCP); the primary is killed with kill -9 under
#                        a writing guest, the secondary promoted, a
#                        guest on it verifies every acknowledged write;
#                        new writes there; the old primary returns and
#                        resyncs only what diverged
#   ./demo.sh migrate    live migration: the same pair, a guest writing
#                        through a is moved, running, to a QEMU on b
#                        (ctl/mirrord-migrate: QEMU's pre-copy, mirrord's
#                        hand-over at pre-switchover), then back to a;
#                        one boot, the roles move with it, the pair in
#                        sync after each hop; a verify boot finds every
#                        acknowledged write
#
# Every wait polls with a timeout; everything started is stopped at exit,
# and the work directory removed (kept with MIRRORD_DEMO_KEEP=1).
set -euo pipefail
srcdir=$(cd "$(dirname "$0")" && pwd)
cd "$srcdir"
mode=${1:-failover}
case $mode in
  failover|migrate) ;;
  *) echo "usage: $0 [failover|migrate]" >&2; exit 2 ;;
esac

tests/setup.sh deps demo                # only what the demo runs
tests/setup.sh build build --enable-werror CFLAGS="-O2 -g"
MIRRORD=$srcdir/build/mirrord/mirrord
PATH=$srcdir/build/ctl:$PATH           # mirrorctl
GUEST=$srcdir/build/tests/guest
tests/guest/build-guest.sh "$GUEST"

work=$(mktemp -d /tmp/mirrord-demo.XXXXXX)
declare -A pids=()
cleanup () {
  local name
  for name in "${!pids[@]}"; do
    kill -9 "${pids[$name]}" 2>/dev/null || :
    wait "${pids[$name]}" 2>/dev/null || :
  done
  # A migration's destination QEMU not adopted yet (mirrord-migrate
  # started it; interrupted): its pid file, if it is still that QEMU.
  local f pid
  for f in "$work"/*.pid; do
    [ -e "$f" ] && pid=$(cat "$f") || continue
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = qemu-system-x86 ] && kill -9 "$pid" 2>/dev/null || :
  done
  if [ -n "${MIRRORD_DEMO_KEEP:-}" ]; then
    echo "kept $work (daemons' logs, guests' consoles)"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$work"                              # short paths in what is shown

# Bold on a terminal; plain text into a file or a pipe.
if [ -t 1 ]; then
  bold () { printf '\033[1m%s\033[0m\n' "$*"; }
else
  bold () { printf '%s\n' "$*"; }
fi
step () { printf '\n'; bold "== $*"; }
show () { printf '$ %s\n' "$*"; "$@"; }
now_ms () { echo $(( $(date +%s%N) / 1000000 )); }
secs () { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }
# A size as mirrorctl prints it (B, then KiB, MiB, GiB with one decimal),
# so the demo's figures and mirrorctl's read alike.
mib () {
  awk -v b="$1" 'BEGIN { split("KiB MiB GiB TiB", u, " "); i = 0
    while (b >= 1024 && i < 4) { b /= 1024; i++ }
    if (i == 0) printf "%d B", b; else printf "%.1f %s", b, u[i] }'
}
die () { echo "demo: $*" >&2; exit 1; }

# poll TIMEOUT CMD...: retry CMD until it succeeds, or give up.
poll () {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

ctl () { local n=$1; shift; mirrorctl -s "$n.ctl" "$@"; }
# A TCP port free on 127.0.0.1 just now.
free_port () {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# field NAME PYEXPR: a field of vm1's status (e = the export).
field () {
  ctl "$1" --json status vm1 | python3 -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($2)"
}

# daemon NAME: start mirrord with $work/NAME.conf, wait until it answers.
daemon () {
  local name=$1
  "$MIRRORD" -f -c "$work/$name.conf" >>"$work/$name.log" 2>&1 &
  pids[$name]=$!
  poll 30 ctl "$name" status || { tail "$work/$name.log"; die "mirrord $name did not start"; }
}
kill9 () { kill -9 "${pids[$1]}"; wait "${pids[$1]}" 2>/dev/null || :; unset "pids[$1]"; }
sigterm () {
  local st=0
  kill -TERM "${pids[$1]}"; wait "${pids[$1]}" || st=$?
  unset "pids[$1]"
  echo "mirrord $1 exited with status $st"
}

# qemu_argv NAME SOCKET KERNEL-ARGS [DRIVE-OPTS]: in argv, the test
# guest on export vm1 behind SOCKET, its serial console to
# $work/NAME.console.  Both QEMUs of a live migration must describe the
# same machine: they are both made here.  no_timer_check: on a loaded
# host the TCG guest's timer can look broken to the kernel's IO-APIC
# check, which then panics in early boot.
qemu_argv () {
  local name=$1 sock=$2 args=$3 opts=${4:-}
  argv=(qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -display none
    -no-reboot -m 256 -serial "file:$work/$name.console"
    -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img"
    -append "console=ttyS0 quiet panic=-1 no_timer_check $args"
    -blockdev "driver=nbd,node-name=d0,server.type=unix,server.path=$sock,export=vm1$opts"
    -device virtio-blk-pci,drive=d0)
}
# guest NAME SOCKET KERNEL-ARGS [DRIVE-OPTS]: boot it in the background
# ($QMP=1: with a QMP monitor on $work/NAME.qmp).
guest () {
  local name=$1 sock=$2 args=$3 opts=${4:-} argv
  qemu_argv "$@"
  [ -z "${QMP:-}" ] || argv+=(-qmp "unix:$work/$name.qmp,server=on,wait=off")
  : > "$work/$name.console"
  "${argv[@]}" </dev/null >"$work/$name.qemu.log" 2>&1 &
  pids[$name]=$!
  echo "guest $name: qemu-system-x86_64 -accel tcg -kernel vmlinuz -initrd initrd.img"
  echo "  -append '... $args' -blockdev driver=nbd,server.path=${sock#$work/},export=vm1$opts${QMP:+ -qmp unix:$name.qmp}"
}
# A last line without its newline was cut short by a kill: not counted.
lines () {
  local f=$work/$1.console
  if [ -n "$(tail -c 1 "$f")" ]; then sed '$d' "$f"; else cat "$f"; fi \
    | tr -d '\r' | grep "^E2E $2\b" || :
}
acks () { lines "$1" ACK | wc -l; }
acked_at_least () { [ "$(acks "$1")" -ge "$2" ]; }
gone () { ! kill -0 "${pids[$1]}" 2>/dev/null; }
# wait_guest NAME: until it powered off; its job must have succeeded.
wait_guest () {
  poll 300 gone "$1" || die "guest $1 did not finish: $(tail -3 "$work/$1.console")"
  wait "${pids[$1]}" 2>/dev/null || :; unset "pids[$1]"
  lines "$1" DONE | grep -q status=ok || { tail "$work/$1.console"; die "guest $1 failed"; }
}
kill_guest () { kill9 "$1"; }
check_acked () {
  awk -f "$srcdir/tests/guest/check-acked.awk" <(lines "$1" ACK) <(lines "$2" BLOCK)
}
# explain_counts WRITER VERIFIER: the verifier counts blocks that hold
# data, the writer the writes it saw acknowledged; they differ when a
# write was in flight at the kill (on disk, its ACK line never printed)
# or a block was written more than once.
explain_counts () {
  local written blocks
  written=$(lines "$2" VERIFY | sed -n 's/.*written=\([0-9]*\).*/\1/p' | tail -1)
  blocks=$(lines "$1" ACK | awk '{ print $3 }' | sort -u | wc -l)
  echo "(written=$written: blocks of the set holding the guest's data; $blocks blocks had a write acknowledged."
  if [ "${written:-0}" -gt "$blocks" ]; then
    echo " The $((written - blocks)) more were in flight when the guest was killed: on disk, never acknowledged.)"
  else
    echo " Every one of them reads back at least as new as acknowledged.)"
  fi
}

SIZE=256M
SIZE_TEXT=$(mib $((256 << 20)))
SEED="mirrord.seed=$$"                   # the guests' block set (tests/guest/init)
JOB="$SEED mirrord.count=256"

# make_pair: a (primary) and b (secondary) in sync mode, as on two hosts:
# the pair talks NBD over TCP with TLS-PSK (one key file for both), each
# host's guests use its unix socket.  Writes the images and configs.
make_pair () {
  psktool -u pair -p keys.psk >/dev/null
  declare -A port=([a]=$(free_port) [b]=$(free_port))
  [ "${port[a]}" != "${port[b]}" ] || port[b]=$(free_port)
  truncate -s $SIZE "$work/a.img" "$work/b.img"
  # Some data already on a's disk (16 MiB at 128 MiB, past the guests'
  # blocks), so the first sync has something to copy besides holes.
  head -c 16M /dev/urandom | dd of=a.img bs=1M seek=128 conv=notrunc status=none
  echo "a.img: $SIZE_TEXT sparse, 16.0 MiB of data at 128.0 MiB; b.img: $SIZE_TEXT empty"
  local n other role
  for n in a b; do
    [ $n = a ] && other=b role=primary || { other=a; role=secondary; }
    cat > "$work/$n.conf" <<CONF
[mirrord]
nbd-socket = $work/$n.nbd
nbd-listen = 127.0.0.1:${port[$n]}
tls-psk = $work/keys.psk
control = $work/$n.ctl
state-dir = $work/$n.state

[export vm1]
path = $work/$n.img
role = $role
peer = nbds://pair@127.0.0.1:${port[$other]}/vm1
mode = sync
peer-timeout = 1
CONF
  done
  echo "# $work/a.conf (b.conf is the mirror image: role = secondary, peer = a)"
  cat "$work/a.conf"
}
# start_pair: b, then a; once in sync, T_SYNC (ms) and SYNC_DATA (bytes
# sent as data: holes are not) say what the first sync took.
start_pair () {
  local t0 sync_total
  t0=$(now_ms)
  daemon b
  daemon a
  poll 120 in_sync || die "the pair did not get in sync: $(ctl a status vm1)"
  T_SYNC=$(( $(now_ms) - t0 ))
  sync_total=$(field a 'e["mirror"]["total_bytes"]')
  SYNC_DATA=$(field b 'e["bytes_written"]')
  echo "initial sync: $(mib "$sync_total") in $(secs $T_SYNC); data sent $(mib "$SYNC_DATA") (holes are not sent as data)"
}
# in_sync NAME: connected, both sides uptodate at the same generation.
in_sync () { [ "$(field "${1:-a}" 'e["peer"]["connected"] and e["disk"] == "uptodate" and e["peer"]["disk"] == "uptodate" and e["peer"]["generation"]["current"] == e["generation"]["current"]')" = True ]; }

failover () {
  step "1. Two mirrord daemons on this machine: a (primary) and b (secondary), sync mode"
  make_pair
  start_pair
  step "2. A guest boots on a and keeps writing (each block reported only after O_DIRECT + fsync)"
  guest w1 "$work/a.nbd" "mirrord.mode=writeloop $JOB"
  t0=$(now_ms)
  poll 300 acked_at_least w1 100 || die "the guest wrote nothing: $(tail -3 "$work/w1.console")"
  echo "the guest's console:"; lines w1 READY; lines w1 ACK | head -3; echo "  ..."
  echo "$(acks w1) writes acknowledged $(secs $(( $(now_ms) - t0 ))) after boot started"
  show mirrorctl -s a.ctl status vm1

  step "3. Host a dies: kill -9 its mirrord (and its VM with it)"
  local t_kill acked
  t_kill=$(now_ms)
  kill9 a
  kill_guest w1
  acked=$(acks w1)
  echo "the guest had $acked writes acknowledged ($(mib $((acked * 4096)))); the last ones:"
  lines w1 ACK | tail -2

  step "4. b notices (peer-timeout 1 s) and is promoted"
  peer_down () { [ "$(field b 'e["peer"]["connected"]')" = False ]; }
  poll 30 peer_down || die "b did not notice a died"
  local t_down t_prom
  t_down=$(( $(now_ms) - t_kill ))
  show mirrorctl -s b.ctl promote vm1
  t_prom=$(( $(now_ms) - t_kill ))
  show mirrorctl -s b.ctl status vm1
  echo "failover: peer loss seen after $(secs $t_down), b primary $(secs $t_prom) after the kill"

  step "5. A guest boots on b and reads back every block"
  t0=$(now_ms)
  guest v1 "$work/b.nbd" "mirrord.mode=verify $JOB" ,read-only=on
  wait_guest v1
  lines v1 VERIFY
  check_acked w1 v1 || die "acknowledged writes were lost"
  explain_counts w1 v1
  echo "verified in $(secs $(( $(now_ms) - t0 ))) (boot included): every acknowledged byte is on b"
  local t_service=$(( $(now_ms) - t_kill ))

  step "6. Life goes on on b: a guest rewrites 32 blocks (generation 1000)"
  guest w2 "$work/b.nbd" "mirrord.mode=write $SEED mirrord.count=32 mirrord.gen=1000"
  wait_guest w2
  echo "$(acks w2) writes acknowledged on b while a is down"
  echo "b's dirty bitmap: $(mib "$(field b 'e["dirty_bytes"]')") to resync"

  step "7. a returns with its old config (role = primary): it sees b's newer generation"
  t0=$(now_ms)
  daemon a
  a_resynced () { [ "$(field a 'e["role"] + "/" + e["disk"]')" = secondary/uptodate ] && in_sync; }
  # Generous: over TLS the peer link sometimes flaps for a while right
  # after a's restart (heartbeats and the bitmap fetch time out and are
  # retried), which can stretch this from well under a second to tens.
  poll 180 a_resynced || die "a did not resync: $(ctl a status vm1)"
  local t_resync=$(( $(now_ms) - t0 )) moved sent
  grep -h "newer generation" "$work/a.log" | tail -1
  echo "(a generation is a random id a side starts when it is promoted: b's promotion"
  echo " started a new one, and b's bitmap counts from a's last one, so a knows that b"
  echo " holds newer data and takes only the granules dirty on either side since)"
  moved=$(field b 'e["mirror"]["total_bytes"]')
  sent=$(field a 'e["bytes_written"]')       # a's counters start at its restart
  show mirrorctl -s a.ctl status vm1
  echo "resync: $(mib "$moved") of $SIZE_TEXT in $(secs $t_resync): the granules dirty on a or b since they diverged;"
  echo "  $(mib "$sent") of it data (the rest of those granules reads as zeroes: no data sent for it)"
  show mirrorctl -s b.ctl verify vm1

  step "8. Shut down (SIGTERM) and compare the images"
  sigterm a
  sigterm b
  show cmp a.img b.img
  echo "identical"

  step "Figures"
  printf '  %-34s %s\n' \
    "initial sync ($SIZE_TEXT, sparse)" "$(secs $T_SYNC), $(mib "$SYNC_DATA") of data sent" \
    "guest writes acknowledged on a" "$acked ($(mib $((acked * 4096))))" \
    "acknowledged writes lost" "0" \
    "kill -9 -> b promoted" "$(secs $t_prom)" \
    "kill -9 -> verified on b" "$(secs $t_service) (guest boot included)" \
    "failback resync" "$(mib "$moved") of $SIZE_TEXT in $(secs $t_resync), $(mib "$sent") of data"
}

# dest_cmd NAME SOCKET KERNEL-ARGS: in DEST, the shell command that
# starts a live migration's destination QEMU (the same machine, with a
# QMP monitor, waiting: -incoming defer -S) for mirrord-migrate
# --dst-exec, which starts it once the destination's window is open.
# It writes its pid to $work/NAME.pid (for the clean-up).
dest_cmd () {
  local name=$1 argv q
  qemu_argv "$@"
  argv+=(-qmp "unix:$work/$name.qmp,server=on,wait=off" -incoming defer -S)
  : > "$work/$name.console"
  printf -v q ' %q' "${argv[@]}"
  printf -v DEST 'echo $$ > %q; exec%s </dev/null >%q 2>&1' \
    "$work/$name.pid" "$q" "$work/$name.qemu.log"
}
# hop N FROM TO GS GD: live-migrate the running guest (QEMU GS, on
# FROM's export) to a QEMU GD on TO's export; the figures of hop N in
# $work/hopN.json.
hop () {
  local n=$1 from=$2 to=$3 gs=$4 gd=$5 last
  dest_cmd "$gd" "$work/$to.nbd" "mirrord.mode=writeloop $JOB"
  echo "destination QEMU ($gd): the same command line, its disk $to's export vm1,"
  echo "  plus -qmp unix:$gd.qmp -incoming defer -S (mirrord-migrate starts it in time)"
  echo "\$ mirrord-migrate --storage mirrord --export vm1 --src-control $from.ctl --dst-control $to.ctl \\"
  echo "    --src-qmp $gs.qmp --dst-qmp $gd.qmp --uri unix:mig$n.sock --dst-exec \"\$DEST_QEMU\" --json"
  if ! "$srcdir/ctl/mirrord-migrate" --storage mirrord --export vm1 \
       --src-control "$work/$from.ctl" --dst-control "$work/$to.ctl" \
       --src-qmp "$work/$gs.qmp" --dst-qmp "$work/$gd.qmp" \
       --uri "unix:$work/mig$n.sock" --dst-exec "$DEST" --timeout 240 --json \
       > "$work/hop$n.json" 2> "$work/hop$n.log"; then
    grep -v 'starting QEMU' "$work/hop$n.log"
    die "the migration $from -> $to failed"
  fi
  pids[$gd]=$(cat "$work/$gd.pid")
  # Its progress, the destination's long command line left out.
  grep -v 'starting QEMU' "$work/hop$n.log" | sed "s|$work/||g"
  poll 60 gone "$gs" || die "the source QEMU did not quit"
  wait "${pids[$gs]}" 2>/dev/null || :; unset "pids[$gs]"
  echo "the source QEMU quit; the roles moved with the guest:"
  printf '  %s: %s, %s: %s, generation %s\n' \
    "$to" "$(field "$to" 'e["role"]')" "$from" "$(field "$from" 'e["role"]')" \
    "$(field "$to" 'e["generation"]["current"]')"
  poll 60 in_sync "$to" || die "$to and $from not in sync after the hand-over: $(ctl "$to" status vm1)"
  echo "  $to and $from in sync again: $from is $to's in-sync secondary"
  last=$(acks "$gs")
  poll 300 acked_at_least "$gd" 10 || die "the guest stopped writing on $to: $(tail -3 "$work/$gd.console")"
  echo "the guest went on where it was (its counter, seq=, and uptime, up=, continue):"
  echo "  on $from ($gs): $(lines "$gs" ACK | tail -1)   <- its last write there ($last acknowledged)"
  echo "  on $to ($gd): $(lines "$gd" ACK | head -1)"
  echo "  READY lines (boots) on $gd's console: $(lines "$gd" READY | wc -l)"
  echo "hop: total $(hop_figure $n total_s), RAM $(hop_size $n ram_bytes), downtime $(hop_figure $n downtime_ms) (QEMU),"
  echo "  hand-over $(hop_figure $n handover_ms) (mirrord); disk data to $to: $(hop_size $n disk_bytes) (the guest's writes, replicated as they happened)"
}
# hop_figure N KEY: one figure of hop N ("%.2f s", "... ms", or bytes).
hop_figure () {
  python3 - "$work/hop$1.json" "$2" <<'PY'
import json, sys
f = json.load(open(sys.argv[1])); k = sys.argv[2]; v = f[k]
if v is None: print("n/a")
elif k == "total_s": print("%.2f s" % v)
elif k.endswith("_ms"): print("%.1f ms" % v if isinstance(v, float) else "%d ms" % v)
else: print(v)
PY
}
hop_size () { local v; v=$(hop_figure "$@"); if [ "$v" = n/a ]; then echo n/a; else mib "$v"; fi; }

migrate () {
  step "1. Two mirrord daemons on this machine: a (primary) and b (secondary), sync mode"
  make_pair
  start_pair

  step "2. The guest boots on a, with a QMP monitor, and keeps writing"
  QMP=1 guest g1 "$work/a.nbd" "mirrord.mode=writeloop $JOB"
  poll 300 acked_at_least g1 30 || die "the guest wrote nothing: $(tail -3 "$work/g1.console")"
  echo "the guest's console:"; lines g1 READY; lines g1 ACK | head -2; echo "  ..."
  echo "$(acks g1) writes acknowledged so far (each after O_DIRECT + fsync)"

  step "3. Live-migrate it, running, from a to b"
  # mirrord-migrate: "migrate incoming" on b, "migrate start" on a (in
  # sync, window open), QEMU's pre-copy with pause-before-switchover,
  # "migrate handover" on a at pre-switchover, migrate-continue, cont.
  hop 1 a b g1 g2

  step "4. And back, from b to a"
  hop 2 b a g2 g3
  local full
  full=$(grep -h "full sync" "$work/a.log" "$work/b.log" | wc -l)
  echo "full syncs in both daemons' logs: $full (the first one; the hops copied only what changed)"
  [ "$full" -le 1 ] || die "a hop copied the whole disk"

  step "5. The guest stops (kill -9 of its QEMU); one boot, one counter across three QEMUs"
  poll 300 acked_at_least g3 20 || die "the guest stopped writing"
  kill_guest g3
  cat "$work"/g{1,2,3}.console > "$work/chain.console"     # a line cut at a switch is whole again
  local before acked
  before=$(( $(acks g1) + $(lines g1 IOERR | wc -l) ))
  lines chain '\(READY\|ACK\|IOERR\)' | awk -v boundary="$before" -f "$srcdir/tests/guest/check-running.awk" \
    || die "the guest did not run on, unbroken, across the hops"
  acked=$(acks chain)
  echo "writes acknowledged: $(acks g1) on a, $(acks g2) on b, $(acks g3) on a again: $acked in all"

  step "6. A guest boots on a and reads back every block"
  poll 60 in_sync a || die "a and b not in sync"
  guest v1 "$work/a.nbd" "mirrord.mode=verify $JOB" ,read-only=on
  wait_guest v1
  lines v1 VERIFY
  check_acked chain v1 || die "acknowledged writes were lost"
  explain_counts chain v1

  step "7. Shut down (SIGTERM) and compare the images"
  sigterm a
  sigterm b
  show cmp a.img b.img
  echo "identical"

  step "Figures"
  printf '  %-34s %s\n' \
    "initial sync ($SIZE_TEXT, sparse)" "$(secs $T_SYNC), $(mib "$SYNC_DATA") of data sent" \
    "guest boots" "1 (one READY line; counter 1..$acked unbroken)"
  local n what
  for n in 1 2; do
    [ $n = 1 ] && what="a -> b" || what="b -> a"
    printf '  %-34s %s\n' \
      "hop $n ($what): total time" "$(hop_figure $n total_s)" \
      "  RAM transferred" "$(hop_size $n ram_bytes)" \
      "  downtime (QEMU, query-migrate)" "$(hop_figure $n downtime_ms)" \
      "  hand-over (mirrord)" "$(hop_figure $n handover_ms)" \
      "  disk data to the destination" "$(hop_size $n disk_bytes) (its writes meanwhile)"
  done
  printf '  %-34s %s\n' \
    "guest writes acknowledged" "$acked ($(mib $((acked * 4096))))" \
    "acknowledged writes lost" "0" \
    "full copies after the first sync" "0"
}

$mode
step "Done"
