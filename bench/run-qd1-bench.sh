#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Issue 18's benchmark: the one-request path, mirrord against the servers
# a user would pick instead, in one run.
#
#   alone       mirrord with a cold bitmap (new state directory) and a
#               warm one (every granule already marked by a first pass),
#               qemu-storage-daemon (cache.direct=on, aio=native) and
#               qemu-nbd (--cache=none --aio=native) exporting the same
#               1 GiB preallocated raw image over a unix socket
#   replicated  mirrord's mirror in sync and in async mode, and
#               qemu-storage-daemon's blockdev-mirror in write-blocking
#               (active) and background mode, each to the same
#               `qemu-nbd --cache=none --aio=native` target over loopback
#               TCP, measured once the mirror is ready
#   sparse      a fully sparse 2 GiB image: mirrord's `mirror start` until
#               `mirror wait --until ready` returns, against nbdcopy and
#               `qemu-img convert -n -W` copying it to the same target
#
# fio's nbd engine; jobs 4k randwrite and randread at QD1, 4k randwrite
# QD32, 1M write and read QD8.  ROUNDS rounds; within each round the
# servers' order rotates.  Prints medians and mirrord/peer ratios.
#
#   bench/run-qd1-bench.sh [ROUNDS]        default 3 (RUNTIME=10 s a job)
#   PARTS="alone replicated sparse"        which parts to run
#
# Not a test: run it by hand on a quiet machine, as root.
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${1:-3}
RUNTIME=${RUNTIME:-10}
PARTS=${PARTS:-alone replicated sparse}
QMP="/usr/bin/python3 $srcdir/bench/qmp.py"
for t in fio qemu-nbd qemu-storage-daemon nbdcopy qemu-img "$MIRRORD"; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
mkdir -p "$WORK"
SRC=$WORK/qd1-src.img TGT=$WORK/qd1-tgt.img
for f in "$SRC" "$TGT"; do
  [ "$(stat -c %s "$f" 2>/dev/null)" = 1073741824 ] && continue
  rm -f "$f"; fallocate -l 1G "$f"
  dd if=/dev/urandom of="$f" bs=1M count=1024 oflag=direct conv=notrunc status=none
done
PORT=${PORT:-20811}
RESULTS=$WORK/qd1-results.txt
: > "$RESULTS"

stop_all () { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || :; done; wait 2>/dev/null || :; pids=(); }
uri () { echo "nbd+unix:///b?socket=$WORK/qd1.sock"; }

start_target () {
  qemu-nbd -f raw --cache=none --aio=native -x b -t -b 127.0.0.1 -p "$PORT" "$TGT" &
  pids+=($!)
  wait_until nbdinfo --size "nbd://127.0.0.1:$PORT/b"
}

start_mirrord_src () {   # start_mirrord_src STATE_DIR
  "$MIRRORD" -f --export "b=$SRC" --nbd-socket "$WORK/qd1.sock" \
    --control "$WORK/qd1.ctl" --state-dir "$1" 2>>"$WORK/qd1-mirrord.log" &
  pids+=($!)
  wait_until test -S "$WORK/qd1.sock"
}

start_qsd () {
  rm -f "$WORK/qd1.sock" "$WORK/qd1.qmp"
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=file0,filename=$SRC,cache.direct=on,aio=native" \
    --blockdev driver=raw,node-name=disk0,file=file0 \
    --nbd-server "addr.type=unix,addr.path=$WORK/qd1.sock" \
    --export type=nbd,id=exp0,node-name=disk0,name=b,writable=on \
    --chardev "socket,id=qmp0,path=$WORK/qd1.qmp,server=on,wait=off" \
    --monitor chardev=qmp0 2>>"$WORK/qd1-qsd.log" &
  pids+=($!)
  wait_until test -S "$WORK/qd1.sock"
  wait_until test -S "$WORK/qd1.qmp"
}

# start CONFIG: brings up the server (and target) for one configuration.
start () {
  rm -f "$WORK/qd1.sock" "$WORK/qd1.ctl"
  case $1 in
    mirrord-cold) rm -rf "$WORK/qd1-state"; start_mirrord_src "$WORK/qd1-state" ;;
    mirrord-warm)
      rm -rf "$WORK/qd1-state"; start_mirrord_src "$WORK/qd1-state"
      fio --name=warm --ioengine=nbd --uri="$(uri)" --rw=write --bs=1M --iodepth=8 \
        --size=1G >/dev/null 2>&1 ;;
    qemu-nbd)
      qemu-nbd -f raw --cache=none --aio=native -x b -t -k "$WORK/qd1.sock" "$SRC" &
      pids+=($!); wait_until test -S "$WORK/qd1.sock" ;;
    qsd) start_qsd ;;
    mirrord-sync|mirrord-async)
      start_target
      rm -rf "$WORK/qd1-state"; start_mirrord_src "$WORK/qd1-state"
      "$MIRRORCTL" -s "$WORK/qd1.ctl" mirror start b "nbd://127.0.0.1:$PORT/b" \
        --mode "${1#mirrord-}" >/dev/null
      "$MIRRORCTL" -s "$WORK/qd1.ctl" mirror wait b --until ready --timeout 120 >/dev/null ;;
    qsd-active|qsd-background)
      start_target; start_qsd
      $QMP "$WORK/qd1.qmp" blockdev-add \
        "{\"driver\":\"nbd\",\"node-name\":\"tgt\",\"export\":\"b\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\"}}" >/dev/null
      local mode=write-blocking; [ "$1" = qsd-active ] || mode=background
      $QMP "$WORK/qd1.qmp" blockdev-mirror \
        "{\"job-id\":\"m0\",\"device\":\"disk0\",\"target\":\"tgt\",\"sync\":\"full\",\"copy-mode\":\"$mode\"}" >/dev/null
      $QMP "$WORK/qd1.qmp" --wait-job-ready m0 120 ;;
  esac
}

job () {   # job CONFIG NAME RW BS DEPTH
  fio --name="$2" --ioengine=nbd --uri="$(uri)" --rw="$3" --bs="$4" --iodepth="$5" \
    --size=1G --time_based --runtime="$RUNTIME" --output-format=json 2>/dev/null |
    fio_summary "$1" "$2" >> "$RESULTS"
  tail -1 "$RESULTS"
}

rotate () {   # rotate ROUND ITEM...: the items, starting at ROUND mod N
  local r=$1; shift; local a=("$@") i
  for i in "${!a[@]}"; do echo "${a[$(( (i + r) % ${#a[@]} ))]}"; done
}

alone_round () {
  local c
  for c in $(rotate "$1" mirrord-cold mirrord-warm qsd qemu-nbd); do
    echo "==> round $1: $c"
    start "$c"
    job "$c" w4k-qd1 randwrite 4k 1
    job "$c" r4k-qd1 randread 4k 1
    job "$c" w4k-qd32 randwrite 4k 32
    job "$c" w1m-qd8 write 1M 8
    job "$c" r1m-qd8 read 1M 8
    stop_all
  done
}

replicated_round () {
  local c
  for c in $(rotate "$1" mirrord-sync qsd-active mirrord-async qsd-background); do
    echo "==> round $1: $c"
    start "$c"
    job "$c" w4k-qd1 randwrite 4k 1
    job "$c" w4k-qd32 randwrite 4k 32
    job "$c" w1m-qd8 write 1M 8
    stop_all
  done
}

ms_since () { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

sparse_round () {
  local sp=$WORK/qd1-sparse.img tg=$WORK/qd1-sparse-tgt.img t c
  rm -f "$sp" "$tg"; truncate -s 2G "$sp" "$tg"
  for c in $(rotate "$1" mirrord nbdcopy qemu-img); do
    fallocate -p -o 0 -l 2G "$tg"
    qemu-nbd -f raw --cache=none --aio=native -x b -t -b 127.0.0.1 -p "$PORT" "$tg" &
    pids+=($!)
    wait_until nbdinfo --size "nbd://127.0.0.1:$PORT/b"
    rm -rf "$WORK/qd1-state" "$WORK/qd1.sock" "$WORK/qd1.ctl"
    "$MIRRORD" -f --export "b=$sp" --nbd-socket "$WORK/qd1.sock" --control "$WORK/qd1.ctl" \
      --state-dir "$WORK/qd1-state" 2>>"$WORK/qd1-mirrord.log" &
    pids+=($!)
    wait_until test -S "$WORK/qd1.sock"
    t=$(date +%s%N)
    case $c in
      mirrord)
        "$MIRRORCTL" -s "$WORK/qd1.ctl" mirror start b "nbd://127.0.0.1:$PORT/b" >/dev/null
        "$MIRRORCTL" -s "$WORK/qd1.ctl" mirror wait b --until ready --timeout 60 >/dev/null ;;
      nbdcopy) nbdcopy "$(uri)" "nbd://127.0.0.1:$PORT/b" ;;
      qemu-img)
        qemu-img convert -n -W -f raw -O raw "$(uri)" "nbd://127.0.0.1:$PORT/b" ;;
    esac
    echo "$c sparse2g $(ms_since "$t") 0" >> "$RESULTS"
    tail -1 "$RESULTS"
    stop_all
  done
}

for r in $(seq "$ROUNDS"); do
  for p in $PARTS; do "${p}_round" "$r"; done
done

python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    c, j, mib, iops = line.split()[:4]
    rows[(c, j)].append(float(mib))
def med(c, j):
    v = rows.get((c, j))
    return statistics.median(v) if v else None
def table(title, configs, pairs, jobs, unit="MiB/s"):
    if not any(med(configs[0], j) for j in jobs):
        return
    print("\n%s (medians of %d rounds)\n" % (title, max(len(v) for v in rows.values())))
    print("| job | " + " | ".join(configs) + " | " + " | ".join("%s/%s" % p for p in pairs) + " |")
    print("|---|" + "---|" * (len(configs) + len(pairs)))
    for j in jobs:
        vals = [med(c, j) for c in configs]
        if None in vals:
            continue
        ratios = []
        for a, b in pairs:
            va, vb = med(a, j), med(b, j)
            # throughput: a/b; a latency (ms): b/a, so > 1 is better either way
            ratios.append(vb / va if unit == "ms" else va / vb)
        print("| %s | %s | %s |" % (j, " | ".join("%.1f %s" % (v, unit) for v in vals),
                                    " | ".join("%.2f" % r for r in ratios)))
jobs = ["w4k-qd1", "r4k-qd1", "w4k-qd32", "w1m-qd8", "r1m-qd8"]
table("Alone", ["mirrord-cold", "mirrord-warm", "qsd", "qemu-nbd"],
      [("mirrord-cold", "qsd"), ("mirrord-warm", "qsd"), ("mirrord-warm", "qemu-nbd")], jobs)
table("Replicated to qemu-nbd over loopback TCP",
      ["mirrord-sync", "qsd-active", "mirrord-async", "qsd-background"],
      [("mirrord-sync", "qsd-active"), ("mirrord-async", "qsd-active"),
       ("mirrord-async", "qsd-background")], ["w4k-qd1", "w4k-qd32", "w1m-qd8"])
table("Sparse 2 GiB image to a qemu-nbd target (ms; ratio > 1: mirrord faster)",
      ["mirrord", "nbdcopy", "qemu-img"], [("mirrord", "nbdcopy"), ("mirrord", "qemu-img")],
      ["sparse2g"], unit="ms")
PY
