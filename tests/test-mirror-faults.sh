#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Mirror refusals and faults: a target of another size, a read-only one
# and an unreachable one are refused with a clear message; the target
# killed and restarted mid-sync (disconnected, then resumed from the
# bitmap); cancel keeps what is not copied; mirrord kill -9 mid-sync
# resumes after the restart; a target that fails writes (nbdkit's
# error filter) still ends up identical.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd --version
requires nbdkit --version
requires qemu-io --version

truncate -s 64M "$TESTDIR/src.img" "$TESTDIR/dst.img"
truncate -s 32M "$TESTDIR/small.img"
qemu-io -f raw -c 'write -P 0x11 0 32M' -c 'write -P 0x22 40M 8M' "$TESTDIR/src.img" >/dev/null

serve () {   # serve NAME FILE [qemu-nbd args...]
  local name=$1 file=$2; shift 2
  rm -f "$TESTDIR/$name.sock"
  qemu-nbd -f raw -x vm1 -k "$TESTDIR/$name.sock" -t "$@" "$file" &
  eval "qpid_$name=$!"
  cleanup_fn "kill $! 2>/dev/null"
  poll 10 test -S "$TESTDIR/$name.sock"
}
turi () { echo "nbd+unix:///vm1?socket=$TESTDIR/$1.sock"; }
state () { ctl a --json status vm1 | $PY -c 'import json,sys; m=json.load(sys.stdin)["exports"][0]["mirror"]; print(m["state"] if m else "none")'; }
dirty () { ctl a --json status vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["dirty_bytes"])'; }

# Slow enough (bandwidth) that faults land mid-sync.
start_mirrord a --export "vm1=$TESTDIR/src.img"

# Refusals: exit 1, a message saying why, no mirror left running.
serve small "$TESTDIR/small.img"
out=$(ctl a mirror start vm1 "$(turi small)" 2>&1) && fail "size mismatch accepted"
[[ $out == *"size"*"33554432"* ]] || fail "size message: $out"
serve ro "$TESTDIR/dst.img" -r
out=$(ctl a mirror start vm1 "$(turi ro)" 2>&1) && fail "read-only target accepted"
[[ $out == *read-only* ]] || fail "read-only message: $out"
out=$(ctl a mirror start vm1 "nbd+unix:///vm1?socket=$TESTDIR/nothing.sock" 2>&1) \
  && fail "unreachable target accepted"
[[ $out == *nothing.sock* ]] || fail "unreachable message: $out"
expect_status 1 ctl a mirror cancel vm1 2>/dev/null     # nothing to cancel
kill "$qpid_ro" "$qpid_small"

# The target dies mid-sync and comes back: disconnected, then resumed.
serve dst "$TESTDIR/dst.img"
ctl a mirror start vm1 "$(turi dst)" --mode async --bandwidth 8M
poll 20 bash -c "[ \$(stat -c %b '$TESTDIR/dst.img') -gt 0 ]"
kill "$qpid_dst"
disconnected () { [ "$(state)" = disconnected ]; }
poll 20 disconnected || fail "state $(state), not disconnected"
qemu-io -f raw -c 'write -P 0x33 60M 1M' "$(uri a vm1)" >/dev/null   # tracked meanwhile
serve dst "$TESTDIR/dst.img"
ctl a mirror wait vm1 --until ready --timeout 60 || fail "no resume after reconnect"
grep -q 'disconnected -> syncing' "$TESTDIR/a.log" || fail "reconnect not logged"

# Cancel: the mirror stops, the bitmap keeps what is not copied.
qemu-io -f raw -c 'write -P 0x44 10M 2M' "$(uri a vm1)" >/dev/null
ctl a mirror cancel vm1 >/dev/null
[ "$(state)" = cancelled ] || fail "state $(state) after cancel"

# mirrord kill -9 mid-sync: after the restart the job resumes (from the
# bitmap, not from scratch) and completes.
ctl a mirror start vm1 "$(turi dst)" --mode async --bandwidth 4M
poll 20 bash -c "grep -q 'up (' '$TESTDIR/a.log'"
kill9_mirrord a
start_mirrord a --export "vm1=$TESTDIR/src.img"
grep -q 'resumed' "$TESTDIR/a.log" || fail "the job did not resume"
ctl a mirror wait vm1 --until ready --timeout 60
ctl a mirror cutover vm1 >/dev/null
qemu-img compare -f raw -F raw "$TESTDIR/src.img" "$TESTDIR/dst.img"
stop_mirrord a

# A target that fails a fifth of its writes: copies are retried until
# the target is identical.
truncate -s 64M "$TESTDIR/src2.img"
qemu-io -f raw -c 'write -P 0x55 0 16M' "$TESTDIR/src2.img" >/dev/null
nbdkit -f -U "$TESTDIR/err.sock" --filter=error memory 64M \
  error-pwrite=EIO error-pwrite-rate=20% &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/err.sock"
start_mirrord b --export "vm1=$TESTDIR/src2.img"
ctl b mirror start vm1 "nbd+unix:///?socket=$TESTDIR/err.sock"
ctl b mirror wait vm1 --until ready --timeout 60
ctl b mirror cutover vm1 >/dev/null
qemu-img compare -f raw "$TESTDIR/src2.img" "nbd+unix:///?socket=$TESTDIR/err.sock"
stop_mirrord b
exit 0
