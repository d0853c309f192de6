#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A sync-mode mirror cancelled while guest writes forwarded to its
# target are still in flight (the target froze: SIGSTOP) lets go once
# they complete, so a new mirror can start.  The soak's partition phase
# found the HA primary cancelling its broken mirror in exactly this
# state: the late completions never let the cancelled mirror go, no
# resync ever started, and SIGTERM waited its 30 s limit.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
WRITER="${top_srcdir:-$(dirname "$0")/..}/tests/ha-writer.py"

truncate -s 64M "$TESTDIR/src.img" "$TESTDIR/dst.img"
start_mirrord t --export "vm1=$TESTDIR/dst.img"
start_mirrord s --export "vm1=$TESTDIR/src.img"
ctl s mirror start vm1 "$(uri t vm1)" >/dev/null
ctl s mirror wait vm1 --until ready --timeout 60 >/dev/null

$PY "$WRITER" write "$(uri s vm1)" "$TESTDIR/acked" $((4 << 20)) 2>/dev/null &
writer=$!
cleanup_fn "kill $writer 2>/dev/null"
acked () { [ "$(grep -c . "$TESTDIR/acked")" -ge "$1" ]; }
poll 30 acked 100 || fail "the writer made no progress"

t=$(mirrord_pid t)
kill -STOP "$t"
cleanup_fn "kill -CONT $t 2>/dev/null"
# Sync mode: the writer now waits for a forward that cannot complete.
stalled () {
  local n; n=$(grep -c . "$TESTDIR/acked")
  ! poll 1 acked $((n + 1))
}
poll 10 stalled || fail "writes did not wait for the frozen target"
ctl s mirror cancel vm1 >/dev/null
kill -CONT "$t"
# The forwards complete now, after the cancel; the writer goes on.
n=$(grep -c . "$TESTDIR/acked")
poll 20 acked $((n + 100)) || fail "writes stuck after the cancel"
restarted () { ctl s mirror start vm1 "$(uri t vm1)" >/dev/null; }
poll 10 restarted || fail "the cancelled mirror never let go: $(ctl s mirror start vm1 "$(uri t vm1)" 2>&1)"
ctl s mirror wait vm1 --until ready --timeout 60 >/dev/null
kill $writer
wait $writer 2>/dev/null || :
ctl s mirror wait vm1 --until ready --timeout 60 >/dev/null
$PY "$WRITER" verify "$(uri t vm1)" "$TESTDIR/acked" >/dev/null \
  || fail "the target lacks acknowledged writes after the new mirror"
stop_mirrord s
stop_mirrord t
exit 0
