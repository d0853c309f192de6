# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run):
#
#   $MIRRORD, $MIRRORCTL   the binaries (default: the build/ tree)
#   $WORK, $IMG            the work directory ($BENCH_DIR) and the image
#   pids+=($!)             servers started in the background: killed at exit
#   prepare_image SIZE [quiet]
#                          make $WORK and fill $IMG with SIZE (e.g. 2G) of
#                          preallocated random data, unless it already has
#                          that size
#   start_mirrord NAME STATE [,OPTS]
#                          mirrord in the background exporting $IMG as "b"
#                          (with OPTS), on $WORK/NAME.sock and NAME.ctl,
#                          state in $WORK/STATE, stderr in $WORK/NAME.log
#   wait_until CMD...      retry CMD for up to 10 s; return 1 if it never
#                          succeeds
#   fio_summary NAME JOB [EXTRA...]
#                          read fio's JSON on stdin and print one results
#                          line: NAME JOB MiB/s IOPS EXTRA... (of the reads
#                          if the job read, else of the writes)
set -euo pipefail
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIRRORD=${MIRRORD:-$srcdir/build/mirrord/mirrord}
MIRRORCTL=${MIRRORCTL:-$srcdir/build/ctl/mirrorctl}
WORK=${BENCH_DIR:-/var/tmp/mirrord-bench}
IMG=$WORK/disk.img

pids=()
cleanup () { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || :; done; wait 2>/dev/null || :; }
trap cleanup EXIT

prepare_image () {
  local size=$1 quiet=${2:-}
  mkdir -p "$WORK"
  if [ ! -f "$IMG" ] || [ "$(stat -c %s "$IMG")" != "$(numfmt --from=iec "$size")" ]; then
    [ -n "$quiet" ] || echo "==> preallocating $size of real data in $IMG"
    rm -f "$IMG"
    fallocate -l "$size" "$IMG"
    dd if=/dev/urandom of="$IMG" bs=1M count=$(( $(numfmt --from=iec "$size") >> 20 )) \
       oflag=direct conv=notrunc status=none
  fi
}

start_mirrord () {
  "$MIRRORD" -f --export "b=$IMG${3:-}" --nbd-socket "$WORK/$1.sock" \
    --control "$WORK/$1.ctl" --state-dir "$WORK/$2" 2>"$WORK/$1.log" &
  pids+=($!)
}

wait_until () {
  for _ in $(seq 500); do "$@" >/dev/null 2>&1 && return 0; sleep 0.02; done
  return 1
}

fio_summary () {
  python3 -c '
import json, sys
s = sys.stdin.read()
j = json.loads(s[s.index("{"):])["jobs"][0]   # fio may print a line first
d = j["read"] if j["read"]["io_bytes"] else j["write"]
print(sys.argv[1], sys.argv[2], d["bw_bytes"] / 1048576, d["iops"], *sys.argv[3:])' "$@"
}
