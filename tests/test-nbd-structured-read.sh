#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Structured reads of a sparse image: holes come back as OFFSET_HOLE
# chunks, the chunks tile the request exactly and carry the right
# bytes (also when an image has more extents than one reply lists);
# DF gives exactly one data chunk; without structured replies the
# answer is a simple reply with the data.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'

# A sparse image made directly: data islands, and a region striped
# with 4 KiB of data every 8 KiB (2200 extents in 8.6 MiB: more than
# one read reply lists).
$PY - "$TESTDIR/disk.img" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 96 << 20)
os.pwrite(fd, b"A" * 65536, 1 << 20)
os.pwrite(fd, b"B" * 4096, 8 << 20)
for i in range(1100):
    os.pwrite(fd, bytes([i % 251 + 1]) * 4096, (64 << 20) + i * 8192)
os.close(fd)
PY
[ "$(stat -c %b "$TESTDIR/disk.img")" -lt $((20 << 11)) ] || fail "image not sparse"
start_mirrord a --export "vm1=$TESTDIR/disk.img"

$PY - "$(uri a vm1)" "$TESTDIR/disk.img" <<'PY'
import nbd, struct, sys
from nbdtest import *
uri, image = sys.argv[1], sys.argv[2]
ref = open(image, "rb")

def expect(offset, count):
    ref.seek(offset)
    return ref.read(count)

def chunks_of(h, count, offset, flags=0):
    """pread_structured: the chunks as (offset, length, status), and
    the reassembled buffer."""
    got = []
    buf = h.pread_structured(count, offset,
                             lambda b, off, st, err: got.append((off, len(b), st)) or 0,
                             flags)
    return got, buf

def check_tiling(chunks, offset, count):
    pos = offset
    for off, length, st in sorted(chunks):
        assert off == pos, ("gap or overlap", off, pos, chunks[:8])
        assert length > 0
        pos += length
    assert pos == offset + count, (pos, offset + count)

h = nbd.NBD()
h.connect_uri(uri)
assert h.get_structured_replies_negotiated()

# The islands region: holes are OFFSET_HOLE chunks, data is data.
# (Holes under 4 KiB may travel as data: they read as zeroes.)
for offset, count, holes in ((0, 32 << 20, True), ((1 << 20) - 10000, 80000, True),
                             ((1 << 20) - 1000, 70000, False),
                             ((8 << 20) - 5, 4106, False), (12345, 3 << 20, True)):
    chunks, buf = chunks_of(h, count, offset)
    check_tiling(chunks, offset, count)
    assert buf == expect(offset, count), (offset, count)
    kinds = {st for _, _, st in chunks}
    assert nbd.READ_DATA in kinds, (offset, count, chunks)
    assert (nbd.READ_HOLE in kinds) == holes, (offset, count, chunks)
    for off, length, st in chunks:
        if st == nbd.READ_HOLE:
            assert expect(off, length) == bytes(length), ("hole over data", off, length)

# Entirely inside a hole: one hole chunk.
chunks, buf = chunks_of(h, 1 << 20, 16 << 20)
assert chunks == [(16 << 20, 1 << 20, nbd.READ_HOLE)], chunks
assert buf == bytes(1 << 20)

# More extents than one reply lists: still exact bytes and tiling.
for offset, count in ((64 << 20, 9 << 20), ((64 << 20) + 4095, 8 << 20)):
    chunks, buf = chunks_of(h, count, offset)
    check_tiling(chunks, offset, count)
    assert buf == expect(offset, count), ("striped", offset, count)
    assert any(st == nbd.READ_HOLE for _, _, st in chunks)

# DF: exactly one data chunk.
for offset, count in ((0, 32 << 20), (16 << 20, 1 << 20), ((64 << 20) + 1, 65536)):
    chunks, buf = chunks_of(h, count, offset, nbd.CMD_FLAG_DF)
    assert chunks == [(offset, count, nbd.READ_DATA)], chunks[:4]
    assert buf == expect(offset, count)

# On the wire: DONE only on the last chunk; chunk types and lengths
# agree with their payloads.
c = Raw(socket_of(uri))
c.connect("vm1")
assert c.eflags & EFLAG_SEND_DF
for offset, count, flags in ((0, 10 << 20, 0), (0, 10 << 20, CMD_FLAG_DF)):
    cookie = c.request(CMD_READ, offset, count, flags)
    n = 0
    while True:
        got, err, (cflags, rtype, payload) = c.reply()
        assert got == cookie and err == 0
        n += 1
        if rtype == REPLY_TYPE_OFFSET_HOLE:
            assert len(payload) == 12 and not flags & CMD_FLAG_DF
        else:
            assert rtype == REPLY_TYPE_OFFSET_DATA, rtype
        if cflags & REPLY_FLAG_DONE:
            break
    assert n == 1 if flags else n >= 3, (flags, n)
c.close()

# Without structured replies: simple replies, same bytes.
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(uri)
assert not h.get_structured_replies_negotiated()
assert not h.can_df()
for offset, count in ((0, 32 << 20), ((1 << 20) - 1000, 70000), (64 << 20, 1 << 20)):
    assert h.pread(count, offset) == expect(offset, count)
c = Raw(socket_of(uri))
c.connect("vm1", structured=False)
cookie = c.request(CMD_READ, (1 << 20) - 3, 10)
got, err, (_, rtype, data) = c.reply()
assert (got, err, rtype) == (cookie, 0, None), (got, err, rtype)
assert data == expect((1 << 20) - 3, 10)
# DF is a structured-reply flag: refused without them.
assert c.cmd(CMD_READ, 0, 512, CMD_FLAG_DF)[0] == EINVAL
assert c.read(1 << 20, 4) == b"AAAA"
PY

stop_mirrord a
exit 0
