#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC §2.2 end to end against qemu-nbd: mirror start (async), writes
# during the bulk copy and after, mirror wait --until ready, status
# fields, cut-over, then the target is identical, stayed sparse, and
# the source refuses writes.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd --version
requires qemu-io --version

truncate -s 256M "$TESTDIR/src.img" "$TESTDIR/dst.img"
qemu-io -f raw -c 'write -P 0x11 0 8M' -c 'write -P 0x22 100M 3M' \
  -c 'write -P 0x33 250M 64k' "$TESTDIR/src.img" >/dev/null
qemu-nbd -f raw -x vm1 -k "$TESTDIR/dst.sock" -t "$TESTDIR/dst.img" &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/dst.sock"
DST="nbd+unix:///vm1?socket=$TESTDIR/dst.sock"

start_mirrord a --export "vm1=$TESTDIR/src.img"
# A guest keeps writing while the mirror starts.
qemu-io -f raw -c 'write -P 0x44 50M 4M' -c 'write -P 0x55 7M 2M' \
  "$(uri a vm1)" >/dev/null &
writer=$!
ctl a mirror start vm1 "$DST" --mode async
wait $writer
ctl a mirror wait vm1 --until ready --timeout 60
ctl a --json status vm1 > "$TESTDIR/status.json"
$PY - "$TESTDIR/status.json" "$DST" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["exports"][0]["mirror"]
for k in ("target", "state", "mode", "total_bytes", "done_bytes",
          "remaining_bytes", "rate_bytes_per_s", "eta_s", "error"):
    assert k in m, k
assert m["target"] == sys.argv[2] and m["mode"] == "async", m
assert m["state"] == "ready", m
assert m["done_bytes"] >= 256 << 20 and m["total_bytes"] >= m["done_bytes"], m
assert m["error"] is None, m
# The target read as zero where the source has holes: nothing was sent
# for most of the 256 MiB (the probe used the target's base:allocation).
assert m["zeroes_skipped_bytes"] >= 200 << 20, m
PY

# Writes in the ready state are mirrored continuously.
qemu-io -f raw -c 'write -P 0x66 200M 1M' -c 'write -z 0 1M' "$(uri a vm1)" >/dev/null
out=$(ctl a --json mirror cutover vm1)
$PY -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["mirror"]["state"] == "completed", r
assert 0 <= r["downtime_ms"] < 1000, r
print("cut-over downtime %.2f ms" % r["downtime_ms"])' "$out"

# The target is identical, and sparse: only the data was allocated.
qemu-img compare -f raw -F raw "$TESTDIR/src.img" "$TESTDIR/dst.img"
used=$(du -k "$TESTDIR/dst.img" | cut -f1)
[ "$used" -lt $((64 * 1024)) ] || fail "target not sparse: $used KiB allocated"
# The source refuses writes from now on.
$PY - "$(uri a vm1)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.is_read_only(), "cut-over export still writable"
h.set_strict_mode(0)
try:
    h.pwrite(b"x" * 512, 0)
    sys.exit("write accepted after cut-over")
except nbd.Error as e:
    assert e.errno == "EPERM", e
PY
stop_mirrord a
exit 0
