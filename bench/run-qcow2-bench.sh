#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrord's qcow2 driver against qemu-nbd (issue 5's benchmark).
#
# The issue-2 fio jobs (seq write/read 1M QD8, rand read/write 4k
# QD32) through fio's nbd engine over unix sockets, on a fully
# allocated qcow2 made by `qemu-img convert -O qcow2` from a raw file
# of random data: mirrord (format=qcow2, cache=none) against
# `qemu-nbd -f qcow2 --cache=none --aio=native`, in the same run,
# alternating which goes first in each round, page caches dropped
# before every run.  Then random 4k writes into an empty qcow2 of the
# same size (the allocation path), a fresh empty image for each run.
# Prints a Markdown table of medians and mirrord/qemu-nbd ratios.
#
#   bench/run-qcow2-bench.sh [ROUNDS [RUNTIME_S [SIZE]]]   default 3 10 2G
#
# Not a test: run it by hand on a quiet machine, as root (drop_caches).
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${1:-3}
RUNTIME=${2:-10}
SIZE=${3:-2G}

for t in fio qemu-nbd qemu-img "$MIRRORD"; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
prepare_image "$SIZE"
QIMG=$WORK/disk.qcow2
if [ ! -f "$QIMG" ] || [ "$QIMG" -ot "$IMG" ]; then
  echo "==> converting $IMG to a fully allocated qcow2"
  qemu-img convert -f raw -O qcow2 "$IMG" "$QIMG"
fi
EMPTY=$WORK/empty.qcow2
rm -f "$WORK"/q-*.sock "$WORK"/q-*.ctl

start_server () {                   # start_server mirrord|qemu-nbd IMAGE
  local s=$1 img=$2
  rm -f "$WORK/q-$s.sock"
  if [ "$s" = mirrord ]; then
    IMG=$img start_mirrord q-mirrord q-state ,format=qcow2,cache=none
    wait_until test -S "$WORK/q-mirrord.sock" || { cat "$WORK/q-mirrord.log"; exit 1; }
  else
    qemu-nbd -f qcow2 --cache=none --aio=native -x b -t -k "$WORK/q-qemu-nbd.sock" "$img" &
    pids+=($!)
    wait_until test -S "$WORK/q-qemu-nbd.sock" || exit 1
  fi
}
stop_server () {
  local p=${pids[-1]}
  kill "$p"; wait "$p" 2>/dev/null || :
  unset 'pids[-1]'
}

JOBS=("seqwrite:write:1M:8" "seqread:read:1M:8" "randread:randread:4k:32"
      "randwrite:randwrite:4k:32" "alloc:randwrite:4k:32")
SERVERS=(mirrord qemu-nbd)
RESULTS=$WORK/qcow2-results.txt
: > "$RESULTS"

run_one () {                        # run_one SERVER JOB RW BS QD
  local server=$1 job=$2 rw=$3 bs=$4 qd=$5 img=$QIMG out
  if [ "$job" = alloc ]; then
    img=$EMPTY
    rm -f "$EMPTY"
    qemu-img create -q -f qcow2 "$EMPTY" "$SIZE"
  fi
  # One server at a time on an image: qemu-nbd locks it, and the two
  # must not share the host's page cache state either.
  start_server "$server" "$img"
  sync
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || :
  out=$(fio --name=b --ioengine=nbd --uri="nbd+unix:///b?socket=$WORK/q-$server.sock" \
    --rw="$rw" --bs="$bs" --iodepth="$qd" --runtime="$RUNTIME" --time_based \
    --size="$SIZE" --output-format=json)
  stop_server
  fio_summary "$server" "$job" <<<"$out" >> "$RESULTS"
  tail -1 "$RESULTS"
}

for round in $(seq "$ROUNDS"); do
  echo "==> round $round/$ROUNDS"
  for spec in "${JOBS[@]}"; do
    IFS=: read -r job rw bs qd <<<"$spec"
    for i in "${!SERVERS[@]}"; do
      s=${SERVERS[$(( (i + round) % ${#SERVERS[@]} ))]}
      run_one "$s" "$job" "$rw" "$bs" "$qd"
    done
  done
done
qemu-img check -q "$QIMG" || echo "WARNING: qemu-img check $QIMG failed" >&2

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
print("\n%s rounds x %s s, %s qcow2 (fully allocated; alloc: empty), medians\n"
      % (sys.argv[2], sys.argv[3], sys.argv[4]))
print("| job | mirrord qcow2 cache=none | qemu-nbd qcow2 cache=none aio=native | mirrord/qemu-nbd |")
print("|---|---|---|---|")
for job in ["seqwrite", "seqread", "randread", "randwrite", "alloc"]:
    m, q = med("mirrord", job), med("qemu-nbd", job)
    print("| %s | %s | %s | %.2f |" % (job, fmt(job, m), fmt(job, q), m / q))
PY
