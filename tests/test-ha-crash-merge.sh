#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Before a bitmap resync the new primary merges the old primary's dirty
# regions (what it may have written that never reached us) into its own
# bitmap.  Those marks must be on disk before the resync relies on
# them: killed right after the merge, the new primary must still know,
# after its restart, every region the old one had marked.
#
# a (primary) is killed -9 while a client writes through it, so its
# bitmap holds regions b may lack; b is promoted and written; a returns
# as the target of a bitmap resync, but refuses b's replication (its
# peer-user names someone else), so the resync cannot finish; b merges
# a's bitmap and is killed -9 as soon as it says so.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version
requires $PY -c 'import nbd'

G=65536
make_psk "$TESTDIR/keys.psk" pair
declare -A port=([a]=$(free_port) [b]=$(free_port))
[ "${port[a]}" != "${port[b]}" ] || port[b]=$(free_port)
member () {   # member NAME ROLE [extra export keys]
  local other=a
  [ "$1" = a ] && other=b
  start_mirrord "$1" --tls-psk "$TESTDIR/keys.psk" --nbd-listen "127.0.0.1:${port[$1]}" \
    --export "vm1=$TESTDIR/$1.img,role=$2,peer=nbds://pair@127.0.0.1:${port[$other]}/vm1,peer-timeout=1${3:-}"
}
dirty_granules () {   # dirty_granules NAME OUT
  nbdinfo --map=qemu:dirty-bitmap:vm1 "$(uri "$1" vm1)" | $PY -c "
import sys
G = $G
for line in sys.stdin:
    off, length, flags = line.split()[:3]
    if flags == '1':
        for g in range(int(off) // G, (int(off) + int(length) + G - 1) // G):
            print(g)" > "$2"
}

truncate -s 256M "$TESTDIR/a.img" "$TESTDIR/b.img"
member a primary
member b secondary
poll 30 pair_in_sync a || fail "never in sync: $(hfield a e)"
# The first sync's marks leave a's file, so it holds only what follows.
ondisk_small () { [ "$(hfield a 'e["bitmap_ondisk_bytes"]')" -lt $((16 << 20)) ]; }
poll 30 ondisk_small || fail "a's file still marks $(hfield a 'e["bitmap_ondisk_bytes"]') bytes"

# a dies while a client writes through it.
$PY - "$(uri a vm1)" <<'PY' &
import nbd, random, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
rnd = random.Random(3)
try:
    while True:
        while h.aio_in_flight() < 16:
            # Retired as they complete (the callback returns 1).
            h.aio_pwrite(rnd.randbytes(4096), rnd.randrange(1024) * 65536,
                         completion=lambda *args: 1)
        h.poll(-1)
except nbd.Error:
    pass
PY
writer=$!
cleanup_fn "kill $writer 2>/dev/null"
written () { [ "$(hfield a 'e["bytes_written"]')" -ge $((4 << 20)) ]; }
poll 30 written || fail "the writer did not get going"
kill9_mirrord a
wait "$writer" || :
peer_down () { [ "$(hfield b 'e["peer"]["connected"]')" = False ]; }
poll 10 peer_down || fail "b never saw a go"
ctl b promote vm1 >/dev/null
qemu-io -f raw -c 'write -P 0x33 200M 1M' "$(uri b vm1)" >/dev/null

# a returns, as the resync's target, refusing b's replication.
member a primary ",peer-user=someone-else"
poll 30 grep -q "merged the peer's dirty regions" "$TESTDIR/b.log" \
  || fail "b never merged a's bitmap: $(tail -5 "$TESTDIR/b.log")"
# b's replication reaches a (and is refused) within milliseconds of the
# merge, but not always before a kill right after it: wait for a's
# refusal, then kill b (the merged marks were durable before its resync
# started either way).
poll 30 grep -q "replication refused from TLS-PSK user 'pair'" "$TESTDIR/a.log" \
  || fail "a did not hold the resync off: $(tail -5 "$TESTDIR/a.log")"
kill9_mirrord b
dirty_granules a "$TESTDIR/a.dirty"
stop_mirrord a

# b alone: what it merged survived the crash.
member b primary
dirty_granules b "$TESTDIR/b.dirty"
$PY - "$TESTDIR/a.dirty" "$TESTDIR/b.dirty" <<'PY'
import sys
a = {int(l) for l in open(sys.argv[1])}
b = {int(l) for l in open(sys.argv[2])}
lost = a - b
print("a marked %d granules, b %d after its crash, %d of a's lost" % (len(a), len(b), len(lost)))
assert len(a) > 16, "a marked almost nothing: the case tests nothing"
assert len(b) < 4096, "b marks everything: the case tests nothing"
assert not lost, "the merge did not survive b's crash: %s" % sorted(lost)[:10]
PY
stop_mirrord b
exit 0
