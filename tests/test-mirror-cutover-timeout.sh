#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC §4: `mirror cutover --timeout` over a link too slow to drain in
# time (--bandwidth 2M, 8 MiB freshly dirty) exits 4 quickly, saying
# how much was left; the mirror goes back to ready and keeps mirroring,
# a guest write held during the attempt completes, the export takes
# writes; a cut-over without a timeout then succeeds and the target is
# identical.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd --version
requires qemu-io --version

truncate -s 64M "$TESTDIR/src.img" "$TESTDIR/dst.img"
qemu-nbd -f raw -x vm1 -k "$TESTDIR/dst.sock" -t "$TESTDIR/dst.img" &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/dst.sock"
field () {
  ctl a --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($1)"
}
state () { field 'e["mirror"]["state"]'; }
now_ms () { echo $(( $(date +%s%N) / 1000000 )); }

start_mirrord a --export "vm1=$TESTDIR/src.img"
ctl a mirror start vm1 "nbd+unix:///vm1?socket=$TESTDIR/dst.sock" --mode async --bandwidth 2M
ctl a mirror wait vm1 --until ready --timeout 30
# 8 MiB at 2 MB/s: about 3 s to drain, far more than the timeout.
qemu-io -f raw -c 'write -P 0x5a 0 8M' "$(uri a vm1)" >/dev/null

t0=$(now_ms)
ctl a mirror cutover vm1 --timeout 1 >/dev/null 2>"$TESTDIR/cut.err" & cut=$!
cutting () { [ "$(state)" = cutover ]; }
poll 10 cutting
# A guest write during the attempt is held, then goes on.
before=$(field 'e["bytes_written"]')
qemu-io -f raw -c 'write -P 0x6b 32M 64k' "$(uri a vm1)" >/dev/null & w=$!
arrived () { [ "$(field 'e["bytes_written"]')" -gt "$before" ]; }
poll 10 arrived
held=$(state)
expect_status 4 wait $cut
elapsed=$(( $(now_ms) - t0 ))
[ "$elapsed" -lt 3000 ] || fail "cut-over --timeout 1 took ${elapsed} ms"
grep -q 'still to copy' "$TESTDIR/cut.err" || fail "no word on what was left: $(cat "$TESTDIR/cut.err")"
grep -q 'timed out after' "$TESTDIR/a.log" || fail "timeout not logged"
[ "$(state)" = ready ] || fail "state $(state) after the timeout, expected ready"
wait $w || fail "a write held by the cut-over failed (held while: $held)"
qemu-io -f raw -r -U -c 'read -P 0x6b 32M 64k' "$TESTDIR/src.img" | grep -q 'read 65536' \
  || fail "the held write is not on the source"

# Still writable, still mirroring (the bits were kept: it all arrives).
qemu-io -f raw -c 'write -P 0x7c 48M 64k' "$(uri a vm1)" >/dev/null \
  || fail "the export refuses writes after a timed-out cut-over"
ctl a mirror cutover vm1 >/dev/null
[ "$(state)" = completed ] || fail "state $(state) after the cut-over"
qemu-img compare -f raw -F raw "$TESTDIR/src.img" "$TESTDIR/dst.img"
stop_mirrord a
exit 0
