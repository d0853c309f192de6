#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrorctl export add / export remove on a running daemon: an added
# export serves clients at once (read-only ones refuse writes); a
# removed one lets its clients finish what they sent, then disconnects
# them, while clients of other exports notice nothing.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires nbdinfo --version
requires $PY -c 'import nbd'

truncate -s 64M "$TESTDIR/base.img"
truncate -s 256M "$TESTDIR/big.img"
truncate -s 8M "$TESTDIR/new.img"
qemu-io -f raw -c 'write -P 0x5a 0 1M' "$TESTDIR/new.img" >/dev/null
cp "$TESTDIR/new.img" "$TESTDIR/ro.img"
start_mirrord e --export "base=$TESTDIR/base.img"

# qemu-io that fails on any failed command (it prints "read ..." even
# after a pattern mismatch).
qio () {
  local out
  out=$(qemu-io "$@" 2>&1) && ! grep -qi 'fail' <<<"$out" \
    || { echo "$out" >&2; return 1; }
}

# Add: the reply describes the export; a client can use it right away.
out=$(ctl e export add vm2 "$TESTDIR/new.img")
[ "$out" = "added export vm2: raw 8.0 MiB $TESTDIR/new.img" ] || fail "add: $out"
nbdinfo "$(uri e vm2)" | grep -q 'export-size: 8388608' || fail "vm2 not served"
qio -f raw -c 'read -P 0x5a 0 1M' -c 'write -P 0x77 4M 1M' \
  -c 'read -P 0x77 4M 1M' "$(uri e vm2)" || fail "vm2 read/write"
qio -f raw -r -c 'read -P 0x77 4M 1M' "$TESTDIR/new.img" || fail "vm2 write not on disk"
ctl e --json status vm2 | $PY -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["from_config"] is False and e["writable"] is True, e
assert e["bytes_written"] == 1 << 20, e'

# Read-only, with an explicit format: reads work, writes are refused
# and the file is untouched.
ctl e --json export add vm3 "$TESTDIR/ro.img" --format raw --readonly \
  > "$TESTDIR/add.json"
$PY -c '
import json, sys
e = json.load(open(sys.argv[1]))
assert e["name"] == "vm3" and e["format"] == "raw", e
assert e["readonly"] is True and e["writable"] is False, e
assert e["size"] == 8 << 20 and e["mirror"] is None, e' "$TESTDIR/add.json"
nbdinfo "$(uri e vm3)" | grep -q 'is_read_only: true' || fail "vm3 not read-only"
qio -f raw -r -c 'read -P 0x5a 0 1M' "$(uri e vm3)" || fail "vm3 read"
# qemu-io opens read-write; NBD says read-only, so the open or the
# write must fail.
if qemu-io -f raw -c 'write -P 0x99 0 64k' "$(uri e vm3)" >"$TESTDIR/out" 2>&1; then
  grep -q 'wrote' "$TESTDIR/out" && fail "write to read-only vm3 succeeded"
fi
$PY - "$(uri e vm3)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)            # let the server refuse it
h.connect_uri(sys.argv[1])
assert h.is_read_only()
for op in (lambda: h.pwrite(b"\x99" * 4096, 0), lambda: h.trim(4096, 0),
           lambda: h.zero(4096, 0)):
    try:
        op()
    except nbd.Error as e:
        assert e.errno == "EPERM", e
    else:
        sys.exit("a write to a read-only export succeeded")
assert h.pread(4096, 0) == b"\x5a" * 4096
PY
qio -f raw -r -c 'read -P 0x5a 0 1M' -c 'read -P 0 1M 7M' "$TESTDIR/ro.img" \
  || fail "read-only image changed"

# Refusals: exit 1 with the daemon's reason.
expect_status 1 ctl e export add vm2 "$TESTDIR/new.img" 2>"$TESTDIR/err"
grep -q 'vm2 already exists' "$TESTDIR/err" || fail "dup: $(cat "$TESTDIR/err")"
expect_status 1 ctl e export add vm4 "$TESTDIR/missing.img" 2>"$TESTDIR/err"
grep -q 'missing.img.*No such file' "$TESTDIR/err" || fail "missing: $(cat "$TESTDIR/err")"
expect_status 1 ctl e export add 'bad/name' "$TESTDIR/new.img" 2>"$TESTDIR/err"
grep -q 'invalid' "$TESTDIR/err" || fail "bad name: $(cat "$TESTDIR/err")"
expect_status 1 ctl e export remove vm9 2>"$TESTDIR/err"
grep -q 'export vm9 not found' "$TESTDIR/err" || fail "remove vm9: $(cat "$TESTDIR/err")"
ctl e status vm4 >/dev/null 2>&1 && fail "a refused export was added"

# Remove with clients connected.  One client of "big" has writes in
# flight; one client of "base" keeps working throughout.
ctl e export add big "$TESTDIR/big.img" >/dev/null
$PY - "$(uri e big)" "$(uri e base)" "$MIRRORCTL" "$TESTDIR/e.ctl" \
  > "$TESTDIR/acked" <<'PY'
import nbd, subprocess, sys
big_uri, base_uri, mirrorctl, sock = sys.argv[1:]
CHUNK = 4 << 20
big = nbd.NBD()
big.connect_uri(big_uri)
base = nbd.NBD()
base.connect_uri(base_uri)
base.pwrite(b"\x01" * 65536, 0)

cookies = [big.aio_pwrite(bytes([0x20 + i]) * CHUNK, i * CHUNK)
           for i in range(48)]
# Put the first requests on the wire before removing the export.
while big.aio_in_flight() > 40:
    big.poll(-1)
big.poll(0)
r = subprocess.run([mirrorctl, "-s", sock, "export", "remove", "big"],
                   capture_output=True, text=True)
assert r.returncode == 0, r.stderr
assert r.stdout.strip() == "removed export big", r.stdout

# Every request already sent is answered: written, or refused because
# the export is going away; never an I/O error or a write refused as
# if the export were read-only.
while big.aio_in_flight() > 0:
    try:
        big.poll(-1)
    except nbd.Error:
        break
acked = []
for i, c in enumerate(cookies):
    try:
        if big.aio_command_completed(c):
            acked.append(i)
    except nbd.Error as e:
        if e.errno not in ("ESHUTDOWN", "ENOTCONN"):
            sys.exit("write %d to a removed export failed with %s" % (i, e))
assert acked, "no write answered before the removal"
# The connection is then closed by the server.
try:
    big.pread(512, 0)
    sys.exit("the client of a removed export is still served")
except nbd.Error:
    pass

# The other export's client never noticed.
for i in range(32):
    data = bytes([i]) * 65536
    base.pwrite(data, i * 65536)
    assert base.pread(65536, i * 65536) == data
base.flush()
base.shutdown()
print(" ".join(map(str, acked)))
PY
[ -s "$TESTDIR/acked" ] || fail "no acknowledged writes"
for i in $(cat "$TESTDIR/acked"); do
  qio -f raw -r -c "read -P $((0x20 + i)) $((i * 4))M 4M" "$TESTDIR/big.img" \
    || fail "acknowledged write $i to big lost"
done

# Gone from status and from the server; a new client is refused.
expect_status 1 ctl e status big 2>/dev/null
ctl e --json status | $PY -c '
import json, sys
names = sorted(e["name"] for e in json.load(sys.stdin)["exports"])
assert names == ["base", "vm2", "vm3"], names'
nbdinfo "$(uri e big)" >/dev/null 2>&1 && fail "removed export still served"
grep -q 'export big: removed (1 client disconnecting)' "$TESTDIR/e.log" \
  || fail "removal not logged"

# A name can be reused once removed.
ctl e export remove vm2 >/dev/null
ctl e export add vm2 "$TESTDIR/new.img" --readonly >/dev/null
nbdinfo "$(uri e vm2)" | grep -q 'is_read_only: true' || fail "vm2 re-add"
stop_mirrord e
exit 0
