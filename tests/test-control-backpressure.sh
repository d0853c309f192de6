#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Control socket backpressure (docs/control-api.md, "Flow control"): a
# client that pipelines status requests and never reads the replies
# does not make the daemon grow; the daemon stops reading it, says so
# in the log, and answers every other client promptly meanwhile.  When
# the greedy client reads at last, every request it sent is answered,
# in order.  One that never reads is disconnected after 30 s, with a
# log line.  A reply bigger than the cap (a status of many exports)
# still arrives whole.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import json, socket'

truncate -s 1M "$TESTDIR/a.img"
# Under ASan, freed memory sits in a quarantine (256 MiB by default):
# keep it small so RSS measures what is live.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"
start_mirrord p --export "vm1=$TESTDIR/a.img"
pid=$(mirrord_pid p)

$PY - "$TESTDIR/p.ctl" "$pid" "$MIRRORCTL" "$TESTDIR" <<'PY'
import json, os, socket, subprocess, sys, time
path, pid, mirrorctl, d = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
MiB = 1 << 20
REQ = b'{"command": "status", "export": "vm1"}\n'

def rss():
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def other_client_time():
    t = time.monotonic()
    r = subprocess.run([mirrorctl, "-s", path, "status", "vm1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "vm1: raw" in r.stdout, r
    return time.monotonic() - t

def greedy(seconds):
    """Sends status requests without reading, for SECONDS or until the
    daemon has taken nothing for 2 s.  Meanwhile another client asks for
    status every half second.  Returns (socket, requests sent, peak
    RSS, slowest answer to the other client)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.setblocking(False)
    burst = REQ * 256
    sent = pos = 0
    peak, slowest = rss(), 0
    start = last_progress = next_probe = time.monotonic()
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        if now - last_progress > 2:
            break
        if now >= next_probe:
            peak = max(peak, rss())
            slowest = max(slowest, other_client_time())
            next_probe = time.monotonic() + 0.5
        try:
            n = s.send(burst[pos:])
        except BlockingIOError:
            time.sleep(0.005)
            continue
        sent += n
        pos = (pos + n) % len(burst)
        last_progress = time.monotonic()
    peak = max(peak, rss())
    return s, sent // len(REQ), peak, slowest

before = rss()
s, sent, peak, slowest = greedy(10)
print("greedy client: %d requests sent (%.1f MiB), RSS %.1f -> %.1f MiB, "
      "other client answered in at most %.3f s"
      % (sent, sent * len(REQ) / MiB, before / MiB, peak / MiB, slowest))
assert peak - before < 48 * MiB, "RSS grew by %d MiB" % ((peak - before) // MiB)
assert slowest < 2, slowest
for _ in range(5):
    assert other_client_time() < 2

# It reads at last: every whole request it sent is answered, in order.
s.setblocking(True)
s.settimeout(60)
f = s.makefile("rb")
got = 0
for i in range(sent):
    r = json.loads(f.readline())
    assert r["ok"] and r["result"]["exports"][0]["name"] == "vm1", r
    got += 1
print("greedy client: %d replies read" % got)
s.close()

# One that never reads: disconnected, 30 s after it stopped taking any.
s2, sent2, _, _ = greedy(10)
t = time.monotonic()
log = d + "/p.log"
while "disconnected: read none of its" not in open(log).read():
    assert time.monotonic() - t < 45, "not disconnected"
    time.sleep(0.2)
print("never-reading client disconnected %.1f s after it stopped" % (time.monotonic() - t + 2))
s2.setblocking(True)
s2.settimeout(20)
try:
    while s2.recv(1 << 20):
        pass
except ConnectionResetError:
    pass
assert other_client_time() < 2

# A reply over the cap arrives whole: the status of 300 exports with
# 4 KiB paths is over 1 MiB.
# One file each: an image is exported once.
long = d + "/" + "./" * 1990
c = socket.socket(socket.AF_UNIX)
c.connect(path)
f = c.makefile("rwb")
for i in range(300):
    img = "%se%03d.img" % (long, i)
    with open(img, "wb") as fh:
        fh.truncate(1 << 20)
    f.write((json.dumps({"command": "export-add", "name": "e%03d" % i,
                         "path": img}) + "\n").encode())
    f.flush()
    r = json.loads(f.readline())
    assert r["ok"], r
f.write(b'{"command": "status"}\n' * 3)
f.flush()
for i in range(3):
    line = f.readline()
    r = json.loads(line)
    assert len(line) > MiB and len(r["result"]["exports"]) == 301, len(line)
print("status of 301 exports: %.2f MiB, three of them pipelined" % (len(line) / MiB))
PY

grep -q "control client pid [0-9]*: [0-9]* bytes of replies unread: answering none of its requests until it reads" \
  "$TESTDIR/p.log" || fail "the greedy client's stop is not logged"
grep -q "control client pid [0-9]*: disconnected: read none of its [0-9]* bytes of replies for 30 s" \
  "$TESTDIR/p.log" || fail "the disconnect is not logged"
ctl p status vm1 >/dev/null || fail "daemon stopped answering"
stop_mirrord p
exit 0
