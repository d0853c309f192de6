#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Cut-over against a target whose FLUSH we hold (nbdkit's eval plugin
# over a file; its flush waits while a flag file exists): a guest write
# that arrives during the final flush is held and then refused, never
# acknowledged on the source alone; the target ends identical.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdkit eval --version
requires qemu-io --version

SIZE=$((16 << 20))
truncate -s 16M "$TESTDIR/src.img" "$TESTDIR/dst.img"
qemu-io -f raw -c 'write -P 0x11 0 4M' "$TESTDIR/src.img" >/dev/null
HOLD="$TESTDIR/hold-flush"
# One request at a time (the eval default): a held flush stalls the
# target entirely, as a slow disk's would.
nbdkit -f -U "$TESTDIR/dst.sock" eval \
  get_size="echo $SIZE" \
  pread="exec dd if='$TESTDIR/dst.img' bs=1M iflag=skip_bytes,count_bytes skip=\$4 count=\$3 status=none" \
  can_write='exit 0' \
  pwrite="exec dd of='$TESTDIR/dst.img' bs=1M oflag=seek_bytes conv=notrunc seek=\$4 status=none" \
  can_flush='exit 0' \
  flush="while [ -e '$HOLD' ]; do sleep 0.01; done" &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/dst.sock"
DST="nbd+unix:///?socket=$TESTDIR/dst.sock"
field () {
  ctl a --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($1)"
}
clean () { [ "$(field 'e["dirty_bytes"]')" = 0 ]; }
cutting () { [ "$(field 'e["mirror"]["state"]')" = cutover ]; }

start_mirrord a --export "vm1=$TESTDIR/src.img"
ctl a mirror start vm1 "$DST" --mode async
ctl a mirror wait vm1 --until ready --timeout 30
poll 20 clean

# Nothing dirty: the cut-over goes straight to its final flush, held.
touch "$HOLD"
ctl a mirror cutover vm1 >/dev/null & cut=$!
poll 10 cutting
before=$(field 'e["bytes_written"]')
qemu-io -f raw -c 'write -P 0x77 8M 64k' "$(uri a vm1)" >/dev/null 2>&1 & w=$!
arrived () { [ "$(field 'e["bytes_written"]')" -gt "$before" ]; }
poll 10 arrived
rm -f "$HOLD"
wait $cut || fail "cut-over failed"
wait $w && fail "a write during the final flush was acknowledged"
qemu-img compare -f raw "$TESTDIR/src.img" "$DST" || fail "target differs"
stop_mirrord a
exit 0
