#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A read-only image file (mode 0444) exported readonly: every read is
# right, every kind of write is refused with EPERM, and the file is
# left exactly as it was.  Exporting it writable fails with a clear
# error when the file cannot be opened for writing.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'
requires qemu-io --version
requires nbdcopy --version
requires nbdinfo --version

$PY -c '
import random, sys
open(sys.argv[1], "wb").write(random.Random(3).randbytes(6 << 20))' "$TESTDIR/ro.img"
cp "$TESTDIR/ro.img" "$TESTDIR/orig.img"
chmod 0444 "$TESTDIR/ro.img"
touch -d '2001-01-01 00:00:00' "$TESTDIR/ro.img"
stamp () { stat -c '%a %s %Y' "$TESTDIR/ro.img"; }
before=$(stamp)

start_mirrord r --export "vm=$TESTDIR/ro.img,readonly"
ctl r --json status vm | $PY -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["readonly"] is True and e["writable"] is False, e'
nbdinfo "$(uri r vm)" | grep -q 'is_read_only: true' || fail "not advertised read-only"

# Reads: the whole export, and pieces at odd offsets.
nbdcopy "$(uri r vm)" "$TESTDIR/copy.img"
cmp "$TESTDIR/copy.img" "$TESTDIR/orig.img" || fail "read-only export reads wrong"
$PY - "$(uri r vm)" "$TESTDIR/orig.img" <<'PY'
import nbd, random, sys
h = nbd.NBD()
h.set_strict_mode(0)            # send the writes; the server must refuse
h.connect_uri(sys.argv[1])
orig = open(sys.argv[2], "rb").read()
assert h.is_read_only() and h.get_size() == len(orig)
rng = random.Random(5)
for _ in range(200):
    n = rng.randint(1, 300000)
    off = rng.randint(0, len(orig) - n)
    assert h.pread(n, off) == orig[off:off + n], (off, n)
for name, op in (("write", lambda: h.pwrite(b"\xaa" * 4096, 0)),
                 ("fua write", lambda: h.pwrite(b"\xaa", 12345, nbd.CMD_FLAG_FUA)),
                 ("trim", lambda: h.trim(1 << 20, 0)),
                 ("zero", lambda: h.zero(1 << 20, 1 << 20)),
                 ("fast zero", lambda: h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO))):
    try:
        op()
    except nbd.Error as e:
        assert e.errno in ("EPERM", "EINVAL"), "%s: %s" % (name, e)
    else:
        sys.exit("%s to a read-only export succeeded" % name)
h.flush()                       # allowed, and harmless
h.cache(1 << 20, 0)
assert h.pread(4096, 0) == orig[:4096]
h.shutdown()
PY
# qemu-io: a write fails, whether at open or at the write.
qemu-io -f raw -c 'write -P 0x99 0 64k' "$(uri r vm)" >"$TESTDIR/out" 2>&1 \
  && fail "qemu-io wrote to a read-only export: $(cat "$TESTDIR/out")"
out=$(qemu-io -f raw -r -c 'read -v 0 16' "$(uri r vm)")
[[ $out == *"read 16/16"* ]] || fail "qemu-io read: $out"
# Through the control API too (once vm is gone: one file, one export).
ctl r export remove vm >/dev/null
ctl r export add vm2 "$TESTDIR/ro.img" --readonly >/dev/null
stop_mirrord r
cmp "$TESTDIR/ro.img" "$TESTDIR/orig.img" || fail "a read-only image changed"
[ "$(stamp)" = "$before" ] || fail "mode, size or mtime changed: $(stamp), was $before"

# Writable export of a file that cannot be opened for writing: exit 1
# naming the file.  Root ignores mode 0444, so make it immutable then.
if [ "$(id -u)" -ne 0 ]; then
  want="Permission denied"
elif chattr +i "$TESTDIR/ro.img" 2>/dev/null; then
  cleanup_fn "chattr -i '$TESTDIR/ro.img'"
  want="Operation not permitted"
else
  echo "$0: cannot make the file unwritable for root; that part is skipped"
  exit 0
fi
out=$("$MIRRORD" -f --export "vm=$TESTDIR/ro.img" --nbd-socket "$TESTDIR/w.nbd" \
      --control "$TESTDIR/w.ctl" --state-dir "$TESTDIR/w.state" 2>&1) \
  && fail "a read-only file was exported writable"
[[ $out == *"export vm: $TESTDIR/ro.img: $want"* ]] || fail "unclear error: $out"
# The same through the control API; readonly still works on it.
start_mirrord r2
expect_status 1 ctl r2 export add w "$TESTDIR/ro.img" 2>"$TESTDIR/err"
grep -q "ro.img: $want" "$TESTDIR/err" || fail "export add: $(cat "$TESTDIR/err")"
ctl r2 export add vm "$TESTDIR/ro.img" --readonly >/dev/null
nbdcopy "$(uri r2 vm)" "$TESTDIR/copy2.img"
cmp "$TESTDIR/copy2.img" "$TESTDIR/orig.img" || fail "immutable file reads wrong"
stop_mirrord r2
exit 0
