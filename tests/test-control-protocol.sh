#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The control protocol spoken by a raw client (docs/control-api.md):
# malformed JSON, non-objects, bad arguments and over-long lines get an
# error reply (and, for framing errors, the connection is closed); the
# daemon keeps serving everyone else.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import json, socket'

truncate -s 16M "$TESTDIR/a.img" "$TESTDIR/b.img"
start_mirrord p --export "vm1=$TESTDIR/a.img"

$PY - "$TESTDIR/p.ctl" "$TESTDIR" <<'PY'
import json, socket, sys
path, d = sys.argv[1:]

class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(20)
        self.s.connect(path)
        self.buf = b""
    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())
    def reply(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, "connection closed without a reply"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)
    def call(self, obj):
        self.send(json.dumps(obj) + "\n")
        return self.reply()
    def closed(self):
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

def refused(r, text, errno=None):
    assert r["ok"] is False, r
    assert text in r["error"], r
    assert isinstance(r["errno"], int), r
    if errno is not None:
        assert r["errno"] == errno, r

# Framing errors: an error reply, then the connection is closed.
for bad, text in ((b"{not json\n", ""), (b"[1, 2]\n", "not a JSON object"),
                  (b'"status"\n', "not a JSON object"), (b"\x00\xff\xfe\n", "")):
    c = Conn()
    c.send(bad)
    refused(c.reply(), text, 22)
    assert c.closed(), bad

# Over 1 MiB without a newline.
c = Conn()
try:
    c.send(b'{"command": "status", "x": "' + b"a" * (1 << 20) + b'"}\n')
except (BrokenPipeError, ConnectionResetError):
    pass
refused(c.reply(), "1 MiB")
assert c.closed()

# Request errors keep the connection open, and replies stay in order.
c = Conn()
refused(c.call({"command": "nope"}), "unknown command 'nope'")
refused(c.call({"no": "command"}), "request needs field 'command' (a string)")
refused(c.call({"command": 42}), "field 'command' must be a string, not an integer")
refused(c.call({"command": "status", "export": "vm9"}), "export vm9 not found", 2)
refused(c.call({"command": "export-remove"}), "name")
refused(c.call({"command": "export-remove", "name": 7}), "name")
refused(c.call({"command": "export-add", "name": "x"}), "no path")
refused(c.call({"command": "export-add", "path": d + "/a.img"}), "request needs field 'name'")
refused(c.call({"command": "export-add", "name": None, "path": d + "/a.img"}),
        "field 'name' must be a string, not null")
refused(c.call({"command": "export-add", "name": "x", "path": None}), "no path")
refused(c.call({"command": "export-add", "name": "x", "path": d + "/a.img",
                "format": "vmdk"}), "vmdk")
refused(c.call({"command": "export-add", "name": "x", "path": d + "/a.img",
                "granularity": "3K"}), "granularity")
refused(c.call({"command": "export-add", "name": "vm1", "path": d + "/a.img"}),
        "already exists", 17)
for cmd in ("promote", "demote"):
    refused(c.call({"command": cmd, "export": "vm1"}), "has no peer")
refused(c.call({"command": "promote", "export": "vm1", "force": "yes"}),
        "field 'force' must be a boolean, not a string", 22)
refused(c.call({"command": "verify", "export": "vm1"}), "has no peer to verify against")
refused(c.call({"command": "mirror-start", "export": "vm1"}), "request needs field 'uri'")
refused(c.call({"command": "mirror-start", "export": "vm1", "uri": "nbd://x/y",
                "mode": "fast"}), "sync or async")
refused(c.call({"command": "mirror-start", "export": "vm9", "uri": "nbd://x/y"}),
        "not found")
refused(c.call({"command": "mirror-cancel", "export": "vm1"}), "no active mirror")
refused(c.call({"command": "mirror-cutover", "export": "vm1"}), "no active mirror")
for t in ("1", -1, [1]):
    refused(c.call({"command": "mirror-cutover", "export": "vm1", "timeout": t}),
            "field 'timeout' must be a", 22)
# Pipelined requests in one write, and one request in many writes.
c.send('{"command": "version"}\n\n{"command": "status"}\n{"command": "bad"}\n')
r = c.reply()
assert r == {"ok": True, "result": {"version": r["result"]["version"]}}, r
r = c.reply()
assert r["ok"] and [e["name"] for e in r["result"]["exports"]] == ["vm1"], r
refused(c.reply(), "unknown command 'bad'")
for b in b'{"command": "status", "export": "vm1"}\n':
    c.send(bytes([b]))
r = c.reply()
assert r["ok"] and r["result"]["exports"][0]["size"] == 16 << 20, r

# Clients that vanish mid-request, or never send anything.
idle = [Conn() for _ in range(8)]
for i in range(8):
    x = Conn()
    x.send('{"command": "sta')
    x.s.close()

# Everyone else is still served, on this connection and new ones.
r = c.call({"command": "status", "export": "vm1"})
assert r["ok"], r
r = Conn().call({"command": "export-add", "name": "vm2", "path": d + "/b.img",
                 "readonly": True})
assert r["ok"] and r["result"]["readonly"] is True, r
r = Conn().call({"command": "export-remove", "name": "vm2"})
assert r == {"ok": True, "result": {}}, r
for x in idle:
    x.s.close()
PY

ctl p status vm1 >/dev/null || fail "daemon stopped answering"
stop_mirrord p
exit 0
