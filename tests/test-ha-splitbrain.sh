#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC guarantees 5 and 6: both sides write while apart -> split-brain,
# reported on both sides (disk splitbrain, the generations logged) and
# neither image touched; a stale primary's replication writes are
# refused; the admin demotes the side to discard and it is resynced
# from the union of both bitmaps.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version

truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
qemu-io -f raw -c 'write -P 0x11 0 8M' "$TESTDIR/a.img" >/dev/null
start_pair_member a primary
start_pair_member b secondary
poll 30 pair_in_sync a || fail "never in sync"
stop_mirrord a
stop_mirrord b
stale=$(cat "$TESTDIR/a.state/vm1.ha" | sed -n 2p)

# Apart: a writes alone; then b, alone, is promoted and writes.
start_pair_member a primary
qemu-io -f raw -c 'write -P 0xaa 1M 1M' "$(uri a vm1)" >/dev/null
stop_mirrord a
start_pair_member b secondary
ctl b promote vm1 >/dev/null
qemu-io -f raw -c 'write -P 0xbb 5M 1M' "$(uri b vm1)" >/dev/null
sum_a=$(sha256sum < "$TESTDIR/a.img") sum_b=$(sha256sum < "$TESTDIR/b.img")

# Together again: split-brain on both sides, nothing overwritten.
start_pair_member a primary
splitbrain () { [ "$(hfield "$1" 'e["disk"]')" = splitbrain ]; }
poll 20 splitbrain a || fail "a: $(hfield a e)"
poll 20 splitbrain b || fail "b: $(hfield b e)"
grep -q "split-brain.*local cur=.*peer cur=" "$TESTDIR/a.log" || fail "no generations logged"
# A few more heartbeats: still nothing moves.
sleep_polls () { [ "$(grep -c 'split-brain' "$TESTDIR/b.log")" -ge 1 ]; }
poll 5 sleep_polls
[ "$(hfield a 'e["mirror"] and e["mirror"]["state"]')" != syncing ] || fail "a mirrors in split-brain"
stop_mirrord a
[ "$(sha256sum < "$TESTDIR/a.img")" = "$sum_a" ] || fail "a's image changed in split-brain"
[ "$(sha256sum < "$TESTDIR/b.img")" = "$sum_b" ] || fail "b's image changed in split-brain"
expect_status 1 ctl b promote vm1 2>/dev/null   # already primary

# Resolve: a's changes go.  Demote a (it was primary), reconnect.
start_pair_member a primary
poll 20 splitbrain a
ctl a demote vm1 >/dev/null
resolved () { pair_in_sync b; }
poll 30 resolved || fail "not resolved: a $(hfield a e) b $(hfield b e)"
moved=$(hfield b 'e["mirror"]["total_bytes"]')
# The union: a's 1 MiB and b's 1 MiB, not the disk.
[ "$moved" -le $((4 << 20)) ] || fail "resolution copied $moved bytes"
[ "$(hfield a 'e["role"] + "/" + e["disk"]')" = secondary/uptodate ] || fail "a: $(hfield a e)"
stop_mirrord a
stop_mirrord b
cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "images differ after resolving"
[ "$(sha256sum < "$TESTDIR/b.img")" = "$sum_b" ] || fail "b's data was not kept"

# A stale primary's replication is refused: connect to b, a secondary
# again, as if we were a with the generation it had before the split.
start_pair_member b primary
ctl b demote vm1 >/dev/null
claim="vm1@@mirrord-peer,$(echo "$stale" | tr ' ' ',')"
$PY - "$TESTDIR/b.nbd" "$claim" <<'PY' || fail "stale claim accepted"
import nbd, sys
h = nbd.NBD()
h.set_export_name(sys.argv[2])
try:
    h.connect_unix(sys.argv[1])
except nbd.Error as e:
    print("refused:", e)
    sys.exit(0)
sys.exit(1)
PY
grep -q "refusing replication from generation" "$TESTDIR/b.log" || fail "refusal not logged"
stop_mirrord b
exit 0
