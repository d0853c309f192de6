#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC §6.3/6.4: an async mirror over a link slower than the guest's
# writes (--bandwidth) switches itself to write-blocking once the lag
# passes max-lag, so the lag stays bounded, and back to async when it
# has caught up; sync mode acknowledges writes only once the target has
# them.  Either way the target ends identical.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd --version
requires qemu-io --version

truncate -s 128M "$TESTDIR/src.img" "$TESTDIR/dst.img"
qemu-nbd -f raw -x vm1 -k "$TESTDIR/dst.sock" -t "$TESTDIR/dst.img" &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/dst.sock"
DST="nbd+unix:///vm1?socket=$TESTDIR/dst.sock"
field () {
  ctl a --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($1)"
}

start_mirrord a --export "vm1=$TESTDIR/src.img,max-lag=4M"
ctl a mirror start vm1 "$DST" --mode async --bandwidth 4M
ctl a mirror wait vm1 --until ready --timeout 30

# 24 MiB written as fast as the guest can: far faster than 4 MB/s.
$PY - "$(uri a vm1)" "$TESTDIR/maxdirty" <<'PY' &
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(384):                  # 384 x 64 KiB, distinct granules
    h.pwrite(os.urandom(65536), i * 2 * 65536)
h.flush()
PY
writer=$!
blocking () { [ "$(field 'e["mirror"]["lag_bound_held"]')" = True ]; }
poll 30 blocking || fail "never switched to write-blocking"
grep -q 'switching to write-blocking' "$TESTDIR/a.log" || fail "switch not logged"
# While blocking, the lag stays near the bound (writes wait for the link).
lag=$(field 'e["dirty_bytes"]')
[ "$lag" -le $((12 << 20)) ] || fail "lag $lag grew far past max-lag"
wait $writer
caught_up () { ! blocking; }
poll 60 caught_up || fail "never switched back"
grep -q 'writes flow again' "$TESTDIR/a.log" || fail "switch back not logged"
ctl a mirror wait vm1 --until ready --timeout 60
ctl a mirror cutover vm1 >/dev/null
qemu-img compare -f raw -F raw "$TESTDIR/src.img" "$TESTDIR/dst.img"
stop_mirrord a

# sync mode: once the write is acknowledged the target has it, before
# any pass could have copied it (the link is throttled to a crawl).
truncate -s 128M "$TESTDIR/src2.img"
start_mirrord b --export "vm1=$TESTDIR/src2.img"
ctl b mirror start vm1 "$DST" --mode sync --bandwidth 64K
ctl b mirror wait vm1 --until ready --timeout 30
qemu-io -f raw -c 'write -P 0x7e 64M 1M' "$(uri b vm1)" >/dev/null
qemu-io -f raw -r -U -c 'read -P 0x7e 64M 1M' "$TESTDIR/dst.img" | grep -q 'read 1048576' \
  || fail "sync mode acknowledged a write the target does not have"
stop_mirrord b
exit 0
