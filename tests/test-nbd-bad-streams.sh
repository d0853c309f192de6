#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Streams that cannot be resynchronised, and clients that vanish: a
# bad request magic closes that connection only; hang-ups at every
# point of the negotiation, and with many requests in flight (some
# half sent, some with replies never read), never take the daemon
# down or leak a descriptor; it goes on serving and exits cleanly.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'
requires nbdinfo --version

head -c 32M /dev/urandom > "$TESTDIR/disk.img"
start_mirrord a --export "vm1=$TESTDIR/disk.img"
pid=$(mirrord_pid a)
fds () { ls /proc/$pid/fd | wc -l; }
base_fds=$(fds)
fds_back () { [ "$(fds)" -le "$base_fds" ]; }

$PY - "$(uri a vm1)" <<'PY'
import nbd, os, random, socket, struct, sys
from nbdtest import *
uri = sys.argv[1]
path = socket_of(uri)
MiB = 1 << 20

good = nbd.NBD()
good.connect_uri(uri)
good.pwrite(b"good" * 1024, 0)
busy = [good.aio_pread(nbd.Buffer(1 * MiB), i * MiB) for i in range(16)]

# Garbage where a request header should be: that connection closes.
for garbage in (b"\0" * 28, b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
                struct.pack(">IHHQQI", REQUEST_MAGIC + 1, 0, CMD_READ, 1, 0, 512)):
    c = Raw(path)
    c.connect("vm1")
    assert c.read(0, 4096) == b"good" * 1024
    c.request(CMD_READ, 0, 4096)
    c.send(garbage)
    assert c.is_closed(), ("garbage accepted", garbage)
# Garbage right after a write's header+payload, and mid-stream.
c = Raw(path)
c.connect("vm1")
c.request(CMD_WRITE, 8192, payload=b"w" * 4096)
c.send(os.urandom(100))
assert c.is_closed()

while good.aio_in_flight() > 0:
    good.poll(-1)
assert all(good.aio_command_completed(k) for k in busy)
assert good.pread(4096, 0) == b"good" * 1024

# Hang-ups at every byte of a negotiation (and replies never read).
def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data
neg = (struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) + opt(OPT_LIST)
       + opt(OPT_STRUCTURED_REPLY)
       + opt(OPT_SET_META_CONTEXT, Raw.meta_data("vm1", ["base:allocation"]))
       + opt(OPT_INFO, Raw.info_data("vm1")) + opt(OPT_GO, Raw.info_data("vm1"))
       + struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 1, 0, 100) + bytes(100))
for cut in range(0, len(neg) + 1):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if cut % 3:
        s.recv(18)                      # sometimes read the greeting
    s.sendall(neg[:cut])
    s.close()
# A big option cut off in the middle of its data, an option over the
# 64 KiB cap cut off while being skipped, an EXPORT_NAME cut short.
for hdr, n in ((struct.pack(">QII", IHAVEOPT, OPT_INFO, 60000), 30000),
               (struct.pack(">QII", IHAVEOPT, OPT_INFO, 1 << 30), 200000),
               (struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 3), 1)):
    c = Raw(path)
    c.start()
    c.send(hdr + bytes(n))
    c.close()

# Hang-ups in transmission with many requests in flight: writes whose
# payload is half sent, reads whose replies are never read, refused
# requests, a write being discarded.
rng = random.Random(99)
for round in range(30):
    c = Raw(path)
    c.connect("vm1", structured=bool(round % 2))
    stream = b""
    for i in range(rng.randint(1, 200)):
        kind = rng.choice("rrwwzfbx")
        off = rng.randrange(0, 31 * MiB)
        n = rng.choice([1, 512, 4096, 65536, 1 * MiB])
        if kind == "r":
            stream += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, i, off, n)
        elif kind == "w":
            stream += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, i, off, n) + bytes(n)
        elif kind == "z":
            stream += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE_ZEROES, i, off, n)
        elif kind == "f":
            stream += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_FLUSH, i, 0, 0)
        elif kind == "b":
            stream += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_BLOCK_STATUS, i, off, n)
        else:
            stream += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, i, 1 << 40, n) + bytes(n)
    cut = rng.randrange(len(stream) // 2, len(stream) + 1)
    c.sock.settimeout(5)
    try:
        c.send(stream[:cut])
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    if round % 3 == 0:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()

# The well-behaved client never noticed.
cookies = [good.aio_pwrite(bytes([i]) * 65536, (16 * MiB) + i * 65536) for i in range(64)]
while good.aio_in_flight() > 0:
    good.poll(-1)
assert all(good.aio_command_completed(k) for k in cookies)
for i in range(64):
    assert good.pread(65536, (16 * MiB) + i * 65536) == bytes([i]) * 65536
good.shutdown()
PY

nbdinfo "$(uri a vm1)" | grep -q 'export-size: 33554432' || fail "daemon not serving"
# Every closed connection gave its descriptor back.
poll 10 fds_back || fail "descriptors leaked: $(fds) > $base_fds"
stop_mirrord a
exit 0
