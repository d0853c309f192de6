#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# BLOCK_STATUS with base:allocation: qemu-img map over NBD agrees with
# qemu-img map of the file itself, nbdinfo --map shows the layout;
# every reply's descriptors are consecutive from the offset, correct,
# and stay inside the request; REQ_ONE gives exactly one descriptor no
# longer than the request; a fully allocated image reports holes as
# soon as it gets one.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-img --version
requires nbdinfo --version
requires $PY -c 'import nbd'

truncate -s 64M "$TESTDIR/sparse.img"
head -c 8M /dev/urandom > "$TESTDIR/full.img"
start_mirrord a --export "vm1=$TESTDIR/sparse.img" --export "full=$TESTDIR/full.img"

# Layout: data [0,1M) [4M,5M) [63M,63M+4K), holes elsewhere.
$PY - "$(uri a vm1)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"a" * (1 << 20), 0)
h.pwrite(b"b" * (2 << 20), 4 << 20)
h.zero(1 << 20, 5 << 20)              # punches the second MiB back out
h.pwrite(b"c" * 4096, 63 << 20)
h.flush()
PY
expected='0 1048576 0
1048576 3145728 3
4194304 1048576 0
5242880 60817408 3
66060288 4096 0
66064384 1044480 3'

map () {
  qemu-img map --output=json -f raw "$1" | $PY -c '
import json, sys
for e in json.load(sys.stdin):
    print(e["start"], e["length"], int(not e["data"]) | (2 if e["zero"] else 0))'
}
[ "$(map "$(uri a vm1)")" = "$expected" ] || { map "$(uri a vm1)"; fail "qemu-img map over NBD"; }
[ "$(map "$TESTDIR/sparse.img")" = "$expected" ] || fail "qemu-img map of the file (test bug?)"
got=$(nbdinfo --map --json "$(uri a vm1)" | $PY -c '
import json, sys
for e in json.load(sys.stdin):
    print(e["offset"], e["length"], e["type"])')
[ "$got" = "$expected" ] || { echo "$got"; fail "nbdinfo --map"; }
nbdinfo --map "$(uri a full)" | grep -Eq '^ +0 +8388608 +0 +data$' \
  || fail "fully allocated image not one data extent"

$PY - "$(uri a vm1)" "$expected" <<'PY'
import random, struct, sys
from nbdtest import *
layout = [tuple(map(int, l.split())) for l in sys.argv[2].splitlines()]
size = 64 << 20

def flags_at(off):
    for o, l, f in layout:
        if o <= off < o + l:
            return f

def check(c, offset, count, flags=0):
    err, chunks = c.cmd(CMD_BLOCK_STATUS, offset, count, flags)
    assert err == 0, (offset, count, err)
    assert len(chunks) == 1 and chunks[0][0] == REPLY_TYPE_BLOCK_STATUS, chunks
    payload = chunks[0][1]
    assert struct.unpack(">I", payload[:4])[0] == c.meta["base:allocation"]
    descs = [struct.unpack(">II", payload[i:i + 8]) for i in range(4, len(payload), 8)]
    assert descs, "no descriptor"
    if flags & CMD_FLAG_REQ_ONE:
        assert len(descs) == 1, descs
    pos = offset
    for length, st in descs:
        assert length > 0
        # Every byte the descriptor covers has this status.
        assert flags_at(pos) == st and flags_at(pos + length - 1) == st, \
            (offset, count, pos, length, st)
        pos += length
    assert pos <= offset + count, ("descriptors beyond the request", offset, count, descs)
    if not flags & CMD_FLAG_REQ_ONE:
        assert pos == offset + count or len(descs) > 1000, (offset, count, descs)
    return descs

c = Raw(socket_of(sys.argv[1]))
c.connect("vm1", meta=["base:allocation"])
assert check(c, 0, size) == [(l, f) for o, l, f in layout]
assert check(c, 0, size, CMD_FLAG_REQ_ONE) == [(1 << 20, 0)]
assert check(c, 1000, 5000, CMD_FLAG_REQ_ONE) == [(5000, 0)]
assert check(c, (1 << 20) - 1, 2, CMD_FLAG_REQ_ONE) == [(1, 0)]
assert check(c, size - 1, 1) == [(1, 3)]
rng = random.Random(42)
for i in range(300):
    off = rng.randrange(size)
    count = rng.randint(1, min(size - off, rng.choice([512, 65536, 8 << 20, 64 << 20])))
    check(c, off, count, rng.choice([0, CMD_FLAG_REQ_ONE]))
# Out of range, and zero length: EINVAL, the connection goes on.
for off, count in ((size, 1), (size - 1, 2), (0, size + 1), (1 << 62, 4096), (0, 0)):
    assert c.cmd(CMD_BLOCK_STATUS, off, count)[0] == EINVAL, (off, count)
check(c, 0, 4096)

# A fully allocated image: one data extent, and a hole once punched.
c = Raw(socket_of(sys.argv[1]))
c.connect("full", meta=["base:allocation"])
err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 8 << 20)
assert struct.unpack(">II", chunks[0][1][4:12]) == (8 << 20, 0), chunks
assert c.cmd(CMD_TRIM, 1 << 20, 1 << 20)[0] == 0
err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 8 << 20)
p = chunks[0][1]
descs = [struct.unpack(">II", p[i:i + 8]) for i in range(4, len(p), 8)]
assert descs == [(1 << 20, 0), (1 << 20, 3), (6 << 20, 0)], descs
PY

stop_mirrord a
exit 0
