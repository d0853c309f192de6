#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The mirror's status tells the truth (docs/control-api.md): a new
# mirror after a failed one never shows the old one's error, not even
# when its own connection later drops (libnbd's last error on the
# thread is the old one's); the error clears when the target is back;
# the rate is 0 and "eta_s" null (unknown) while nothing moves and data
# remains, 0 once nothing remains, and never a huge number.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd --version
requires qemu-io --version

truncate -s 32M "$TESTDIR/src.img" "$TESTDIR/dst.img"
qemu-io -f raw -c 'write -P 0x11 0 16M' "$TESTDIR/src.img" >/dev/null
start_mirrord a --export "vm1=$TESTDIR/src.img"
DST="nbd+unix:///t?socket=$TESTDIR/t.sock"
start_target () {
  qemu-nbd -f raw -x t -k "$TESTDIR/t.sock" "$TESTDIR/dst.img" &
  qpid=$!
  cleanup_fn "kill $qpid 2>/dev/null"
  poll 10 test -S "$TESTDIR/t.sock"
}

# mirror_is FIELD=PYTHON-EXPR...: every expression holds for the mirror
# object m (polled with the same expressions).
mirror_is () {
  ctl a --json status vm1 | $PY -c '
import json, sys
m = json.load(sys.stdin)["exports"][0]["mirror"]
eta = m["eta_s"]
assert eta is None or (type(eta) is int and 0 <= eta < 10**6), m
for cond in sys.argv[1:]:
    assert eval(cond), (cond, m)' "$@"
}

# A first mirror fails: nothing listens on that port.
port=$(free_port)
expect_status 1 ctl a mirror start vm1 "nbd://127.0.0.1:$port/t" 2>"$TESTDIR/err"
grep -q "Connection refused" "$TESTDIR/err" || fail "first mirror: $(cat "$TESTDIR/err")"
mirror_is 'm["state"] == "failed"' '"Connection refused" in m["error"]' \
  'm["remaining_bytes"] > 0' 'm["rate_bytes_per_s"] == 0' 'm["eta_s"] is None'

# A new mirror: its own status, no error, done.
start_target
ctl a mirror start vm1 "$DST" --mode async >/dev/null
ctl a mirror wait vm1 --until ready --timeout 30 >/dev/null
mirror_is 'm["state"] == "ready"' 'm["error"] is None' \
  'm["remaining_bytes"] == 0' 'm["eta_s"] == 0'
# Let the rate tick see the copy, so there is a rate to decay.
poll 10 mirror_is 'm["rate_bytes_per_s"] > 0'

# Its target goes away.  The drop is this mirror's news, not the
# failed one's.
kill $qpid
wait $qpid 2>/dev/null || :
poll 20 mirror_is 'm["state"] == "disconnected"'
mirror_is '"Connection refused" not in (m["error"] or "")'
grep "mirror to $DST: ready -> disconnected" "$TESTDIR/a.log" > "$TESTDIR/drop"
grep -q "connection lost" "$TESTDIR/drop" && ! grep -q "refused" "$TESTDIR/drop" \
  || fail "the drop was reported as: $(cat "$TESTDIR/drop")"

# Data waits and nothing moves: no rate, an unknown ETA.
qemu-io -f raw -c 'write -P 0x22 20M 1M' "$(uri a vm1)" >/dev/null
mirror_is 'm["remaining_bytes"] >= 1 << 20' 'm["rate_bytes_per_s"] == 0' \
  'm["eta_s"] is None'
ctl a status vm1 | grep -q "ETA unknown" || fail "human status: $(ctl a status vm1)"

# The target is back: no error any more, nothing left, ETA 0.
start_target
poll 30 mirror_is 'm["state"] == "ready"' 'm["remaining_bytes"] == 0'
mirror_is 'm["error"] is None' 'm["eta_s"] == 0'

# Once the job is over there is no rate either.
ctl a mirror cancel vm1 >/dev/null
mirror_is 'm["state"] == "cancelled"' 'm["rate_bytes_per_s"] == 0'
stop_mirrord a
exit 0
