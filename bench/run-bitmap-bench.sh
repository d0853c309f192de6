#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The cost of the persistent write-intent bitmap (issue 3's benchmark):
# mirrord with the bitmap on and off (bitmap=false), same file, same
# run, alternating.  Before every bitmap-on run the bitmap is cleared
# (and the clear reaches the file), so each run pays for marking every
# granule it touches for the first time: the worst case, not a warm
# bitmap.  Also reports metadata flushes and 4 KiB bitmap blocks written
# per 1000 data writes.
#
#   bench/run-bitmap-bench.sh [ROUNDS [RUNTIME_S [SIZE]]]   default 5 10 2G
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${1:-5}
RUNTIME=${2:-10}
SIZE=${3:-2G}
prepare_image "$SIZE" quiet
rm -rf "$WORK"/bm-on* "$WORK"/bm-off*
start_mirrord bm-on bm-on.state
start_mirrord bm-off bm-off.state ,bitmap=false
# Not answering in time is not fatal here; the first request will be.
for s in on off; do wait_until "$MIRRORCTL" -s "$WORK/bm-$s.ctl" status || :; done

field () {
  "$MIRRORCTL" -s "$WORK/bm-on.ctl" --json status b \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['exports'][0]['$1'])"
}

RESULTS=$WORK/bitmap-results.txt
: > "$RESULTS"
run_one () {
  local which=$1 job=$2 rw=$3 bs=$4 qd=$5 out f0 b0 r0
  if [ "$which" = on ]; then
    "$MIRRORCTL" -s "$WORK/bm-on.ctl" bitmap clear b >/dev/null
    sleep 1.5                   # the lazy clear reaches the file (not a readiness wait)
    f0=$(field bitmap_flushes); b0=$(field bitmap_blocks_written); r0=$(field requests)
  fi
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || :
  out=$(fio --name=b --ioengine=nbd --uri="nbd+unix:///b?socket=$WORK/bm-$which.sock" \
    --rw="$rw" --bs="$bs" --iodepth="$qd" --runtime="$RUNTIME" --time_based \
    --size="$SIZE" --output-format=json)
  local extra="0 0 0"
  [ "$which" = on ] && extra="$(( $(field bitmap_flushes) - f0 )) $(( $(field bitmap_blocks_written) - b0 )) $(( $(field requests) - r0 ))"
  # shellcheck disable=SC2086 # $extra: three numbers
  fio_summary "$which" "$job" $extra <<<"$out" | tee -a "$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  echo "==> round $round/$ROUNDS"
  for spec in "randwrite:randwrite:4k:32" "seqwrite:write:1M:8"; do
    IFS=: read -r job rw bs qd <<<"$spec"
    if (( round % 2 )); then order="on off"; else order="off on"; fi
    for which in $order; do run_one "$which" "$job" "$rw" "$bs" "$qd"; done
  done
done

python3 - "$RESULTS" "$ROUNDS" "$RUNTIME" "$SIZE" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    w, job, mib, iops, fl, blk, req = line.split()
    rows[(w, job)].append((float(mib), float(iops), int(fl), int(blk), int(req)))
print("\n%s rounds x %s s, %s file, medians; bitmap cleared before every on-run\n"
      % (sys.argv[2], sys.argv[3], sys.argv[4]))
print("| job | bitmap on | bitmap off | on/off | flushes per 1000 writes | bitmap blocks per 1000 writes |")
print("|---|---|---|---|---|---|")
for job in ["randwrite", "seqwrite"]:
    idx = 1 if job == "randwrite" else 0
    on = statistics.median(r[idx] for r in rows[("on", job)])
    off = statistics.median(r[idx] for r in rows[("off", job)])
    fl = sum(r[2] for r in rows[("on", job)]); blk = sum(r[3] for r in rows[("on", job)])
    req = sum(r[4] for r in rows[("on", job)])
    unit = (lambda v: "%.1fk IOPS" % (v / 1000)) if idx else (lambda v: "%.0f MiB/s" % v)
    print("| %s | %s | %s | %.3f | %.2f | %.2f |" % (job, unit(on), unit(off), on / off,
          1000.0 * fl / max(1, req), 1000.0 * blk / max(1, req)))
PY
