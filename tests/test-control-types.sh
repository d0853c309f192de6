#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The control API checks the type of every field (docs/control-api.md,
# "Field types"): a raw client sending null, numbers, strings, booleans,
# arrays or objects where they do not belong gets an error naming the
# field, the type wanted and the type sent, and nothing is done; absent
# or null optional fields take their default; mirrorctl sends every
# field with the right type.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import json, socket'
requires qemu-nbd --version

truncate -s 16M "$TESTDIR/a.img" "$TESTDIR/t.img"
start_mirrord p --export "vm1=$TESTDIR/a.img"

$PY - "$TESTDIR/p.ctl" "$TESTDIR" <<'PY'
import json, socket, sys
path, d = sys.argv[1:]

s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(path)
buf = b""

def call(obj):
    global buf
    s.sendall((obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n")
    while b"\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, "connection closed on %r" % (obj,)
        buf += chunk
    line, buf = buf.split(b"\n", 1)
    return json.loads(line)

def refused(req, text):
    r = call(req)
    assert r["ok"] is False and text in r["error"] and r["errno"] == 22, (req, r)

def exports():
    r = call({"command": "status"})
    assert r["ok"], r
    return sorted(e["name"] for e in r["result"]["exports"])

# The request itself, and the command field.
refused({"command": None}, "field 'command' must be a string, not null")
refused({"command": 7}, "field 'command' must be a string, not an integer")
refused({"command": ["status"]}, "field 'command' must be a string, not an array")
refused({}, "request needs field 'command' (a string)")

# Optional fields: absent or null is the default, any other wrong type
# is refused.
for v in (None,):
    r = call({"command": "status", "export": v})
    assert r["ok"] and len(r["result"]["exports"]) == 1, r
for v, t in ((5, "an integer"), (True, "a boolean"), ([], "an array"),
             ({}, "an object"), (1.5, "a decimal number")):
    refused({"command": "status", "export": v},
            "field 'export' must be a string, not " + t)

# export-add: readonly is a boolean, nothing else; strings are strings;
# sizes are integers or size strings, durations numbers or strings.
add = {"command": "export-add", "name": "x", "path": d + "/t.img"}
for v, t in (("yes", "a string"), ("true", "a string"), (1, "an integer"),
             ([True], "an array")):
    refused(dict(add, readonly=v), "field 'readonly' must be a boolean, not " + t)
refused(dict(add, name=5), "field 'name' must be a string, not an integer")
refused(dict(add, name=None), "field 'name' must be a string, not null")
refused(dict(add, path=5), "field 'path' must be a string, not an integer")
refused(dict(add, format=2), "field 'format' must be a string, not an integer")
refused(dict(add, mode=True), "field 'mode' must be a string, not a boolean")
refused(dict(add, peer={}), "field 'peer' must be a string, not an object")
refused(dict(add, granularity=True),
        "field 'granularity' must be an integer or a size string")
refused(dict(add, granularity=65536.5),
        "field 'granularity' must be an integer or a size string")
refused(dict(add, bandwidth=-1), "field 'bandwidth' must not be negative")
refused(dict(add, **{"peer-timeout": [1]}),
        "field 'peer-timeout' must be a number of seconds or a duration string")
assert exports() == ["vm1"], exports()
# Right types, each way they may come.
for extra in ({"readonly": True}, {"granularity": 65536}, {"granularity": "64K"},
              {"peer-timeout": 2.5}, {"peer-timeout": "500ms"}, {"readonly": None}):
    r = call(dict(add, **extra))
    assert r["ok"], (extra, r)
    if "readonly" in extra:
        assert r["result"]["readonly"] is bool(extra["readonly"]), r
    if "granularity" in extra:
        assert r["result"]["granularity"] == 65536, r
    assert call({"command": "export-remove", "name": "x"})["ok"]

refused({"command": "export-remove", "name": {}}, "field 'name' must be a string, not an object")
refused({"command": "export-remove"}, "request needs field 'name' (a string)")

# Integers: offsets and lengths.
for v, t in (("5", "not a string"), (1.5, "not a decimal number"),
             (-1, "not -1"), (False, "not a boolean")):
    refused({"command": "bitmap-clear", "export": "vm1", "offset": v},
            "field 'offset' must be a non-negative integer, " + t)
    refused({"command": "bitmap-clear", "export": "vm1", "length": v},
            "field 'length' must be a non-negative integer, " + t)
refused({"command": "bitmap-clear", "export": 1}, "field 'export' must be a string")
refused({"command": "bitmap-clear"}, "request needs field 'export' (a string)")
r = call({"command": "bitmap-clear", "export": "vm1", "offset": 0, "length": None})
assert r["ok"], r

# Mirror commands.
ms = {"command": "mirror-start", "export": "vm1", "uri": "nbd://127.0.0.1:1/x"}
refused(dict(ms, uri=5), "field 'uri' must be a string, not an integer")
refused(dict(ms, uri=None), "field 'uri' must be a string, not null")
refused(dict(ms, mode=1), "field 'mode' must be a string, not an integer")
refused(dict(ms, bandwidth="1M"), "field 'bandwidth' must be a non-negative integer, not a string")
refused(dict(ms, export=None), "field 'export' must be a string, not null")
for v, t in (("1", "a string"), ([1], "an array"), (True, "a boolean")):
    refused({"command": "mirror-cutover", "export": "vm1", "timeout": v},
            "field 'timeout' must be a number of seconds, not " + t)
refused({"command": "mirror-cutover", "export": "vm1", "timeout": -2},
        "field 'timeout' must be a non-negative number of seconds")
refused({"command": "mirror-cancel", "export": 3.0}, "field 'export' must be a string, not a decimal number")

# HA commands: force is a boolean.
for cmd in ("promote", "demote"):
    for v, t in (("yes", "a string"), (1, "an integer"), (None, None)):
        r = call({"command": cmd, "export": "vm1", "force": v})
        if t:
            assert r["ok"] is False and "field 'force' must be a boolean, not " + t in r["error"], r
        else:
            assert r["ok"] is False and "has no peer" in r["error"], r
refused({"command": "verify", "export": True}, "field 'export' must be a string, not a boolean")

# The connection stayed open through all of it.
r = call({"command": "version"})
assert r["ok"], r

# A bare JSON value is not a request, nor is an object with more after
# it: a clear error, then the close.
for line, why in (("null", "request is not a JSON object"),
                  ("42", "request is not a JSON object"),
                  ('"status"', "request is not a JSON object"),
                  ("true", "request is not a JSON object"),
                  ('{"command": "version"} {"command": "status"}',
                   "data after the request's JSON object"),
                  ('{"command": "version"}x', "data after the request's JSON object")):
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(20)
    c.connect(path)
    c.sendall(line.encode() + b"\n")
    r = json.loads(c.makefile().readline())
    assert r == {"ok": False, "error": why, "errno": 22}, (line, r)
# Blank lines are skipped; CRLF line ends are fine.
r = call(' \t\r\n\r\n{"command": "version"} \r')
assert r["ok"] and "version" in r["result"], r
PY

# mirrorctl sends each typed field with its type.
ctl p export add ro "$TESTDIR/t.img" --readonly --format raw >/dev/null
ctl p --json status ro | $PY -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["readonly"] is True and e["writable"] is False, e'
ctl p export remove ro >/dev/null
ctl p bitmap clear vm1 --offset 64K --length 1M >/dev/null
expect_status 1 ctl p promote vm1 --force 2>"$TESTDIR/err"
grep -q "has no peer" "$TESTDIR/err" || fail "promote --force: $(cat "$TESTDIR/err")"
qemu-nbd -f raw -x t -k "$TESTDIR/t.sock" "$TESTDIR/t.img" &
qpid=$!
cleanup_fn "kill $qpid 2>/dev/null"
poll 10 test -S "$TESTDIR/t.sock"
ctl p mirror start vm1 "nbd+unix:///t?socket=$TESTDIR/t.sock" --mode async \
  --bandwidth 100M >/dev/null
ctl p mirror wait vm1 --until ready --timeout 20 >/dev/null
ctl p mirror cutover vm1 --timeout 10.5 >/dev/null
ctl p --json status vm1 | $PY -c '
import json, sys
m = json.load(sys.stdin)["exports"][0]["mirror"]
assert m["state"] == "completed" and m["bandwidth"] == 100 << 20, m'
stop_mirrord p
exit 0
