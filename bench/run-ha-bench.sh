#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Issue 6's benchmark: the cost of replication.  A 1 GiB raw export with
# no peer, against the same export as the primary of an HA pair whose
# secondary runs on the same machine (loopback TCP), in sync and async
# mode: 4 KiB random writes at queue depth 1 (latency) and 32 (IOPS),
# and 1 MiB sequential writes at depth 8 (throughput).  ROUNDS rounds,
# configurations alternating; medians and ratios to "no peer".
#
#   bench/run-ha-bench.sh [ROUNDS]          default 5
#
# PIN=1 puts fio and the primary on CPU 0 and the secondary on CPU 1 (in
# every configuration: "no peer" gets CPU 0 only), as if the secondary
# ran on its own host; without it the three share both CPUs.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${1:-5}
RUNTIME=${RUNTIME:-10}
mkdir -p "$WORK"
RESULTS=$WORK/ha-results.txt
: > "$RESULTS"
A=$WORK/ha-a.img B=$WORK/ha-b.img
for f in "$A" "$B"; do
  [ -f "$f" ] || { fallocate -l 1G "$f"; dd if=/dev/zero of="$f" bs=1M count=1024 oflag=direct conv=notrunc status=none; }
done
PORT_A=${PORT_A:-20809} PORT_B=${PORT_B:-20810}

stop_all () { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || :; done; wait 2>/dev/null || :; pids=(); }
ha_json () { "$MIRRORCTL" -s "$WORK/ha-a.ctl" --json status vm1; }
synced () { ha_json 2>/dev/null | python3 2>/dev/null -c 'import json,sys; e=json.load(sys.stdin)["exports"][0]; sys.exit(0 if e["peer"] and e["peer"]["connected"] and e["peer"]["disk"]=="uptodate" and e["mirror"] and e["mirror"]["state"]=="ready" else 1)'; }

ON_A=() ON_B=()
if [ "${PIN:-}" = 1 ]; then ON_A=(taskset -c 0) ON_B=(taskset -c 1); fi

# start CONFIG: none | sync | async
start () {
  rm -rf "$WORK/ha-sa" "$WORK/ha-sb"
  if [ "$1" = none ]; then
    "${ON_A[@]}" "$MIRRORD" -f --export "vm1=$A" --nbd-socket "$WORK/ha-a.sock" \
      --control "$WORK/ha-a.ctl" --state-dir "$WORK/ha-sa" 2>"$WORK/ha-a.log" &
    pids+=($!)
    wait_until test -S "$WORK/ha-a.sock"
    return
  fi
  "${ON_A[@]}" "$MIRRORD" -f --export "vm1=$A,role=primary,mode=$1,peer=nbd://127.0.0.1:$PORT_B/vm1" \
    --nbd-socket "$WORK/ha-a.sock" --nbd-listen 127.0.0.1:$PORT_A --insecure \
    --control "$WORK/ha-a.ctl" --state-dir "$WORK/ha-sa" 2>"$WORK/ha-a.log" &
  pids+=($!)
  "${ON_B[@]}" "$MIRRORD" -f --export "vm1=$B,role=secondary,mode=$1,peer=nbd://127.0.0.1:$PORT_A/vm1" \
    --nbd-socket "$WORK/ha-b.sock" --nbd-listen 127.0.0.1:$PORT_B --insecure \
    --control "$WORK/ha-b.ctl" --state-dir "$WORK/ha-sb" 2>"$WORK/ha-b.log" &
  pids+=($!)
  for _ in $(seq 3000); do synced && return; sleep 0.02; done
  echo "the pair did not sync" >&2; exit 1
}

# Every granule's bit set on disk before measuring: the first write into
# a granule pays a metadata flush in every configuration, and that
# one-time cost is not what this compares.
warm_up () {
  "${ON_A[@]}" fio --name=warm --ioengine=nbd --uri="nbd+unix:///vm1?socket=$WORK/ha-a.sock" \
    --rw=write --bs=1M --iodepth=8 --size=1G >/dev/null 2>&1
}

job () {   # job CONFIG NAME RW BS DEPTH
  "${ON_A[@]}" fio --name="$2" --ioengine=nbd --uri="nbd+unix:///vm1?socket=$WORK/ha-a.sock" \
    --rw="$3" --bs="$4" --iodepth="$5" --size=1G --time_based --runtime="$RUNTIME" \
    --output-format=json 2>/dev/null | python3 -c '
import json, sys
s = sys.stdin.read(); j = json.loads(s[s.index("{"):])["jobs"][0]["write"]
print(sys.argv[1], sys.argv[2], j["bw_bytes"] / 1048576, j["iops"], j["clat_ns"]["mean"] / 1000)' "$1" "$2" >> "$RESULTS"
}

for r in $(seq "$ROUNDS"); do
  for c in none sync async; do
    echo "==> round $r: $c"
    start "$c"
    warm_up
    job "$c" qd1 randwrite 4k 1
    job "$c" qd32 randwrite 4k 32
    job "$c" seq write 1M 8
    stop_all
  done
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for c, j, mib, iops, lat in rows:
    med.setdefault((c, j), []).append((float(mib), float(iops), float(lat)))
def m(c, j, k): return statistics.median(v[k] for v in med[(c, j)])
print("%-6s %-5s %10s %10s %12s %8s" % ("config", "job", "MiB/s", "IOPS", "latency us", "ratio"))
for j, k, better in (("qd1", 2, "lat"), ("qd32", 1, "iops"), ("seq", 0, "bw")):
    for c in ("none", "sync", "async"):
        base = m("none", j, k)
        ratio = m(c, j, k) / base
        print("%-6s %-5s %10.1f %10.0f %12.1f %8.2f" % (c, j, m(c, j, 0), m(c, j, 1), m(c, j, 2), ratio))
PY
