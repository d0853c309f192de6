#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Meta contexts: LIST_META_CONTEXT and SET_META_CONTEXT with the
# queries the spec defines ("base:", "base:allocation", none, unknown
# namespaces ignored), SET refused before structured replies, and
# BLOCK_STATUS refused (EINVAL, connection kept) unless a context was
# selected for the export in use.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo --version
requires $PY -c 'import nbd'

truncate -s 4M "$TESTDIR/vm1.img"
truncate -s 4M "$TESTDIR/vm2.img"
start_mirrord a --export "vm1=$TESTDIR/vm1.img" --export "vm2=$TESTDIR/vm2.img"

nbdinfo "$(uri a vm1)" | grep -q '^[[:space:]]*base:allocation$' \
  || fail "base:allocation not listed by nbdinfo"

$PY - "$(uri a vm1)" <<'PY'
import nbd, struct, sys
from nbdtest import *
path = socket_of(sys.argv[1])

def listed(c, queries, name="vm1"):
    r = c.ask(OPT_LIST_META_CONTEXT, Raw.meta_data(name, queries))
    assert r[-1][0] == REP_ACK, r
    return sorted(Raw.meta_contexts(r))

c = Raw(path)
c.start()
# SET before STRUCTURED_REPLY: refused (the spec's SHOULD: ERR_INVALID).
r = c.ask(OPT_SET_META_CONTEXT, Raw.meta_data("vm1", ["base:allocation"]))
assert r == [(REP_ERR_INVALID, r[-1][1])], r
assert c.ask(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK

# LIST: no query lists everything; "base:" is the namespace wildcard;
# exact names match; unknown namespaces and leaves are ignored.
assert "base:allocation" in listed(c, [])
assert listed(c, ["base:"]) == ["base:allocation"]
assert listed(c, ["base:allocation"]) == ["base:allocation"]
assert listed(c, ["x-nosuch:thing", "base:nosuch"]) == []
assert listed(c, ["x-nosuch:", "base:allocation"]) == ["base:allocation"]
# Errors: unknown export, a query running past the option's data.
r = c.ask(OPT_LIST_META_CONTEXT, Raw.meta_data("nosuch", []))
assert r[-1][0] == REP_ERR_UNKNOWN, r
bad = Raw.meta_data("vm1", ["base:allocation"])[:-3]
assert c.ask(OPT_LIST_META_CONTEXT, bad)[-1][0] == REP_ERR_INVALID

# SET: "base:" selects nothing (the spec: MUST ignore it); unknown
# namespaces are ignored; base:allocation gets a context id.
r = c.ask(OPT_SET_META_CONTEXT, Raw.meta_data("vm1", ["base:"]))
assert r[-1][0] == REP_ACK and Raw.meta_contexts(r) == {}, r
r = c.ask(OPT_SET_META_CONTEXT,
          Raw.meta_data("vm1", ["x-nosuch:a", "base:allocation"]))
assert r[-1][0] == REP_ACK, r
ids = Raw.meta_contexts(r)
assert list(ids) == ["base:allocation"], ids
c.structured = True
c.go("vm1")
assert c.cmd(CMD_WRITE, 0, payload=b"x" * 65536)[0] == 0
err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 4 << 20)
assert err == 0, err
assert [t for t, _ in chunks] == [REPLY_TYPE_BLOCK_STATUS], chunks
ctx_id = struct.unpack(">I", chunks[0][1][:4])[0]
assert ctx_id == ids["base:allocation"], (ctx_id, ids)
desc = chunks[0][1][4:]
length, flags = struct.unpack(">II", desc[:8])
assert flags & 3 == 0 and 65536 <= length, (length, flags)
c.close()

# BLOCK_STATUS without a selected context is EINVAL, and the
# connection goes on working: no SET at all, a SET that selected
# nothing, and a SET for another export than the one chosen.
for setup in (None, [], "vm2", "bad"):
    c = Raw(path)
    c.start()
    assert c.ask(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
    c.structured = True
    if setup == "vm2":
        r = c.ask(OPT_SET_META_CONTEXT, Raw.meta_data("vm2", ["base:allocation"]))
        assert Raw.meta_contexts(r), r
    elif setup == "bad":
        # A failed SET still replaces the selection made before it.
        r = c.ask(OPT_SET_META_CONTEXT, Raw.meta_data("vm1", ["base:allocation"]))
        assert Raw.meta_contexts(r), r
        bad = Raw.meta_data("vm1", ["base:allocation"])[:-1]
        assert c.ask(OPT_SET_META_CONTEXT, bad)[-1][0] == REP_ERR_INVALID
    elif setup is not None:
        assert c.ask(OPT_SET_META_CONTEXT, Raw.meta_data("vm1", setup))[-1][0] == REP_ACK
    c.go("vm1")
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 4096)
    assert err == EINVAL, (setup, err, chunks)
    assert chunks[-1][0] == REPLY_TYPE_ERROR, chunks
    assert c.read(0, 5) == b"xxxxx"
    c.close()

# Without structured replies there is no BLOCK_STATUS at all.
c = Raw(path)
c.connect("vm1", structured=False)
err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 4096)
assert err == EINVAL, err
assert c.read(0, 5) == b"xxxxx"

# libnbd agrees: the context is offered and usable.
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
seen = []
h.block_status(1 << 20, 0, lambda ctx, off, ents, err: seen.append(ctx))
assert seen == [nbd.CONTEXT_BASE_ALLOCATION], seen
PY

stop_mirrord a
exit 0
