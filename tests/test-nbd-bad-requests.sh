#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Requests the server must refuse with an error reply while the
# connection (and the image) stay intact: out of range (EINVAL, or
# ENOSPC for writes), over the 32 MiB limit (a refused write's payload
# is read and dropped), unknown commands and flags, zero lengths,
# offsets that overflow, writes to read-only and secondary exports
# (EPERM).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'

head -c 16M /dev/urandom > "$TESTDIR/disk.img"
head -c 4M /dev/urandom > "$TESTDIR/ro.img"
head -c 4M /dev/urandom > "$TESTDIR/sec.img"
cp "$TESTDIR/ro.img" "$TESTDIR/ro.orig"
cp "$TESTDIR/sec.img" "$TESTDIR/sec.orig"
start_mirrord a --export "vm1=$TESTDIR/disk.img" \
  --export "ro=$TESTDIR/ro.img,readonly" --export "sec=$TESTDIR/sec.img,role=secondary"

$PY - "$(uri a vm1)" "$TESTDIR/disk.img" <<'PY'
import nbd, sys
from nbdtest import *
uri, image = sys.argv[1], sys.argv[2]
size = 16 << 20
MiB = 1 << 20

def expect_error(errno, fn, *args):
    what = "%s(%s)" % (fn.__name__, ", ".join(
        "%d bytes" % len(a) if isinstance(a, bytes) else str(a) for a in args))
    try:
        fn(*args)
    except nbd.Error as e:
        assert e.errno == errno, (what, str(e)[:200])
        return
    raise AssertionError("%s succeeded, expected %s" % (what, errno))

for structured in (True, False):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri(uri)
    h.set_strict_mode(0)
    ok = h.pread(4096, 0)
    expect_error("EINVAL", h.pread, 2, size - 1)
    expect_error("EINVAL", h.pread, 1, size)
    expect_error("EINVAL", h.pread, 4096, 1 << 40)
    expect_error("ENOSPC", h.pwrite, b"x" * 2, size - 1)
    expect_error("ENOSPC", h.pwrite, b"x" * 4096, size)
    expect_error("ENOSPC", h.zero, 4096, size - 2048)
    expect_error("EINVAL", h.trim, 4096, size - 2048)
    expect_error("EINVAL", h.cache, 4096, size)
    # Over the 32 MiB payload limit: refused; a write's payload drained.
    expect_error("EINVAL", h.pread, 33 * MiB, 0)
    expect_error("EINVAL", h.pwrite, b"\xab" * (33 * MiB), 0)
    expect_error("EINVAL", h.pwrite, b"\xab" * (32 * MiB + 1), 0)
    # Flags a command does not take.
    expect_error("EINVAL", h.pwrite, b"x", 0, nbd.CMD_FLAG_NO_HOLE)
    expect_error("EINVAL", h.pread, 512, 0, nbd.CMD_FLAG_FAST_ZERO)
    expect_error("EINVAL", h.trim, 4096, 0, nbd.CMD_FLAG_REQ_ONE)
    # The connection still works, and nothing was written.
    assert h.pread(4096, 0) == ok
    h.pwrite(b"fine" * 1024, 8192)
    assert h.pread(4096, 8192) == b"fine" * 1024
    h.shutdown()
assert open(image, "rb").read()[:4096] == ok
assert len(open(image, "rb").read()) == size

# On the wire: unknown commands and flag bits, zero lengths, offsets
# that wrap, a 33 MiB write followed at once by a valid request.
c = Raw(socket_of(uri))
c.connect("vm1", meta=["base:allocation"])
for cmd, off, count, flags in (
        (9, 0, 512, 0), (0xffff, 0, 512, 0), (CMD_READ, 0, 512, 0x20),
        (CMD_READ, 0, 512, 0x8000), (CMD_FLUSH, 0, 0, CMD_FLAG_DF),
        (CMD_BLOCK_STATUS, 0, 512, CMD_FLAG_NO_HOLE),
        (CMD_READ, 0, 0, 0), (CMD_WRITE_ZEROES, 0, 0, 0), (CMD_TRIM, 0, 0, 0),
        (CMD_READ, (1 << 64) - 512, 1024, 0), (CMD_TRIM, (1 << 64) - 512, 1024, 0),
        (CMD_CACHE, (1 << 64) - 1, 2, 0)):
    err, chunks = c.cmd(cmd, off, count, flags)
    assert err == EINVAL, (cmd, off, count, flags, err)
    assert chunks[-1][0] == REPLY_TYPE_ERROR, chunks
for off, n in (((1 << 64) - 512, 1024), (size, 1)):
    assert c.cmd(CMD_WRITE, off, payload=b"w" * n)[0] == ENOSPC
    assert c.cmd(CMD_WRITE_ZEROES, off, n)[0] == ENOSPC
assert c.cmd(CMD_WRITE, 0, 0, payload=b"")[0] == EINVAL
# Far more refused requests than may be in flight, sent at once: every
# one is answered.
cookies = set(range(10000, 11000))
c.send(b"".join(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, k, size, 1)
                for k in sorted(cookies)))
while cookies:
    cookie, err, (flags, _, _) = c.reply()
    assert cookie in cookies and err == EINVAL and flags & REPLY_FLAG_DONE
    cookies.remove(cookie)
big = c.request(CMD_WRITE, 0, payload=b"\xcd" * (33 << 20), send_payload=False)
c.send(b"\xcd" * (33 << 20))
assert c.wait(big)[0] == EINVAL
assert c.read(8192, 4) == b"fine"
# A write refused for being out of range, its payload sent in pieces
# along with the next request in the same segment.
bad = c.request(CMD_WRITE, size - 10, 20, payload=b"", send_payload=False)
c.send(b"y" * 19)
c.send(b"y" + struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 777, 8192, 4))
c.pending[777] = (CMD_READ, 4)
assert c.wait(bad)[0] == ENOSPC
got = c.wait(777)
assert got[0] == 0 and got[1][-1][1][8:] == b"fine", got
assert c.read(8192, 4) == b"fine"
c.request(CMD_DISC)
assert c.is_closed()
PY

# Read-only and secondary exports: reads work, writes are EPERM.
for e in ro sec; do
  $PY - "$(uri a $e)" "$e" <<'PY'
import nbd, sys
from nbdtest import *
uri, name = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
assert h.is_read_only() and not h.can_trim() and not h.can_zero()
h.set_strict_mode(0)
data = h.pread(4096, 0)
for fn, args in ((h.pwrite, (b"x" * 4096, 0)), (h.pwrite, (b"x", 5, nbd.CMD_FLAG_FUA)),
                 (h.pwrite, (b"x" * (4 << 20), 0)),
                 (h.trim, (4096, 0)), (h.zero, (4096, 0)),
                 (h.zero, (4096, 0, nbd.CMD_FLAG_NO_HOLE))):
    try:
        fn(*args)
        raise SystemExit("%s: write-like request accepted" % name)
    except nbd.Error as e:
        assert e.errno == "EPERM", (name, e)
h.flush()
h.cache(4096, 0)
assert h.pread(4096, 0) == data
# The refused write's payload was drained: the stream is in step.
c = Raw(socket_of(uri))
c.connect(name)
assert c.eflags & EFLAG_READ_ONLY
for n in (1, 65536, 1 << 20):
    assert c.cmd(CMD_WRITE, 0, payload=b"z" * n)[0] == EPERM
assert c.read(0, 4096) == data
PY
done
cmp "$TESTDIR/ro.img" "$TESTDIR/ro.orig" || fail "read-only image changed"
cmp "$TESTDIR/sec.img" "$TESTDIR/sec.orig" || fail "secondary image changed"
stop_mirrord a
exit 0
