#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What TLS-PSK costs: nbdcopy reading a whole image (to null:) and
# writing one (from a tmpfs file) over loopback TCP, plaintext and
# TLS, mirrord against qemu-nbd.  Exports use the page cache
# (mirrord cache=writeback, qemu-nbd's default) so the disk stays out
# of the comparison: what is left is the protocol and the crypto.
#
#   bench/run-tls-bench.sh [ROUNDS] [SIZE]      (default 3 rounds, 1G)
#
# Prints one line per run (server, job, seconds, MiB/s) and the median
# MiB/s of each.  Run by hand, never in CI.
source "$(dirname "$0")/common.sh"
ROUNDS=${1:-3}
SIZE=${2:-1G}
command -v psktool >/dev/null || { echo "needs psktool (gnutls-bin)"; exit 1; }

prepare_image "$SIZE"
SRC=/dev/shm/mirrord-tls-bench.src
cp "$IMG" "$SRC"
trap 'cleanup; rm -f "$SRC"' EXIT
rm -rf "$WORK/tls"
mkdir -p "$WORK/tls"
psktool -u alice -p "$WORK/tls/keys.psk" >/dev/null
KEYS=$WORK/tls/keys.psk
port () { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A URI
start_servers () {
  local p
  p=$(port)
  "$MIRRORD" -f --export "b=$IMG,cache=writeback,bitmap=false" --nbd-listen "127.0.0.1:$p" --insecure \
    --nbd-socket "$WORK/mp.sock" --control "$WORK/mp.ctl" --state-dir "$WORK/mp.state" \
    2>"$WORK/mp.log" &
  pids+=($!)
  URI[mirrord-plain]=nbd://127.0.0.1:$p/b
  p=$(port)
  "$MIRRORD" -f --export "b=$IMG,cache=writeback,bitmap=false" --nbd-listen "127.0.0.1:$p" \
    --tls-psk "$KEYS" --nbd-socket "$WORK/mt.sock" --control "$WORK/mt.ctl" \
    --state-dir "$WORK/mt.state" 2>"$WORK/mt.log" &
  pids+=($!)
  URI[mirrord-tls]="nbds://alice@127.0.0.1:$p/b?tls-psk-file=$KEYS"
  p=$(port)
  qemu-nbd -f raw -x b -b 127.0.0.1 -p "$p" -t -e 8 "$IMG" 2>"$WORK/qp.log" &
  pids+=($!)
  URI[qemu-nbd-plain]=nbd://127.0.0.1:$p/b
  p=$(port)
  qemu-nbd --object "tls-creds-psk,id=tls0,endpoint=server,dir=$WORK/tls" --tls-creds tls0 \
    -f raw -x b -b 127.0.0.1 -p "$p" -t -e 8 "$IMG" 2>"$WORK/qt.log" &
  pids+=($!)
  URI[qemu-nbd-tls]="nbds://alice@127.0.0.1:$p/b?tls-psk-file=$KEYS"
  for s in "${!URI[@]}"; do
    wait_until nbdinfo --size "${URI[$s]}" || { echo "$s did not start"; exit 1; }
  done
}

run () {
  local server=$1 job=$2 t0 t1 secs
  t0=$(date +%s%N)
  if [ "$job" = read ]; then
    nbdcopy "${URI[$server]}" null:
  else
    nbdcopy "$SRC" "${URI[$server]}"
  fi
  t1=$(date +%s%N)
  secs=$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc)
  echo "$server $job $secs $(echo "scale=0; $(stat -c %s "$IMG") / 1048576 / $secs" | bc)"
}

start_servers
cat "$IMG" >/dev/null               # the page cache holds the image
results=$WORK/tls-results.txt
: > "$results"
for ((r = 1; r <= ROUNDS; r++)); do
  for job in read write; do
    for server in mirrord-plain mirrord-tls qemu-nbd-plain qemu-nbd-tls; do
      run "$server" "$job" | tee -a "$results"
    done
  done
done
echo "== median MiB/s over $ROUNDS rounds"
for job in read write; do
  for server in mirrord-plain mirrord-tls qemu-nbd-plain qemu-nbd-tls; do
    awk -v s="$server" -v j="$job" '$1 == s && $2 == j { print $4 }' "$results" \
      | sort -n | awk -v s="$server" -v j="$job" \
          '{ v[NR] = $1 } END { printf "%-15s %-5s %s\n", s, j, v[int((NR + 1) / 2)] }'
  done
done
