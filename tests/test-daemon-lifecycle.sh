#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrord's life: usage and config errors exit 2 naming file and line,
# runtime errors exit 1, daemon mode waits until serving, SIGTERM lets
# in-flight requests finish and exits 0.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo --version
requires qemu-io --version

# --help, --version, usage errors.
"$MIRRORD" --help | grep -- '--nbd-listen' >/dev/null || fail "--help lacks options"
"$MIRRORD" --version | grep -q '^mirrord [0-9]' || fail "--version"
expect_status 2 "$MIRRORD" --no-such-option
expect_status 2 "$MIRRORD" stray-argument
expect_status 2 "$MIRRORD" --export 'bad spec'
expect_status 2 "$MIRRORD" -c /nonexistent/mirrord.conf

# A config error names the file and the line.
cat > "$TESTDIR/bad.conf" <<CONF
[mirrord]
state-dir = $TESTDIR/state

[export vm1]
path = $TESTDIR/disk.img
format = vmdk
CONF
out=$("$MIRRORD" -f -c "$TESTDIR/bad.conf" 2>&1) && fail "bad config accepted"
[[ $out == *"$TESTDIR/bad.conf:6:"*vmdk* ]] || fail "config error lacks file:line: $out"

# TCP without TLS is refused unless --insecure (loopback too).
truncate -s 16M "$TESTDIR/disk.img"
expect_status 2 "$MIRRORD" -f --nbd-listen 0.0.0.0:0 \
  --nbd-socket "$TESTDIR/x.nbd" --control "$TESTDIR/x.ctl" --state-dir "$TESTDIR/x"

# A missing image is a runtime error (1) with a message naming it.
out=$("$MIRRORD" -f --export "vm1=$TESTDIR/missing.img" \
  --nbd-socket "$TESTDIR/m.nbd" --control "$TESTDIR/m.ctl" \
  --state-dir "$TESTDIR/m.state" 2>&1) && fail "missing image accepted"
[[ $out == *missing.img*"No such file"* ]] || fail "unclear error: $out"

# Daemon mode: the command returns once the daemon serves.
"$MIRRORD" --export "vm1=$TESTDIR/disk.img" --nbd-socket "$TESTDIR/d.nbd" \
  --control "$TESTDIR/d.ctl" --state-dir "$TESTDIR/d.state" \
  --pid-file "$TESTDIR/d.pid"
pid=$(cat "$TESTDIR/d.pid")
cleanup_fn "kill $pid 2>/dev/null"
nbdinfo "nbd+unix:///vm1?socket=$TESTDIR/d.nbd" | grep -q 'export-size: 16777216' \
  || fail "daemon not serving"
# A second daemon on the same state directory is refused.
expect_status 1 "$MIRRORD" --export "vm1=$TESTDIR/disk.img" \
  --nbd-socket "$TESTDIR/d2.nbd" --control "$TESTDIR/d2.ctl" --state-dir "$TESTDIR/d.state"
kill -TERM "$pid"
poll 10 bash -c "! kill -0 $pid"
[ ! -e "$TESTDIR/d.nbd" ] || fail "socket left behind"
[ ! -e "$TESTDIR/d.pid" ] || fail "pid file left behind"

# SIGTERM with requests in flight: they are answered, not dropped, and
# every write acknowledged before the exit is on disk.
start_mirrord a --export "vm1=$TESTDIR/disk.img"
acked=$($PY - "$(uri a vm1)" "$(mirrord_pid a)" <<'PY'
import nbd, os, signal, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(bytes([0x40]) * 262144, 0)
cookies = [h.aio_pwrite(bytes([0x40 + i]) * 262144, i * 262144) for i in range(1, 16)]
os.kill(int(sys.argv[2]), signal.SIGTERM)
acked = ["0"]
while h.aio_in_flight() > 0:
    try:
        h.poll(-1)
    except nbd.Error:
        break
for i, c in enumerate(cookies, 1):
    try:
        if h.aio_command_completed(c):
            acked.append(str(i))
    except nbd.Error as e:
        # Refused as the spec asks (ESHUTDOWN), or never sent.
        if e.errno not in ("ESHUTDOWN", "ENOTCONN"):
            sys.exit("write %d failed with %s" % (i, e))
print(" ".join(acked))
PY
)
stop_mirrord a
[ -n "$acked" ] || fail "no write acknowledged before shutdown"
for i in $acked; do
  qemu-io -f raw -r -c "read -P $((0x40 + i)) $((i * 262144)) 256k" "$TESTDIR/disk.img" \
    | grep -q 'read 262144' || fail "acknowledged write $i lost"
done
grep -q 'finishing in-flight requests' "$TESTDIR/a.log" || fail "no drain logged"
exit 0
