#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC §2.1, §2.3 with a real guest (tests/guest/): a primary (a) and a
# secondary (b) in sync mode; a guest kernel keeps rewriting stamped
# blocks through a, each reported only once fsync returned; a is killed
# with kill -9 and its guest with it; b is promoted and a second guest,
# booted on b, reads every block: each write the first guest
# acknowledged is there (zero lost), nothing torn.  A third guest writes
# on b; a returns, becomes secondary and resyncs only what diverged.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/guest-functions.sh"
guest_requires
SIZE=$((64 << 20)) GRAN=65536
JOB="mirrord.seed=$$ mirrord.count=256"

truncate -s $SIZE "$TESTDIR/a.img" "$TESTDIR/b.img"
start_pair_member a primary ,mode=sync
start_pair_member b secondary ,mode=sync
poll 60 pair_in_sync a || fail "never in sync: $(hfield a e)"

start_guest w1 "$TESTDIR/a.nbd" vm1 "mirrord.mode=writeloop $JOB"
poll 180 _guest_acked_at_least w1 60 || fail "the guest wrote nothing: $(tail -5 "$TESTDIR/w1.console")"
kill9_mirrord a
kill_guest w1                  # a's host is gone, its VM with it
peer_down () { [ "$(hfield b 'e["peer"]["connected"]')" = False ]; }
poll 10 peer_down || fail "b did not notice a died"
ctl b promote vm1 >/dev/null
[ "$(hfield b 'e["role"]')" = primary ] || fail "b not primary after promote"

start_guest v1 "$TESTDIR/b.nbd" vm1 "mirrord.mode=verify $JOB" ,read-only=on
wait_guest v1 180
check_acked w1 v1 || fail "acknowledged writes lost on failover"

# b moves on: the first 32 blocks of the set get generation 1000.
start_guest w2 "$TESTDIR/b.nbd" vm1 "mirrord.mode=write $JOB mirrord.count=32 mirrord.gen=1000"
wait_guest w2 180
[ "$(guest_acks w2)" -eq 32 ] || fail "the guest on b acknowledged $(guest_acks w2) of 32 writes"

start_pair_member a primary ,mode=sync
a_is_target () { [ "$(hfield a 'e["role"] + "/" + e["disk"]')" = secondary/uptodate ]; }
poll 60 a_is_target || fail "a did not resync as secondary: $(hfield a e)"
moved=$(hfield b 'e["mirror"]["total_bytes"]')
# What diverged: the granules w1 wrote (its acknowledged blocks, and at
# most one write in flight) and the 32 w2 wrote; each block of the set
# lies in its own 64 KiB granule (stride 61 blocks).
w1_blocks=$(guest_lines w1 ACK | awk '{ print $3 }' | sort -u | wc -l)
bound=$(( (w1_blocks + 1 + 32) * GRAN ))
echo "failback resync: $moved bytes (bound $bound, disk $SIZE)"
[ "$moved" -le "$bound" ] || fail "resync moved $moved bytes, more than what diverged ($bound)"
stop_mirrord a
stop_mirrord b
cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "images differ after the resync"
exit 0
