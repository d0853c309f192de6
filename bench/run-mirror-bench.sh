#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Issue 4's benchmark: the initial sync of a 2 GiB raw image to a
# qemu-nbd target by mirrord, nbdcopy and qemu-img convert -n -W -m 16;
# the same for a fully sparse image; the resync of 64 MiB written while
# the target was away; the cut-over downtime under a 20 MiB/s random
# write load.  Each measurement ROUNDS times, alternating tools.
#
#   bench/run-mirror-bench.sh [ROUNDS]          default 3
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${1:-3}
SIZE=$((2 << 30))
mkdir -p "$WORK"
RESULTS=$WORK/mirror-results.txt
: > "$RESULTS"

# Sources: 25% random data in 64 KiB chunks, and all holes.
if [ ! -f "$WORK/src25.img" ]; then
  truncate -s $SIZE "$WORK/src25.img"
  python3 - "$WORK/src25.img" <<'PY'
import os, random, sys
r = random.Random(25)
fd = os.open(sys.argv[1], os.O_WRONLY)
chunks = (2 << 30) // 65536
for c in r.sample(range(chunks), chunks // 4):
    os.pwrite(fd, os.urandom(65536), c * 65536)
os.fsync(fd)
os.close(fd)
PY
fi
truncate -s $SIZE "$WORK/sparse.img"

target_up () {              # a fresh sparse target file behind qemu-nbd
  if [ -n "${tpid:-}" ]; then kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null || :; fi
  rm -f "$WORK/t.img" "$WORK/t.sock"
  truncate -s $SIZE "$WORK/t.img"
  qemu-nbd -f raw -x t -t -k "$WORK/t.sock" "$WORK/t.img" &
  tpid=$!
  pids+=("$tpid")
  wait_until test -S "$WORK/t.sock"
}
TURI="nbd+unix:///t?socket=$WORK/t.sock"
now () { date +%s.%N; }

# Polls the control socket every 2 ms until the mirror reaches STATE.
wait_state () {
  python3 - "$WORK/$1.ctl" "$2" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
while True:
    f.write('{"command":"status","export":"b"}\n'); f.flush()
    m = json.loads(f.readline())["result"]["exports"][0]["mirror"]
    if m and m["state"] == sys.argv[2]:
        break
    if m and m["state"] == "failed":
        sys.exit("mirror failed: %s" % m["error"])
    time.sleep(0.002)
PY
}

mirror_sync () {            # NAME SOURCE
  local t0 t1
  rm -rf "$WORK/ms.state"
  IMG=$2 start_mirrord ms ms.state
  wait_until "$MIRRORCTL" -s "$WORK/ms.ctl" status
  t0=$(now)
  "$MIRRORCTL" -s "$WORK/ms.ctl" mirror start b "$TURI" --mode async >/dev/null
  wait_state ms ready
  t1=$(now)
  echo "$1 mirrord $(awk "BEGIN{print $t1 - $t0}")" | tee -a "$RESULTS"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || :
  unset 'pids[-1]'
}

timed () {                  # NAME TOOL CMD...
  local name=$1 tool=$2 t0 t1; shift 2
  t0=$(now); "$@" >/dev/null; t1=$(now)
  echo "$name $tool $(awk "BEGIN{print $t1 - $t0}")" | tee -a "$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  echo "==> round $round/$ROUNDS"
  for src in src25 sparse; do
    target_up; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || :
    mirror_sync "$src" "$WORK/$src.img"
    target_up; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || :
    timed "$src" nbdcopy nbdcopy "$WORK/$src.img" "$TURI"
    target_up; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || :
    timed "$src" qemu-img qemu-img convert -n -W -m 16 -f raw -O raw "$WORK/$src.img" "$TURI"
  done

  # Resync: the target goes away, 64 MiB is written, it comes back.
  cp --sparse=always "$WORK/src25.img" "$WORK/resync.img"
  rm -rf "$WORK/ms.state"
  target_up
  IMG=$WORK/resync.img start_mirrord ms ms.state
  wait_until "$MIRRORCTL" -s "$WORK/ms.ctl" status
  "$MIRRORCTL" -s "$WORK/ms.ctl" mirror start b "$TURI" --mode async >/dev/null
  wait_state ms ready
  kill "$tpid"; wait "$tpid" 2>/dev/null || :
  wait_state ms disconnected
  /usr/bin/python3 - "nbd+unix:///b?socket=$WORK/ms.sock" <<'PY'
import nbd, os, random, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); r = random.Random(64)
for c in r.sample(range((2 << 30) // 65536), 1024):     # 64 MiB
    h.pwrite(os.urandom(65536), c * 65536)
h.flush(); h.shutdown()
PY
  rm -f "$WORK/t.sock"
  qemu-nbd -f raw -x t -t -k "$WORK/t.sock" "$WORK/t.img" &
  tpid=$!; pids+=("$tpid")
  t0=$(now); wait_state ms syncing; wait_state ms ready; t1=$(now)
  echo "resync64M mirrord $(awk "BEGIN{print $t1 - $t0}")" | tee -a "$RESULTS"

  # Cut-over under 20 MiB/s of random 4 KiB writes.
  fio --name=load --ioengine=nbd --uri="nbd+unix:///b?socket=$WORK/ms.sock" \
    --rw=randwrite --bs=4k --iodepth=4 --rate=20m --time_based --runtime=30 \
    >/dev/null 2>&1 &
  fpid=$!
  sleep 2                   # let the load settle (a benchmark, not a test)
  "$MIRRORCTL" -s "$WORK/ms.ctl" --json mirror cutover b \
    | python3 -c 'import json,sys; print("cutover mirrord", json.load(sys.stdin)["downtime_ms"] / 1000)' \
    | tee -a "$RESULTS"
  kill "$fpid" 2>/dev/null || :; wait "$fpid" 2>/dev/null || :
  kill "${pids[-2]}" 2>/dev/null || :
done

python3 - "$RESULTS" "$ROUNDS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    what, tool, secs = line.split()
    rows[(what, tool)].append(float(secs))
med = lambda w, t: statistics.median(rows[(w, t)]) if rows[(w, t)] else float("nan")
print("\n%s rounds, medians, target qemu-nbd on a sparse file\n" % sys.argv[2])
print("| job | mirrord | nbdcopy | qemu-img convert -W -m 16 | mirrord / faster peer |")
print("|---|---|---|---|---|")
for w, label in (("src25", "initial sync, 2 GiB, 25% data"), ("sparse", "initial sync, 2 GiB, sparse")):
    m, n, q = med(w, "mirrord"), med(w, "nbdcopy"), med(w, "qemu-img")
    print("| %s | %.3f s | %.3f s | %.3f s | %.2f |" % (label, m, n, q, m / min(n, q)))
print("| resync of 64 MiB written while the target was away | %.3f s | | | |" % med("resync64M", "mirrord"))
print("| cut-over downtime under 20 MiB/s random writes | %.1f ms | | | |" % (1000 * med("cutover", "mirrord")))
PY
