#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC §2.1, §2.3 and guarantees 1, 5: a primary (a) and a secondary (b)
# in sync mode; a writer makes FUA writes through a; a is killed with
# kill -9 mid-write; b is promoted and every write a acknowledged is on
# b (counted: zero lost); b takes new writes; a comes back, sees the
# newer generation, becomes secondary and resyncs only what diverged;
# then the roles switch back without a full copy.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version
WRITER="${top_srcdir:-$(dirname "$0")/..}/tests/ha-writer.py"
SIZE=$((64 << 20))

truncate -s $SIZE "$TESTDIR/a.img" "$TESTDIR/b.img"
qemu-io -f raw -c 'write -P 0x11 0 16M' "$TESTDIR/a.img" >/dev/null
start_pair_member a primary
start_pair_member b secondary
poll 30 pair_in_sync a || fail "never in sync: $(hfield a e)"
cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "initial full sync differs"
[ "$(hfield b 'e["writable"]')" = False ] || fail "a secondary is writable"
expect_status 1 qemu-io -f raw -c 'write 0 4k' "$(uri b vm1)" 2>/dev/null
# The initial sync's bits are cleared on disk lazily (bitmap/README); a
# clean restart stores the exact bitmap, so what follows measures only
# the failover's own regions.
stop_mirrord a
start_pair_member a primary
poll 30 pair_in_sync a || fail "not in sync after a restart"

# Writes acknowledged by a, then a dies mid-write.
$PY "$WRITER" write "$(uri a vm1)" "$TESTDIR/acked" $((4 << 20)) 2>/dev/null &
writer=$!
cleanup_fn "kill $writer 2>/dev/null"
acked () { [ "$(wc -l < "$TESTDIR/acked")" -ge "$1" ]; }
poll 30 acked 300 || fail "the writer made no progress"
kill9_mirrord a
wait $writer 2>/dev/null || :
peer_down () { [ "$(hfield b 'e["peer"]["connected"]')" = False ]; }
poll 10 peer_down || fail "b did not notice a died"
ctl b promote vm1 >/dev/null
[ "$(hfield b 'e["role"]')" = primary ] || fail "b not primary after promote"
out=$($PY "$WRITER" verify "$(uri b vm1)" "$TESTDIR/acked") \
  || fail "acknowledged writes lost on failover: $out"
echo "failover: $out"

# b moves on; a returns, finds b newer and resyncs from it.
qemu-io -f raw -c 'write -P 0x22 40M 3M' "$(uri b vm1)" >/dev/null
start_pair_member a primary
a_is_target () { [ "$(hfield a 'e["role"] + "/" + e["disk"]')" = secondary/uptodate ]; }
poll 30 a_is_target || fail "a did not resync as secondary: $(hfield a e)"
grep -q "newer generation: becoming secondary" "$TESTDIR/a.log" \
  || fail "a did not say why it became secondary"
moved=$(hfield b 'e["mirror"]["total_bytes"]')   # dirty when it began
# The union: b's 3 MiB and the regions a's bitmap holds (the 4 MiB its
# writer used): far from the whole 64 MiB disk.
[ "$moved" -le $((8 << 20)) ] || fail "resync moved $moved bytes (whole disk?)"
echo "failback resync: $moved bytes"
stop_mirrord a
cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "images differ after the resync"

# Switch back: demote b, promote a; nothing to copy but new writes.
start_pair_member a secondary
poll 30 pair_in_sync b || fail "not in sync again"
ctl b demote vm1 >/dev/null
a_sees_b_secondary () { [ "$(hfield a 'e["peer"]["role"]')" = secondary ]; }
poll 10 a_sees_b_secondary
ctl a promote vm1 >/dev/null
qemu-io -f raw -c 'write -P 0x33 50M 1M' "$(uri a vm1)" >/dev/null
poll 30 pair_in_sync a || fail "switch back did not converge: $(hfield a e)"
moved=$(hfield a 'e["mirror"]["total_bytes"]')
[ "$moved" -lt $((4 << 20)) ] || fail "switch back moved $moved bytes"
stop_mirrord a
stop_mirrord b
cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "images differ after switching back"
exit 0
