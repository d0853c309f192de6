#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC §6.3/6.4 over a slow link rather than a --bandwidth cap: the
# target is nbdkit's delay filter (every write and zero 100 ms late), so
# with at most max-lag (4 MiB) of forwards in flight the link carries
# about 40 MB/s — less than a guest writing as fast as it can.  The
# mirror switches to write-blocking by itself, the lag stays near
# max-lag, it switches back once the writer stops, and after the
# cut-over the target equals the source.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdkit --filter=delay memory 1M --dump-plugin
requires qemu-img --version

truncate -s 64M "$TESTDIR/src.img"
nbdkit -f -U "$TESTDIR/dst.sock" --filter=delay memory 64M wdelay=100ms &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/dst.sock"
DST="nbd+unix:///?socket=$TESTDIR/dst.sock"
field () {
  ctl a --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($1)"
}
now_ms () { echo $(( $(date +%s%N) / 1000000 )); }

start_mirrord a --export "vm1=$TESTDIR/src.img,max-lag=4M"
ctl a mirror start vm1 "$DST" --mode async
ctl a mirror wait vm1 --until ready --timeout 20

# 24 MiB in distinct 64 KiB granules, as fast as the guest can.
t0=$(now_ms)
$PY - "$(uri a vm1)" <<'PY' &
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(384):
    h.pwrite(os.urandom(65536), i * 2 * 65536)
h.flush()
PY
writer=$!
blocking () { [ "$(field 'e["mirror"]["lag_bound_held"]')" = True ]; }
poll 20 blocking || fail "never switched to write-blocking"
grep -q 'switching to write-blocking' "$TESTDIR/a.log" || fail "switch not logged"
lag=$(field 'e["dirty_bytes"]')
[ "$lag" -le $((12 << 20)) ] || fail "lag $lag grew far past max-lag"
wait $writer
writer_ms=$(( $(now_ms) - t0 ))
caught_up () { ! blocking; }
poll 20 caught_up || fail "never switched back"
ctl a mirror wait vm1 --until ready --timeout 20
ctl a mirror cutover vm1 >/dev/null
echo "24 MiB written in ${writer_ms} ms (the link: ~600 ms); lag while blocking: $lag"
qemu-img compare -f raw "$TESTDIR/src.img" "$DST" || fail "target differs"
stop_mirrord a
exit 0
