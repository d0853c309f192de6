#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Memory per client is bounded: a client that floods requests and
# never reads a reply (big reads, refused requests, a stream of
# options) makes the daemon stop reading from it, not grow; other
# clients are served meanwhile, and the daemon exits cleanly.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'

truncate -s 256M "$TESTDIR/disk.img"
# Under ASan, freed memory sits in a quarantine (256 MiB by default):
# keep it small so RSS measures what is live.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"
start_mirrord a --export "vm1=$TESTDIR/disk.img"
pid=$(mirrord_pid a)

$PY - "$(uri a vm1)" "$pid" <<'PY'
import nbd, socket, struct, sys, time
from nbdtest import *
uri, pid = sys.argv[1], int(sys.argv[2])
MiB = 1 << 20

def rss():
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def flood(c, chunk, limit):
    """Sends CHUNK over and over, reading nothing, until the server
    stops taking it (no progress for 1 s) or LIMIT bytes went out."""
    c.sock.setblocking(False)
    sent, last = 0, time.monotonic()
    view = memoryview(chunk)
    pos = 0
    while sent < limit and time.monotonic() - last < 1:
        try:
            n = c.sock.send(view[pos:])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except (BrokenPipeError, ConnectionResetError):
            break                   # closing on it is fine too
        sent += n
        pos = (pos + n) % len(chunk)
        last = time.monotonic()
    return sent

other = nbd.NBD()
other.connect_uri(uri)
other.pwrite(b"still here" * 100, 0)
base = rss()

def check(what, sent, bound):
    grown = rss() - base
    print("%s: sent %d KiB, RSS grew %d MiB" % (what, sent >> 10, grown >> 20))
    assert grown < bound, "%s: RSS grew by %d MiB" % (what, grown >> 20)
    # Another client is served while this one is stuck.
    assert other.pread(1000, 0) == b"still here" * 100

# Refused requests (out of range): each one's error reply is small,
# but millions of them must not pile up.
for structured in (True, False):
    c = Raw(socket_of(uri))
    c.connect("vm1", structured=structured)
    hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 2, 1 << 40, 512)
    sent = flood(c, hdr * 4096, 256 * MiB)
    check("refused reads (structured %s)" % structured, sent, 32 * MiB)
    c.close()

# Refused writes (read-only is not needed: out of range), payloads sent.
c = Raw(socket_of(uri))
c.connect("vm1")
req = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 3, 1 << 40, 512) + bytes(512)
check("refused writes", flood(c, req * 256, 256 * MiB), 32 * MiB)
c.close()

# Valid small requests with replies left unread.
c = Raw(socket_of(uri))
c.connect("vm1")
hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 4, 4096, 4096)
check("small reads", flood(c, hdr * 4096, 256 * MiB), 32 * MiB)
c.close()

# Options during negotiation, replies unread.
c = Raw(socket_of(uri))
c.start()
opt = struct.pack(">QII", IHAVEOPT, OPT_LIST, 0)
check("options", flood(c, opt * 4096, 64 * MiB), 32 * MiB)
c.close()

# 32 MiB reads, never collected: at most the in-flight byte limit.
c = Raw(socket_of(uri))
c.connect("vm1")
hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 1, 0, 32 * MiB)
check("big reads", flood(c, hdr * 64, 64 * MiB), 160 * MiB)
c.close()
PY

nbdinfo "$(uri a vm1)" | grep -q 'export-size: 268435456' || fail "daemon not serving"
stop_mirrord a
exit 0
