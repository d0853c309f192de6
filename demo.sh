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
#   ./demo.sh migrate    pre-sync to a qemu-nbd target and cut over
#                        while the guest keeps writing; the guest then
#                        boots on the target and verifies its data
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

# guest NAME SOCKET KERNEL-ARGS [DRIVE-OPTS]: boot the test guest on
# export vm1 behind SOCKET; its serial console goes to $work/NAME.console.
guest () {
  local name=$1 sock=$2 args=$3 opts=${4:-}
  : > "$work/$name.console"
  qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -display none \
    -no-reboot -m 256 -serial "file:$work/$name.console" \
    -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" \
    -append "console=ttyS0 quiet panic=-1 $args" \
    -blockdev "driver=nbd,node-name=d0,server.type=unix,server.path=$sock,export=vm1$opts" \
    -device virtio-blk-pci,drive=d0 </dev/null >"$work/$name.qemu.log" 2>&1 &
  pids[$name]=$!
  echo "guest $name: qemu-system-x86_64 -accel tcg -kernel vmlinuz -initrd initrd.img"
  echo "  -append '... $args' -blockdev driver=nbd,server.path=${sock#$work/},export=vm1$opts"
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

failover () {
  step "1. Two mirrord daemons on this machine: a (primary) and b (secondary), sync mode"
  # As on two hosts: the pair talks NBD over TCP with TLS-PSK (one key
  # file for both), the guest uses its host's unix socket.
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
  local t0 t_sync
  t0=$(now_ms)
  daemon b
  daemon a
  in_sync () { [ "$(field a 'e["peer"]["connected"] and e["disk"] == "uptodate" and e["peer"]["disk"] == "uptodate" and e["peer"]["generation"]["current"] == e["generation"]["current"]')" = True ]; }
  poll 120 in_sync || die "the pair did not get in sync: $(ctl a status vm1)"
  t_sync=$(( $(now_ms) - t0 ))
  local sync_total sync_data
  sync_total=$(field a 'e["mirror"]["total_bytes"]')
  sync_data=$(field b 'e["bytes_written"]')
  echo "initial sync: $(mib "$sync_total") in $(secs $t_sync); data sent $(mib "$sync_data") (holes are not sent as data)"

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
    "initial sync ($SIZE_TEXT, sparse)" "$(secs $t_sync), $(mib "$sync_data") of data sent" \
    "guest writes acknowledged on a" "$acked ($(mib $((acked * 4096))))" \
    "acknowledged writes lost" "0" \
    "kill -9 -> b promoted" "$(secs $t_prom)" \
    "kill -9 -> verified on b" "$(secs $t_service) (guest boot included)" \
    "failback resync" "$(mib "$moved") of $SIZE_TEXT in $(secs $t_resync), $(mib "$sent") of data"
}

migrate () {
  step "1. mirrord serves vm1; a qemu-nbd on an empty disk is the migration target"
  truncate -s $SIZE "$work/src.img" "$work/dst.img"
  head -c 16M /dev/urandom | dd of=src.img bs=1M seek=128 conv=notrunc status=none
  echo "src.img: $SIZE_TEXT sparse, 16.0 MiB of data at 128.0 MiB; dst.img: $SIZE_TEXT empty"
  cat > "$work/src.conf" <<CONF
[mirrord]
nbd-socket = $work/src.nbd
control = $work/src.ctl
state-dir = $work/src.state

[export vm1]
path = $work/src.img
CONF
  cat "$work/src.conf"
  daemon src
  qemu-nbd -f raw -x vm1 -t -k "$work/dst.sock" "$work/dst.img" 2>"$work/qemu-nbd.log" &
  pids[qemu-nbd]=$!
  local TARGET="nbd+unix:///vm1?socket=$work/dst.sock"
  poll 30 nbdinfo "$TARGET" || die "qemu-nbd did not start"
  echo "target: qemu-nbd -f raw -x vm1 -t -k dst.sock dst.img"

  step "2. A guest boots on mirrord and keeps writing"
  guest w1 "$work/src.nbd" "mirrord.mode=writeloop $JOB"
  poll 300 acked_at_least w1 30 || die "the guest wrote nothing: $(tail -3 "$work/w1.console")"
  echo "$(acks w1) writes acknowledged so far"

  step "3. Pre-sync to the target while the guest writes (async mirror)"
  local t0 t_ready
  t0=$(now_ms)
  show mirrorctl -s src.ctl mirror start vm1 "$TARGET" --mode async
  show mirrorctl -s src.ctl mirror wait vm1 --until ready --timeout 120
  t_ready=$(( $(now_ms) - t0 ))
  local copied
  copied=$(field src 'e["mirror"]["done_bytes"] - e["mirror"]["zeroes_skipped_bytes"]')
  show mirrorctl -s src.ctl status vm1
  local n
  n=$(acks w1)
  poll 300 acked_at_least w1 $((n + 30)) || die "the guest stopped writing"
  echo "ready after $(secs $t_ready), $(mib "$copied") copied; the guest went on: $(acks w1) writes acknowledged"

  step "4. Cut over with the guest still writing"
  echo '$ mirrorctl -s src.ctl --json mirror cutover vm1 --timeout 30'
  mirrorctl -s src.ctl --json mirror cutover vm1 --timeout 30 > cutover.json \
    || { cat cutover.json; die "the cut-over failed"; }
  local downtime
  downtime=$(python3 -c 'import json,sys; print("%.2f ms" % json.load(sys.stdin)["downtime_ms"])' < cutover.json)
  # The members of the document the command printed, as it spells them.
  python3 -c 'import json,sys; d=json.load(sys.stdin)
print("{\"mirror\": {\"state\": %s}, \"downtime_ms\": %.2f, \"writable\": %s, ...}" % (json.dumps(d["mirror"]["state"]), d["downtime_ms"], json.dumps(d["writable"])))' < cutover.json
  echo "guest writes were held for $downtime; the source export is read-only from now on"
  ioerr () { [ -n "$(lines w1 IOERR)" ]; }
  poll 60 ioerr || die "the source still took writes after the cut-over"
  echo "the source now refuses the guest's writes (an orchestrator would have paused the VM):"
  lines w1 IOERR | head -1
  kill_guest w1
  local acked
  acked=$(acks w1)

  step "5. The guest boots again, on the target, and verifies its data"
  guest v1 "$work/dst.sock" "mirrord.mode=verify $JOB" ,read-only=on
  wait_guest v1
  lines v1 VERIFY
  check_acked w1 v1 || die "acknowledged writes missing on the target"
  explain_counts w1 v1
  show cmp src.img dst.img
  echo "identical"
  sigterm src

  step "Figures"
  printf '  %-34s %s\n' \
    "pre-sync to ready ($SIZE_TEXT, sparse)" "$(secs $t_ready), $(mib "$copied") copied" \
    "cut-over downtime (writes held)" "$downtime" \
    "guest writes acknowledged" "$acked ($(mib $((acked * 4096))))" \
    "acknowledged writes lost" "0" \
    "target allocation" "$(mib $(( $(stat -c %b "$work/dst.img") * 512 ))) of $SIZE_TEXT (it stayed sparse)"
}

$mode
step "Done"
