#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# No client starves another (docs/nbd-server.md, "Connection limits").
#
# 1. A daemon under `ulimit -n 1024` with the default limits takes
#    1,100 idle TCP connections from one address, then 1,100 more from
#    100 other addresses: the first address gets its share (32), all of
#    them together the TCP budget (256), the rest are closed at once
#    (none left hanging).  Meanwhile the unix socket serves qemu-io and
#    nbdinfo, the daemon burns no CPU, its log stays short with the
#    refusals counted, and every idle connection is dropped after the
#    handshake timeout (10 s), which frees the slots for a real client.
# 2. A daemon whose unix-socket clients exhaust its descriptors closes
#    the clients it cannot serve promptly (through its reserve
#    descriptor) instead of spinning on accept() and leaving them
#    hanging, logs it once, and serves again as soon as a descriptor
#    frees.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires nbdinfo --version
requires prlimit --version
# The attacker holds 2,200 sockets at once.
requires $PY -c '
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
assert hard == resource.RLIM_INFINITY or hard >= 2400'

truncate -s 16M "$TESTDIR/d.img"
wrapper=${MIRRORD_WRAPPER:-}

cat > "$TESTDIR/flood.py" <<'PY'
"""Idle clients that connect and never negotiate, and their fate."""
import os, resource, select, socket, time

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
GREETING = 18                   # NBDMAGIC, IHAVEOPT, handshake flags

def tcp_flood(port, n, sources, batch=64):
    """N connects to 127.0.0.1:PORT, from SOURCES in turn, BATCH at a
    time (more would overflow the listen backlog, and the kernel would
    resend their SYNs seconds later).  Returns (greeted sockets, number
    closed, number hung); stops at the first batch with a hung one."""
    greeted, closed, hung = [], 0, 0
    for first in range(0, n, batch):
        socks = []
        for i in range(first, min(n, first + batch)):
            s = socket.socket()
            s.setblocking(False)
            if sources:
                s.bind((sources[i % len(sources)], 0))
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        g, c, h = classify(socks, 5)
        greeted += g
        closed += c
        hung += h
        if h:
            break
    return greeted, closed, hung

def unix_flood(path, n):
    """N connects to PATH; one that waits 3 s for room in the backlog
    counts as hung (None)."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                     (3).to_bytes(8, "little") + (0).to_bytes(8, "little"))
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            s = None
        socks.append(s)
    return socks

def classify(socks, timeout):
    """Waits up to TIMEOUT s for each socket to be greeted or closed.
    Returns (greeted sockets, number closed, number hung)."""
    p, fds = select.poll(), {}
    for s in socks:
        if s is not None:
            p.register(s, select.POLLIN)
            fds[s.fileno()] = s
    greeted, closed = [], 0
    deadline = time.monotonic() + timeout
    while fds and time.monotonic() < deadline:
        for fd, ev in p.poll(100):
            s = fds.pop(fd)
            p.unregister(fd)
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            if len(data) >= GREETING:
                greeted.append(s)
            else:
                closed += 1
                s.close()
    hung = len(fds) + sum(s is None for s in socks)
    return greeted, closed, hung

def wait_closed(socks, timeout):
    """Seconds until each socket sees EOF (None if it did not)."""
    p, fds, start = select.poll(), {}, time.monotonic()
    for s in socks:
        p.register(s, select.POLLIN)
        fds[s.fileno()] = s
    when = {}
    while fds and time.monotonic() - start < timeout:
        for fd, ev in p.poll(100):
            s = fds.pop(fd)
            p.unregister(fd)
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            when[s] = time.monotonic() - start if not data else None
    return [when.get(s) for s in socks]

def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def cpu_over(pid, seconds):
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before
PY

# ---- 1. TCP load, under ulimit -n 1024 ----

MIRRORD_WRAPPER="prlimit --nofile=1024:1024 -- $wrapper"
start_mirrord_tcp t --insecure --export "vm1=$TESTDIR/d.img"
MIRRORD_WRAPPER=$wrapper
pid=$(mirrord_pid t)
grep -q "^Max open files *1024 " /proc/$pid/limits || fail "not under ulimit -n 1024"

$PY - "$PORT" "$pid" "$(uri t vm1)" "$TESTDIR" <<'PY'
import subprocess, sys, time
sys.path.insert(0, sys.argv[4])
from flood import *
port, pid, uri, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def unix_client_works():
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k",
                        "-c", "read -P 0x5a 0 64k", uri],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "fail" not in r.stdout.lower(), r
    r = subprocess.run(["nbdinfo", uri], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "export-size: 16777216" in r.stdout, r

# One address: its share and no more; the rest closed, none hanging.
t0 = time.monotonic()
a, closed, hung = tcp_flood(port, 1100, None)
print("127.0.0.1: %d greeted, %d closed, %d hung" % (len(a), closed, hung))
assert (len(a), closed, hung) == (32, 1068, 0), (len(a), closed, hung)

# 100 more addresses, 11 each (within their share): the TCP budget.
sources = ["127.0.1.%d" % i for i in range(1, 101)]
b, closed, hung = tcp_flood(port, 1100, sources)
print("100 addresses: %d greeted, %d closed, %d hung" % (len(b), closed, hung))
assert (len(b), closed, hung) == (256 - 32, 1100 - 224, 0), (len(b), closed, hung)

# The hypervisor's socket is not affected, and nothing spins.
unix_client_works()
cpu = cpu_over(pid, 2)
print("CPU over 2 s with 256 idle clients: %.2f s" % cpu)
assert cpu < 0.2, cpu

# Idle, unauthenticated: dropped after the handshake timeout.
idle = a + b
start = time.monotonic()
fates = wait_closed(idle, 25)
dropped = [start + t - t0 for t in fates if t is not None]
assert len(dropped) == len(idle), "%d of %d dropped" % (len(dropped), len(idle))
print("idle connections dropped %.1f..%.1f s after the flood began"
      % (min(dropped), max(dropped)))
assert min(dropped) >= 9, "dropped before the 10 s timeout"

# Their slots are free again: a real TCP client is served.
r = subprocess.run(["nbdinfo", "nbd://127.0.0.1:%d/vm1" % port],
                   capture_output=True, text=True, timeout=20)
assert r.returncode == 0 and "export-size: 16777216" in r.stdout, r
unix_client_works()
PY

# The log: a few lines, the refusals counted rather than listed.
log=$TESTDIR/t.log
poll 15 grep -q "suppressed [0-9]* similar messages in .*; the last: refusing a connection from" "$log" \
  || fail "refusals not counted: $(tail -5 "$log")"
suppressed=$(grep -o "suppressed [0-9]* similar messages in [0-9.]* s; the last: refusing" "$log" \
             | awk '{n += $2} END {print n}')
(( suppressed > 1900 )) || fail "only $suppressed refusals counted"
grep -q "refusing a connection from 127.0.0.1:[0-9]*: 32 connections from 127.0.0.1 already (max-connections-per-host)" "$log" \
  || fail "per-host refusal not logged"
lines=$(wc -l < "$log")
(( lines < 60 )) || fail "$lines log lines"
ctl t status vm1 >/dev/null || fail "control socket"
stop_mirrord t

# ---- 2. Descriptors exhausted by unix-socket clients ----

# These idle clients must outlive the checks: a longer handshake timeout.
printf '[mirrord]\nhandshake-timeout = 120\n' > "$TESTDIR/u.conf"
MIRRORD_WRAPPER="prlimit --nofile=256:256 -- $wrapper"
start_mirrord u -c "$TESTDIR/u.conf" --export "vm1=$TESTDIR/d.img"
MIRRORD_WRAPPER=$wrapper
pid=$(mirrord_pid u)

$PY - "$TESTDIR/u.nbd" "$pid" "$(uri u vm1)" "$TESTDIR" "$MIRRORCTL" <<'PY'
import subprocess, sys, time
sys.path.insert(0, sys.argv[4])
from flood import *
path, pid, uri, d, mirrorctl = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

held, closed, hung = classify(unix_flood(path, 400), 10)
print("unix: %d greeted, %d closed, %d hung" % (len(held), closed, hung))
assert hung == 0 and len(held) > 150 and len(held) + closed == 400, (len(held), closed, hung)
cpu = cpu_over(pid, 2)
print("CPU over 2 s out of descriptors: %.2f s" % cpu)
assert cpu < 0.2, cpu

# A new client, unix socket or control socket, is closed at once.
t = time.monotonic()
r = subprocess.run(["nbdinfo", uri], capture_output=True, text=True, timeout=20)
assert r.returncode != 0 and time.monotonic() - t < 5, r
r = subprocess.run([mirrorctl, "-s", d + "/u.ctl", "status"], capture_output=True,
                   text=True, timeout=20)
assert r.returncode == 3 and time.monotonic() - t < 5, r

# Descriptors free: served again.
for s in held[:20]:
    s.close()
r = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 64k", uri],
                   capture_output=True, text=True, timeout=20)
assert r.returncode == 0 and "fail" not in r.stdout.lower(), r
deadline = time.monotonic() + 10
while subprocess.run([mirrorctl, "-s", d + "/u.ctl", "status"],
                     capture_output=True).returncode != 0:
    assert time.monotonic() < deadline, "control socket not back"
    time.sleep(0.1)
for s in held[20:]:
    s.close()
PY

log=$TESTDIR/u.log
[ "$(grep -c "accept: Too many open files: closing new connections unserved" "$log")" = 1 ] \
  || fail "out of descriptors not logged once: $(grep -c accept "$log") lines"
grep -q "accepting connections again after [0-9.]* s; [0-9]* closed unserved meanwhile" "$log" \
  || fail "recovery not logged"
lines=$(wc -l < "$log")
(( lines < 30 )) || fail "$lines log lines"
stop_mirrord u
exit 0
