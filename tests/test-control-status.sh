#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrorctl status, human and --json: every SPEC §4 field of every
# export, `status EXPORT`, an unknown export, the socket's mode, -s and
# $MIRRORD_CONTROL, and the exit codes for usage (2), an unreachable
# daemon (3) and the commands the daemon does not know yet (1).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version

truncate -s 16M "$TESTDIR/a.img"
truncate -s 1G "$TESTDIR/b.img"
start_mirrord s --export "vm1=$TESTDIR/a.img" \
  --export "vm2=$TESTDIR/b.img,format=raw,readonly"

[ "$(stat -c %a "$TESTDIR/s.ctl")" = 600 ] \
  || fail "control socket mode is $(stat -c %a "$TESTDIR/s.ctl"), not 600"

# Put some traffic on vm1 so the counters are not all zero.
qemu-io -f raw -c 'write -P 0x11 0 64k' -c 'read -P 0x11 0 64k' \
  "$(uri s vm1)" >/dev/null

# --json status: one document, both exports, every contract field.
ctl s --json status > "$TESTDIR/all.json"
$PY - "$TESTDIR/all.json" "$TESTDIR" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
d = sys.argv[2]
ex = {e["name"]: e for e in doc["exports"]}
assert sorted(ex) == ["vm1", "vm2"], ex.keys()
want = {
    "vm1": dict(path=d + "/a.img", size=16 << 20, readonly=False, writable=True),
    "vm2": dict(path=d + "/b.img", size=1 << 30, readonly=True, writable=False),
}
for name, w in want.items():
    e = ex[name]
    for k in ("name", "path", "format", "size", "role", "disk", "granularity",
              "dirty_bytes", "mirror", "peer"):
        assert k in e, "%s lacks %s" % (name, k)
    assert e["name"] == name
    assert e["path"] == w["path"], e["path"]
    assert e["format"] == "raw", e["format"]
    assert type(e["size"]) is int and e["size"] == w["size"], e["size"]
    assert e["role"] == "primary", e["role"]
    assert e["disk"] == "uptodate", e["disk"]
    assert type(e["granularity"]) is int and e["granularity"] == 65536
    assert type(e["dirty_bytes"]) is int
    assert e["mirror"] is None and e["peer"] is None
    assert e["readonly"] is w["readonly"] and e["writable"] is w["writable"]
    assert e["clients"] == 0
assert ex["vm1"]["bytes_written"] == 65536, ex["vm1"]
# The 64 KiB written at 0 is one dirty granule; nothing else is dirty.
assert ex["vm1"]["dirty_bytes"] == 65536, ex["vm1"]
assert ex["vm2"]["dirty_bytes"] == 0, ex["vm2"]
assert ex["vm1"]["bytes_read"] == 65536, ex["vm1"]
assert ex["vm2"]["bytes_written"] == 0
PY

# status EXPORT: the same document shape, just that export.
ctl s --json status vm2 > "$TESTDIR/one.json"
$PY -c '
import json, sys
doc = json.load(open(sys.argv[1]))
assert list(doc) == ["exports"], doc
assert [e["name"] for e in doc["exports"]] == ["vm2"], doc
' "$TESTDIR/one.json"
# --json after the command word is accepted too.
ctl s status vm1 --json | $PY -c '
import json, sys; assert json.load(sys.stdin)["exports"][0]["size"] == 16 << 20'

# Human output names each export with its format, size, path, role.
out=$(ctl s status)
[[ $out == *"vm1: raw 16.0 MiB $TESTDIR/a.img"* ]] || fail "human status: $out"
[[ $out == *"vm2: raw 1.0 GiB $TESTDIR/b.img (readonly)"* ]] || fail "human status: $out"
[[ $out == *"role primary, disk uptodate"* ]] || fail "human status: $out"
[[ $out == *"mirror: none"* && $out == *"peer: none"* ]] || fail "human status: $out"
out=$(ctl s status vm1)
[[ $out == vm1:* && $out != *vm2* ]] || fail "status vm1: $out"

# An unknown export: exit 1, the daemon's message on stderr, no stdout.
expect_status 1 ctl s status vm9 >"$TESTDIR/out" 2>"$TESTDIR/err"
grep -q 'export vm9 not found' "$TESTDIR/err" || fail "stderr: $(cat "$TESTDIR/err")"
[ ! -s "$TESTDIR/out" ] || fail "stdout on error: $(cat "$TESTDIR/out")"
expect_status 1 ctl s --json status vm9 2>/dev/null

# The socket: -s wins over $MIRRORD_CONTROL, which wins over the default.
MIRRORD_CONTROL="$TESTDIR/s.ctl" "$MIRRORCTL" status vm1 | grep -q '^vm1:' \
  || fail "MIRRORD_CONTROL ignored"
MIRRORD_CONTROL="$TESTDIR/nowhere.ctl" "$MIRRORCTL" -s "$TESTDIR/s.ctl" status vm1 \
  | grep -q '^vm1:' || fail "-s does not override MIRRORD_CONTROL"
"$MIRRORCTL" --socket "$TESTDIR/s.ctl" status vm1 | grep -q '^vm1:' \
  || fail "--socket"
expect_status 3 env MIRRORD_CONTROL="$TESTDIR/nowhere.ctl" "$MIRRORCTL" status \
  2>"$TESTDIR/err"
grep -q "$TESTDIR/nowhere.ctl" "$TESTDIR/err" || fail "no socket path in: $(cat "$TESTDIR/err")"

# Usage errors: exit 2, with a message; the daemon is not asked.
for args in "" "bogus" "status vm1 vm2" "export" "export add vm3" \
    "export frob x" "export add a b c" "export add a b --format vmdk" \
    "export add a b --mode sync" "export remove" "status --format raw" \
    "mirror" "mirror start vm1" "promote" "--bogus status" "-s"; do
  got=0
  # shellcheck disable=SC2086
  ctl s $args >/dev/null 2>"$TESTDIR/err" || got=$?
  [ "$got" -eq 2 ] || fail "mirrorctl $args: exit $got, expected 2"
  [ -s "$TESTDIR/err" ] || fail "mirrorctl $args: no message"
done
"$MIRRORCTL" --help | grep 'export add NAME PATH' >/dev/null || fail "--help"
"$MIRRORCTL" --version | grep -q '^mirrorctl [0-9]' || fail "--version"

# Mirror commands the daemon refuses here: exit 1 and the reason.
expect_status 1 ctl s mirror start vm1 "nbd://127.0.0.1:1/vm1" --mode async 2>"$TESTDIR/err"
grep -q 'mirror to target failed.*127.0.0.1:1.*refused' "$TESTDIR/err" \
  || fail "mirror start: $(cat "$TESTDIR/err")"
expect_status 1 ctl s mirror cutover vm1 --timeout 5 2>"$TESTDIR/err"
grep -q 'has no active mirror' "$TESTDIR/err" || fail "cutover: $(cat "$TESTDIR/err")"
expect_status 1 ctl s mirror cancel vm1 2>"$TESTDIR/err"
grep -q 'has no active mirror' "$TESTDIR/err" || fail "cancel: $(cat "$TESTDIR/err")"
# promote, demote and verify need a peer=.
for cmd in "promote vm1 --force" "demote vm1" "verify vm1"; do
  # shellcheck disable=SC2086
  expect_status 1 ctl s $cmd 2>"$TESTDIR/err"
  grep -q "export vm1 has no peer" "$TESTDIR/err" || fail "mirrorctl $cmd: $(cat "$TESTDIR/err")"
done
expect_status 1 ctl s mirror wait vm1 --timeout 5 2>"$TESTDIR/err"
grep -q 'vm1.*failed' "$TESTDIR/err" || fail "mirror wait: $(cat "$TESTDIR/err")"

# The daemon is still fine after all that.
ctl s status >/dev/null
pid=$(mirrord_pid s)
stop_mirrord s

# Daemon gone: exit 3, whether the socket is missing, refuses, or the
# peer closes without answering.
[ ! -e "$TESTDIR/s.ctl" ] || fail "control socket left behind"
expect_status 3 ctl s status 2>"$TESTDIR/err"
grep -q 'cannot connect' "$TESTDIR/err" || fail "stderr: $(cat "$TESTDIR/err")"
$PY -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])             # bound, never listening: ECONNREFUSED
' "$TESTDIR/stale.ctl"
expect_status 3 "$MIRRORCTL" -s "$TESTDIR/stale.ctl" status 2>/dev/null
$PY - "$TESTDIR/mute.ctl" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1] + ".tmp")
s.listen(1)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
c, _ = s.accept()
data = b""
while b"\n" not in data:       # the whole request, then no reply
    data += c.recv(4096)
c.close()
PY
mute=$!
cleanup_fn "kill $mute 2>/dev/null"
poll 10 test -S "$TESTDIR/mute.ctl"
expect_status 3 "$MIRRORCTL" -s "$TESTDIR/mute.ctl" status 2>"$TESTDIR/err"
grep -q 'without a reply' "$TESTDIR/err" || fail "stderr: $(cat "$TESTDIR/err")"
wait $mute
exit 0
