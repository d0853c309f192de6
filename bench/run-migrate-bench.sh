#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Issue 17's baseline: QEMU's own live migration of the running test
# guest (tests/guest/, TCG) with its disk, the way libvirt does
# --copy-storage-all: the destination QEMU (-incoming defer -S, its disk
# a local raw file) exports it with nbd-server-start + block-export-add,
# the source runs blockdev-mirror sync=full to it, the migration stops
# at pre-switchover (pause-before-switchover), the mirror is cancelled
# there (completed without pivot), then migrate-continue and cont.
# ctl/mirrord-migrate --storage qemu drives it; the guest keeps
# rewriting stamped blocks throughout.  Per round: one boot only, the
# write counter unbroken across the switch, and every acknowledged write
# on the destination's disk (a guest boots on it and reads them back).
#
#   bench/run-migrate-bench.sh [ROUNDS]          default 5
# Environment: MIG_RAM (guest MiB, 256), MIG_DISK (256M),
# MIG_SOURCE (the source QEMU's disk: mirrord = a mirrord export without
# replication, qemu-nbd; default mirrord), MIG_BANDWIDTH (migration
# max-bandwidth, bytes/s; default 1G), MIG_DOWNTIME (downtime-limit ms;
# default QEMU's, 300).
set -eo pipefail   # tests/functions.sh is not written for -u
srcdir=$(cd "$(dirname "$0")/.." && pwd)
export top_srcdir=$srcdir top_builddir=${top_builddir:-$srcdir/build}
# shellcheck source=../tests/functions.sh
source "$srcdir/tests/functions.sh"
# shellcheck source=../tests/guest-functions.sh
source "$srcdir/tests/guest-functions.sh"
ROUNDS=${1:-5}
export GUEST_RAM=${MIG_RAM:-256}
DISK=${MIG_DISK:-256M}
SOURCE=${MIG_SOURCE:-mirrord}
JOB="mirrord.seed=$$ mirrord.count=256"
RESULTS=$TESTDIR/results.jsonl
# MIG_KEEP=1 keeps the work directory (its rm is the first clean-up).
[ -z "${MIG_KEEP:-}" ] || _cleanup_fns[0]="echo 'kept $TESTDIR'"
guest_requires
requires qemu-nbd --version

# source_disk R: the source QEMU's -blockdev for round R's src image.
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

round () {
  local r=$1 src=s$1 dst=d$1
  truncate -s "$DISK" "$TESTDIR/src$r.img" "$TESTDIR/dst$r.img"
  # 16 MiB of data past the guest's blocks: the mirror has data to copy.
  head -c 16M /dev/urandom | dd of="$TESTDIR/src$r.img" bs=1M seek=128 conv=notrunc status=none
  source_disk "$r"
  start_guest_qmp $src "$BLOCKDEV" "mirrord.mode=writeloop $JOB"
  poll 300 _guest_acked_at_least $src 20 || fail "the guest wrote nothing: $(tail -3 "$TESTDIR/$src.console")"
  dest_guest_cmd $dst "driver=file,node-name=d0,filename=$TESTDIR/dst$r.img" \
    "mirrord.mode=writeloop $JOB"
  migrate_guest $src $dst "$TESTDIR/r$r.json" --storage qemu \
    --dst-nbd "$TESTDIR/dnbd$r.sock" --max-bandwidth "${MIG_BANDWIDTH:-1073741824}" \
    ${MIG_DOWNTIME:+--downtime-limit "$MIG_DOWNTIME"} --timeout 300 \
    || fail "round $r: the migration failed"
  verify_migrated $src $dst "driver=file,node-name=d0,filename=$TESTDIR/dst$r.img,read-only=on" \
    "$JOB" > "$TESTDIR/r$r.check" \
    || { cat "$TESTDIR/r$r.check"; fail "round $r: the check failed"; }
  $PY - "$TESTDIR/r$r.json" "$TESTDIR/r$r.check" "$r" >> "$RESULTS" <<'PY'
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
print("round %(round)d: total %(total_s).3f s, downtime %(downtime_ms)s ms, paused for the mirror %(storage_switch_ms)s ms, RAM %(ram_bytes)d B, disk %(disk_bytes)d B, acked %(acked)d, lost %(lost)d" % f)' < "$RESULTS"
  sed 's/^/  /' "$TESTDIR/r$r.check"
}

echo "QEMU $($QEMU_SYSTEM --version | head -1 | awk '{print $4}'), guest RAM ${GUEST_RAM} MiB, disk $DISK (source: $SOURCE), $ROUNDS rounds; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do round "$r"; done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
$PY - "$RESULTS" <<'PY'
import json, statistics, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
def row(label, key, fmt, scale=1):
    v = [r[key] / scale for r in rs]
    print("  %-30s %s (%s-%s)" % (label, fmt % statistics.median(v), fmt % min(v), fmt % max(v)))
print("medians over %d rounds (min-max):" % len(rs))
row("total time, s", "total_s", "%.3f")
row("migrate -> cont, s", "migrate_s", "%.3f")
row("downtime (query-migrate), ms", "downtime_ms", "%d")
row("paused for the mirror, ms", "storage_switch_ms", "%.1f")
row("RAM transferred, MiB", "ram_bytes", "%.1f", 1048576)
row("disk copied (mirror), MiB", "disk_bytes", "%.1f", 1048576)
row("acknowledged writes", "acked", "%d")
print("  lost acknowledged writes       %d in all rounds" % sum(r["lost"] for r in rs))
PY
