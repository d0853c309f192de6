#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# MULTI_CONN: advertised; writes acknowledged on one connection, then
# a flush on a second, are seen by reads on a third and are in the
# image file; nbdcopy with four connections copies in and out exactly.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo --version
requires nbdcopy --version
requires $PY -c 'import nbd'

truncate -s 64M "$TESTDIR/disk.img"
start_mirrord a -v --export "vm1=$TESTDIR/disk.img"
u=$(uri a vm1)
nbdinfo "$u" | grep -q 'can_multi_conn: true' || fail "MULTI_CONN not advertised"

$PY - "$u" "$TESTDIR/disk.img" <<'PY'
import nbd, os, sys
uri, image = sys.argv[1], sys.argv[2]
a, b, c = nbd.NBD(), nbd.NBD(), nbd.NBD()
for h in (a, b, c):
    h.connect_uri(uri)
    assert h.can_multi_conn()

for round in range(5):
    # A: many writes in flight, all acknowledged (no FUA).
    chunks = {}
    for i in range(64):
        off = (round * 64 + i) * 65536 + round * 7
        chunks[off] = os.urandom(65536 - round * 13)
    cookies = [a.aio_pwrite(d, off) for off, d in chunks.items()]
    a.aio_zero(4096, (60 << 20) + round * 8192)
    while a.aio_in_flight() > 0:
        a.poll(-1)
    assert all(a.aio_command_completed(k) for k in cookies)
    # B flushes; C reads.
    b.flush()
    for off, d in chunks.items():
        assert c.pread(len(d), off) == d, ("C does not see A's write", round, off)
    with open(image, "rb") as f:
        for off, d in chunks.items():
            f.seek(off)
            assert f.read(len(d)) == d, ("not in the image file", round, off)
    assert c.pread(4096, (60 << 20) + round * 8192) == bytes(4096)
PY

# nbdcopy, four connections each way (it uses as many as threads).
head -c 64M /dev/urandom > "$TESTDIR/random.img"
before=$(grep -c 'new connection' "$TESTDIR/a.log")
nbdcopy --connections=4 --threads=4 "$TESTDIR/random.img" "$u"
nbdcopy --connections=4 --threads=4 "$u" "$TESTDIR/out.img"
after=$(grep -c 'new connection' "$TESTDIR/a.log")
[ $((after - before)) -ge 8 ] || fail "nbdcopy used $((after - before)) connections, expected 8"
cmp "$TESTDIR/random.img" "$TESTDIR/out.img" || fail "nbdcopy round trip differs"
cmp "$TESTDIR/random.img" "$TESTDIR/disk.img" || fail "image differs"
stop_mirrord a
exit 0
