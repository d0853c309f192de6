#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Mirroring a mostly unallocated 1 GiB qcow2 (an overlay with zero
# clusters over a compressed qcow2 base) to a sparse raw file served by
# qemu-nbd: block status lets the mirror skip everything unallocated,
# so little is copied (status counters) and the target stays sparse
# (stat), and after the cut-over the target equals the source.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
requires qemu-nbd --version
cd "$TESTDIR"

truncate -s 64M b.raw
qemu-io -f raw -c 'write -P 0x61 0 2M' -c 'write -P 0x62 40M 1M' b.raw >/dev/null
qemu-img convert -c -O qcow2 b.raw base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 src.qcow2 1G
qio src.qcow2 'write -P 0x71 1M 2M' 'write -z 40M 512k' 'write -P 0x72 300M 1M' \
  'write -z 600M 64M' 'write -P 0x73 1073741312 512' 'write -z -u 0 64k'
truncate -s 1G dst.img
qemu-nbd -f raw -x vm1 -k "$TESTDIR/dst.sock" -t dst.img &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/dst.sock"
DST="nbd+unix:///vm1?socket=$TESTDIR/dst.sock"

start_mirrord a --export "vm1=$TESTDIR/src.qcow2,format=qcow2"
ctl a mirror start vm1 "$DST" --mode async
# A guest write while the mirror runs.
qio "$(uri a vm1)" 'write -P 0x74 500M 1M'
ctl a mirror wait vm1 --until ready --timeout 60
ctl a --json status vm1 > status.json
$PY - status.json <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["exports"][0]["mirror"]
print("mirror:", {k: m.get(k) for k in ("state", "done_bytes", "total_bytes",
                                        "zeroes_skipped_bytes", "fast_zero_bytes")})
assert m["state"] == "ready", m
assert m["error"] is None, m
# Everything but the few MiB of data read as zero on both sides.
assert m["zeroes_skipped_bytes"] >= 900 << 20, m
PY
ctl a mirror cutover vm1 >/dev/null
stop_mirrord a

qemu-img compare -q -f raw -F qcow2 dst.img src.qcow2 || fail "target differs from the source"
used=$(( $(stat -c %b dst.img) * $(stat -c %B dst.img) ))
echo "target: $used bytes allocated"
[ "$used" -lt $((32 << 20)) ] || fail "target not sparse: $used bytes allocated"
check_clean src.qcow2
exit 0
