#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Issue 17: live migration of the running test guest (tests/guest/,
# TCG) with its disk, measured; ctl/mirrord-migrate drives it, the guest
# keeps rewriting stamped blocks throughout.  Per round: one boot only,
# the write counter unbroken across the switch, and every acknowledged
# write on the destination's disk (a guest boots on it and reads them
# back).
#
# MIG_STORAGE=qemu (the default): the baseline, QEMU's own flow, the way
# libvirt does --copy-storage-all: the destination QEMU (-incoming defer
# -S, its disk a local raw file) exports it with nbd-server-start +
# block-export-add, the source runs blockdev-mirror sync=full to it, the
# migration stops at pre-switchover (pause-before-switchover), the
# mirror is cancelled there (completed without pivot), then
# migrate-continue and cont.
# MIG_STORAGE=mirrord: the same guest and workload on a sync pair of
# mirrords (a, the source's, primary; b secondary; in sync before the
# guest starts), the destination QEMU on b's export, the daemons'
# migration window (mirrorctl migrate ...: docs/migration.md):
# incoming on b, start on a, handover on a at pre-switchover.
# MIG_STORAGE=both: ROUNDS of each, alternating (qemu, mirrord, qemu,
# ...), so both see the same load; the medians side by side.
#
#   bench/run-migrate-bench.sh [ROUNDS]          default 5 (of each)
# Environment: MIG_RAM (guest MiB, 256), MIG_DISK (256M),
# MIG_SOURCE (qemu storage: the source QEMU's disk, mirrord = a mirrord
# export without replication, or qemu-nbd; default mirrord),
# MIG_BANDWIDTH (migration max-bandwidth, bytes/s; default 1G),
# MIG_DOWNTIME (downtime-limit ms; default QEMU's, 300), MIG_KEEP=1.
set -eo pipefail   # tests/functions.sh is not written for -u
srcdir=$(cd "$(dirname "$0")/.." && pwd)
export top_srcdir=$srcdir top_builddir=${top_builddir:-$srcdir/build}
# shellcheck source=SCRIPTDIR/../tests/functions.sh
source "$srcdir/tests/functions.sh"
# shellcheck source=SCRIPTDIR/../tests/guest-functions.sh
source "$srcdir/tests/guest-functions.sh"
# shellcheck source=SCRIPTDIR/../tests/ha-functions.sh
source "$srcdir/tests/ha-functions.sh"
ROUNDS=${1:-5}
export GUEST_RAM=${MIG_RAM:-256}
DISK=${MIG_DISK:-256M}
SOURCE=${MIG_SOURCE:-mirrord}
STORAGE=${MIG_STORAGE:-qemu}
JOB="mirrord.seed=$$ mirrord.count=256"
RESULTS=$TESTDIR/results.jsonl
# MIG_KEEP=1 keeps the work directory (its rm is the first clean-up).
[ -z "${MIG_KEEP:-}" ] || _cleanup_fns[0]="echo 'kept $TESTDIR'"
guest_requires
requires qemu-nbd --version

# source_disk R: the source QEMU's -blockdev (BLOCKDEV) for round R's
# src image, with the qemu flow.
source_disk () {
  local r=$1
  case $SOURCE in
    mirrord)
      start_mirrord "m$r" --export "vm1=$TESTDIR/src$r.img" >/dev/null
      sock=$TESTDIR/m$r.nbd ;;
    qemu-nbd)
      qemu-nbd -f raw -x vm1 -t -k "$TESTDIR/n$r.sock" "$TESTDIR/src$r.img" \
        2>"$TESTDIR/n$r.log" &
      cleanup_fn "kill $! 2>/dev/null; wait $! 2>/dev/null"
      sock=$TESTDIR/n$r.sock
      poll 30 nbdinfo "nbd+unix:///vm1?socket=$sock" ;;
    *) fail "MIG_SOURCE: mirrord or qemu-nbd" ;;
  esac
  BLOCKDEV="driver=nbd,node-name=d0,server.type=unix,server.path=$sock,export=vm1"
}

# 16 MiB of data past the guest's blocks: something to copy.
some_data () {
  head -c 16M /dev/urandom | dd of="$1" bs=1M seek=128 conv=notrunc status=none
}

# setup_qemu R / setup_mirrord R: round R's disks; they set BLOCKDEV
# (the source QEMU's disk), DSTDEV (the destination's), VERIFYDEV (the
# verifier's, read-only) and MIGARGS (mirrord-migrate's storage options).
setup_qemu () {
  local r=$1
  truncate -s "$DISK" "$TESTDIR/src$r.img" "$TESTDIR/dst$r.img"
  some_data "$TESTDIR/src$r.img"
  source_disk "$r"
  DSTDEV="driver=file,node-name=d0,filename=$TESTDIR/dst$r.img"
  VERIFYDEV="$DSTDEV,read-only=on"
  MIGARGS=(--storage qemu --dst-nbd "$TESTDIR/dnbd$r.sock")
}

setup_mirrord () {
  rm -rf "$TESTDIR/a.state" "$TESTDIR/b.state" "$TESTDIR/a.img" "$TESTDIR/b.img"
  truncate -s "$DISK" "$TESTDIR/a.img" "$TESTDIR/b.img"
  some_data "$TESTDIR/a.img"
  start_pair_member b secondary ,mode=sync >/dev/null
  start_pair_member a primary ,mode=sync >/dev/null
  poll 300 pair_in_sync a || fail "the pair did not get in sync: $(ctl a status vm1)"
  BLOCKDEV="driver=nbd,node-name=d0,server.type=unix,server.path=$TESTDIR/a.nbd,export=vm1"
  DSTDEV=${BLOCKDEV/a.nbd/b.nbd}
  VERIFYDEV="$DSTDEV,read-only=on"
  MIGARGS=(--storage mirrord --export vm1 --src-control "$TESTDIR/a.ctl"
           --dst-control "$TESTDIR/b.ctl" --mirrorctl "$MIRRORCTL")
}

# round R STORAGE: one migration with that storage; its figures (and
# storage) appended to $RESULTS.  Files are named after K (q1, m1, ...).
round () {
  local r=$1 storage=$2 k=${2:0:1}$1
  local src=s$k dst=d$k
  "setup_$storage" "$k"
  start_guest_qmp "$src" "$BLOCKDEV" "mirrord.mode=writeloop $JOB"
  poll 300 _guest_acked_at_least "$src" 20 || fail "the guest wrote nothing: $(tail -3 "$TESTDIR/$src.console")"
  dest_guest_cmd "$dst" "$DSTDEV" "mirrord.mode=writeloop $JOB"
  migrate_guest "$src" "$dst" "$TESTDIR/r$k.json" "${MIGARGS[@]}" \
    --max-bandwidth "${MIG_BANDWIDTH:-1073741824}" \
    ${MIG_DOWNTIME:+--downtime-limit "$MIG_DOWNTIME"} --timeout 300 \
    || fail "round $r ($storage): the migration failed"
  verify_migrated "$src" "$dst" "$VERIFYDEV" "$JOB" > "$TESTDIR/r$k.check" \
    || { cat "$TESTDIR/r$k.check"; fail "round $r ($storage): the check failed"; }
  if [ "$storage" = mirrord ]; then stop_mirrord a; stop_mirrord b; fi
  $PY - "$TESTDIR/r$k.json" "$TESTDIR/r$k.check" "$r" >> "$RESULTS" <<'PY'
import json, re, sys
f = json.load(open(sys.argv[1]))
check = open(sys.argv[2]).read()
f["lost"] = int(re.search(r"lost (\d+)", check).group(1))
f["acked"] = int(re.search(r"acknowledged writes (\d+)", check).group(1))
f["after_switch"] = int(re.search(r"after the switch (\d+)", check).group(1))
f["round"] = int(sys.argv[3])
print(json.dumps(f))
PY
  $PY -c 'import json,sys; f=json.loads(sys.stdin.readlines()[-1])
print("round %(round)d (%(storage)s): total %(total_s).3f s, downtime %(downtime_ms)s ms, paused for the storage %(storage_switch_ms)s ms, hand-over %(handover_ms)s ms, RAM %(ram_bytes)d B, disk %(disk_bytes)s B, acked %(acked)d, lost %(lost)d" % f)' < "$RESULTS"
  sed 's/^/  /' "$TESTDIR/r$k.check"
}

case $STORAGE in
  qemu|mirrord) storages=$STORAGE ;;
  both) storages="qemu mirrord" ;;
  *) fail "MIG_STORAGE: qemu, mirrord or both" ;;
esac
echo "QEMU $($QEMU_SYSTEM --version | head -1 | awk '{print $4}'), guest RAM ${GUEST_RAM} MiB, disk $DISK, storage $STORAGE$([ "$STORAGE" != mirrord ] && echo " (qemu flow's source: $SOURCE)"), $ROUNDS rounds$([ "$STORAGE" = both ] && echo " of each, alternating"); load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for st in $storages; do round "$r" "$st"; done
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
$PY - "$RESULTS" <<'PY'
import json, statistics, sys
every = [json.loads(l) for l in open(sys.argv[1])]
def row(rs, label, key, fmt, scale=1):
    if any(r.get(key) is None for r in rs):
        print("  %-30s n/a" % label)
        return
    v = [r[key] / scale for r in rs]
    print("  %-30s %s (%s-%s)" % (label, fmt % statistics.median(v), fmt % min(v), fmt % max(v)))
med = {}
for storage in ("qemu", "mirrord"):
    rs = [r for r in every if r["storage"] == storage]
    if not rs:
        continue
    med[storage] = {k: statistics.median(r[k] for r in rs) for k in ("total_s", "downtime_ms")}
    print("%s storage: medians over %d rounds (min-max):" % (storage, len(rs)))
    row(rs, "total time, s", "total_s", "%.3f")
    row(rs, "migrate -> cont, s", "migrate_s", "%.3f")
    row(rs, "downtime (query-migrate), ms", "downtime_ms", "%d")
    row(rs, "paused for the storage, ms", "storage_switch_ms", "%.1f")
    row(rs, "hand-over (mirrord), ms", "handover_ms", "%.1f")
    row(rs, "RAM transferred, MiB", "ram_bytes", "%.1f", 1048576)
    row(rs, "disk bytes moved, MiB", "disk_bytes", "%.1f", 1048576)
    row(rs, "acknowledged writes", "acked", "%d")
    print("  lost acknowledged writes       %d in all rounds" % sum(r["lost"] for r in rs))
if len(med) == 2:
    q, m = med["qemu"], med["mirrord"]
    print("mirrord against qemu (medians): downtime %d vs %d ms (%s), total %.3f vs %.3f s = %.2fx (%s 1.1x)"
          % (m["downtime_ms"], q["downtime_ms"],
             "<=" if m["downtime_ms"] <= q["downtime_ms"] else ">",
             m["total_s"], q["total_s"], m["total_s"] / q["total_s"],
             "<=" if m["total_s"] <= 1.1 * q["total_s"] else ">"))
PY
