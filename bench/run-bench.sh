#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrord against qemu-nbd and nbdkit, in one run (issue 2's benchmark).
#
# fio's nbd engine over unix sockets against each server serving the
# same preallocated raw file; servers alternate within each round and
# page caches are dropped before every run.  Direct libaio on the file
# is the physical limit.  Prints a Markdown table of medians and
# mirrord/peer ratios (paste it into BENCHMARKS.md).
#
#   bench/run-bench.sh [ROUNDS [RUNTIME_S [SIZE]]]     default 3 10 2G
#
# Not a test: run it by hand on a quiet machine, as root (drop_caches).
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${1:-3}
RUNTIME=${2:-10}
SIZE=${3:-2G}

for t in fio qemu-nbd nbdkit "$MIRRORD"; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
prepare_image "$SIZE"

rm -f "$WORK"/*.sock "$WORK"/*.ctl

# mirrord twice: O_DIRECT (cache=none, the default, like qemu-nbd's
# cache=none) and page cache (cache=writeback, like nbdkit's file).
start_mirrord mirrord state
start_mirrord mirrord-wb state-wb ,cache=writeback
qemu-nbd -f raw --cache=none --aio=native -x b -t -k "$WORK/qemu-nbd.sock" "$IMG" &
pids+=($!)
nbdkit -f -U "$WORK/nbdkit.sock" file "$IMG" &
pids+=($!)
for s in mirrord mirrord-wb qemu-nbd nbdkit; do wait_until test -S "$WORK/$s.sock"; done

declare -A URI=(
  [mirrord]="nbd+unix:///b?socket=$WORK/mirrord.sock"
  [mirrord-wb]="nbd+unix:///b?socket=$WORK/mirrord-wb.sock"
  [qemu-nbd]="nbd+unix:///b?socket=$WORK/qemu-nbd.sock"
  [nbdkit]="nbd+unix:///?socket=$WORK/nbdkit.sock"
)
JOBS=("seqwrite:write:1M:8" "seqread:read:1M:8" "randread:randread:4k:32" "randwrite:randwrite:4k:32")
SERVERS=(mirrord mirrord-wb qemu-nbd nbdkit direct)
RESULTS=$WORK/results.txt
: > "$RESULTS"

run_one () {
  local server=$1 job=$2 rw=$3 bs=$4 qd=$5 out
  sync
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || :
  if [ "$server" = direct ]; then
    out=$(fio --name=b --ioengine=libaio --direct=1 --filename="$IMG" --rw="$rw" \
      --bs="$bs" --iodepth="$qd" --runtime="$RUNTIME" --time_based --size="$SIZE" \
      --output-format=json)
  else
    out=$(fio --name=b --ioengine=nbd --uri="${URI[$server]}" --rw="$rw" \
      --bs="$bs" --iodepth="$qd" --runtime="$RUNTIME" --time_based --size="$SIZE" \
      --output-format=json)
  fi
  fio_summary "$server" "$job" <<<"$out" >> "$RESULTS"
  tail -1 "$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  echo "==> round $round/$ROUNDS"
  for spec in "${JOBS[@]}"; do
    IFS=: read -r job rw bs qd <<<"$spec"
    # Rotate the order each round so no server always runs first.
    for i in "${!SERVERS[@]}"; do
      s=${SERVERS[$(( (i + round) % ${#SERVERS[@]} ))]}
      run_one "$s" "$job" "$rw" "$bs" "$qd"
    done
  done
done

python3 - "$RESULTS" "$ROUNDS" "$RUNTIME" "$SIZE" <<'PY'
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, job, mib, iops = line.split()
    rows[(s, job)].append((float(mib), float(iops)))
def med(s, job):
    v = rows[(s, job)]
    if job.startswith("seq"):
        return statistics.median(x[0] for x in v)
    return statistics.median(x[1] for x in v)
def fmt(job, v):
    return "%.0f MiB/s" % v if job.startswith("seq") else "%.1fk IOPS" % (v / 1000)
print("\n%s rounds x %s s, %s file, medians\n" % (sys.argv[2], sys.argv[3], sys.argv[4]))
print("| job | mirrord cache=none | mirrord cache=writeback | qemu-nbd cache=none | nbdkit file | direct libaio | none/qemu-nbd | writeback/nbdkit | best mirrord/best peer | none/direct |")
print("|---|---|---|---|---|---|---|---|---|---|")
for job in ["seqwrite", "seqread", "randread", "randwrite"]:
    m, w, q, k, d = (med(s, job) for s in ["mirrord", "mirrord-wb", "qemu-nbd", "nbdkit", "direct"])
    print("| %s | %s | %s | %s | %s | %s | %.2f | %.2f | %.2f | %.2f |" % (
        job, fmt(job, m), fmt(job, w), fmt(job, q), fmt(job, k), fmt(job, d),
        m / q, w / k, max(m, w) / max(q, k), m / d))
PY
