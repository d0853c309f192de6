#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fixed-newstyle negotiation as clients see it: LIST, INFO and GO
# (an unknown export is refused and the connection stays usable), the
# default export "", EXPORT_NAME with and without NO_ZEROES, ABORT,
# block size information, unknown and oversized options, and a bad
# option magic that closes only its own connection.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo --version
requires $PY -c 'import nbd'

truncate -s 16M "$TESTDIR/vm1.img"
truncate -s 8M "$TESTDIR/vm2.img"
start_mirrord a --export "vm1=$TESTDIR/vm1.img"

# One export: "" is the default export, as with qemu-nbd and nbdkit.
nbdinfo "$(uri a '')" | grep -q 'export-size: 16777216' \
  || fail "default export not served"
nbdinfo "$(uri a vm1)" > "$TESTDIR/info"
grep -q 'block_size_minimum: 1$' "$TESTDIR/info" || fail "minimum block size"
grep -q 'block_size_preferred: 4096$' "$TESTDIR/info" || fail "preferred block size"
grep -q 'block_size_maximum: 33554432$' "$TESTDIR/info" || fail "maximum block size"
grep -q 'description: .*vm1' "$TESTDIR/info" || fail "no description"

# Two exports: LIST names both, and "" no longer picks one.
ctl a export add vm2 "$TESTDIR/vm2.img" >/dev/null
nbdinfo --list --json "$(uri a '')" > "$TESTDIR/list"
$PY - "$TESTDIR/list" <<'PY'
import json, sys
names = sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])
assert names == ["vm1", "vm2"], names
PY
$PY -c 'import nbd, sys; nbd.NBD().connect_uri(sys.argv[1])' "$(uri a '')" \
  2>/dev/null && fail "'' accepted with two exports"

$PY - "$(uri a vm1)" <<'PY'
import struct, sys
from nbdtest import *
path = socket_of(sys.argv[1])

# LIST over the wire: one SERVER reply per export, then ACK.
c = Raw(path)
c.start()
r = c.ask(OPT_LIST)
assert [t for t, _ in r] == [REP_SERVER, REP_SERVER, REP_ACK], r
assert sorted(d[4:].decode() for t, d in r[:-1]) == ["vm1", "vm2"]
assert c.ask(OPT_LIST, b"x")[-1][0] == REP_ERR_INVALID

# INFO of an unknown export is an error reply; the connection goes on.
r = c.ask(OPT_INFO, Raw.info_data("nosuch"))
assert r[-1][0] == REP_ERR_UNKNOWN, r
assert c.ask(OPT_GO, Raw.info_data("nosuch"))[-1][0] == REP_ERR_UNKNOWN
# Malformed INFO data, unknown options, STARTTLS without TLS, data on
# STRUCTURED_REPLY: refused, negotiation continues.
assert c.ask(OPT_INFO, b"\0\0\0\x10vm1")[-1][0] == REP_ERR_INVALID
assert c.ask(99)[-1][0] == REP_ERR_UNSUP
assert c.ask(OPT_STARTTLS)[-1][0] == REP_ERR_POLICY
assert c.ask(OPT_STRUCTURED_REPLY, b"x")[-1][0] == REP_ERR_INVALID
# An option over 64 KiB: ERR_TOO_BIG, and its data is skipped.
big = Raw.info_data("vm1") + b"\0" * (70 << 10)
assert c.ask(OPT_INFO, big)[-1][0] == REP_ERR_TOO_BIG

# INFO with NAME, DESCRIPTION and BLOCK_SIZE requested.
r = c.ask(OPT_INFO, Raw.info_data("vm1", [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]))
assert r[-1][0] == REP_ACK, r
infos = {struct.unpack(">H", d[:2])[0]: d[2:] for t, d in r if t == REP_INFO}
size, eflags = struct.unpack(">QH", infos[INFO_EXPORT])
assert size == 16 << 20, size
assert eflags & EFLAG_HAS_FLAGS and not eflags & EFLAG_READ_ONLY
assert eflags & EFLAG_CAN_MULTI_CONN and eflags & EFLAG_SEND_FLUSH
assert struct.unpack(">III", infos[INFO_BLOCK_SIZE]) == (1, 4096, 32 << 20)
assert infos[INFO_NAME] == b"vm1", infos
assert b"vm1" in infos[INFO_DESCRIPTION]

# GO after all that still enters transmission; I/O works.
assert c.go("vm1")[0] == 16 << 20
assert c.cmd(CMD_WRITE, 4096, payload=b"handshake" * 100)[0] == 0
assert c.read(4096, 900) == b"handshake" * 100
assert c.cmd(CMD_FLUSH)[0] == 0
c.close()

# EXPORT_NAME (the old way in), with and without NO_ZEROES: the reply
# is size, flags, and 124 zero bytes unless NO_ZEROES was agreed.
for flags, pad in ((FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 0),
                   (FLAG_FIXED_NEWSTYLE, 124)):
    c = Raw(path)
    c.start(flags)
    c.option(OPT_EXPORT_NAME, b"vm2")
    size, eflags = struct.unpack(">QH", c.recvn(10))
    assert size == 8 << 20 and eflags & EFLAG_HAS_FLAGS, (size, eflags)
    if pad:
        assert c.recvn(pad) == bytes(pad)
    # The very next bytes are the reply to our first request.
    assert c.read(0, 512) == bytes(512)
    c.request(CMD_DISC)
    assert c.is_closed(), "DISC did not close"

# Requests pipelined behind GO, in the same segment, before its reply.
c = Raw(path)
c.start()
c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, len(Raw.info_data("vm1")))
       + Raw.info_data("vm1")
       + struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 1, 65536, 5) + b"early"
       + struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_FLUSH, 2, 0, 0))
assert c.opt_replies(OPT_GO)[-1][0] == REP_ACK
assert sorted(c.reply()[:2] for _ in range(2)) == [(1, 0), (2, 0)]
assert c.read(65536, 5) == b"early"
c.close()

# EXPORT_NAME of an unknown export: no error reply exists, so closing is.
c = Raw(path)
c.start()
c.option(OPT_EXPORT_NAME, b"nosuch")
assert c.is_closed(), "unknown EXPORT_NAME left open"

# ABORT: an ACK (optional in the spec, but then a clean close).
c = Raw(path)
c.start()
c.option(OPT_ABORT)
opt, rtype, _ = c.opt_reply()
assert (opt, rtype) == (OPT_ABORT, REP_ACK)
assert c.is_closed(), "ABORT left open"

# Unsupported client flags: the server closes.
c = Raw(path)
c.greeting()
c.client_flags(FLAG_FIXED_NEWSTYLE | 0x80)
assert c.is_closed(), "unknown client flags accepted"

# A bad option magic closes that connection only: another one in the
# middle of its own negotiation carries on.
other = Raw(path)
other.start()
assert other.ask(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
c = Raw(path)
c.start()
c.option(OPT_LIST, magic=0x1122334455667788)
assert c.is_closed(), "bad option magic not closed"
other.structured = True
other.go("vm1")
assert other.read(4096, 900) == b"handshake" * 100
PY

# The daemon is unharmed: new clients are served, and it exits cleanly.
nbdinfo "$(uri a vm2)" | grep -q 'export-size: 8388608' || fail "not serving"
stop_mirrord a
exit 0
