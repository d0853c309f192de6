#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A real partition between two hosts: mirrord a and b in two network
# namespaces joined by a veth pair, replicating over TCP with TLS-PSK
# in sync mode (a key that is not theirs is refused).
# nftables drops everything between them while a writer keeps writing
# to a: a stops waiting for b within its peer-timeout (writes go on,
# locally, under a new generation), b sees a go silent.  When the
# partition heals, a resyncs b with only what it wrote meanwhile
# (counted), and the images end identical.  Partitioned again, b sees a
# as down within peer-timeout and can be promoted.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires ip netns list
requires nft --version
requires qemu-io --version

make_netns_pair

truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
qemu-io -f raw -c 'write -P 0x11 0 8M' "$TESTDIR/a.img" >/dev/null
make_psk "$TESTDIR/keys.psk" pair
make_psk "$TESTDIR/other.psk" pair      # the same name, another key
netns_member a primary "$NA" "$IPA" "$IPB" ,mode=sync
netns_member b secondary "$NB" "$IPB" "$IPA" ,mode=sync
poll 30 pair_in_sync a || fail "never in sync: $(hfield a e)"
# A replica with the wrong key cannot even start TLS, let alone write.
ip netns exec "$NA" $PY - "$IPB" "$TESTDIR/other.psk" <<'PY' && fail "wrong key accepted"
import nbd, sys
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE); h.set_tls_psk_file(sys.argv[2]); h.set_tls_username("pair")
h.set_export_name("vm1@@mirrord-peer,role=primary,disk=uptodate,cur=1,bm=0,h0=0,h1=0,discard=0,insync=0")
try:
    h.connect_tcp(sys.argv[1], "10809")
except nbd.Error as e:
    print("wrong key refused:", e)
    sys.exit(1)
sys.exit(0)
PY
# Nor can a local process claim to be the peer over the unix socket.
$PY - "$TESTDIR/b.nbd" <<'PY' && fail "plaintext claim accepted"
import nbd, sys
h = nbd.NBD()
h.set_export_name("vm1@@mirrord-peer,role=primary,disk=uptodate,cur=1,bm=0,h0=0,h1=0,discard=0,insync=0")
try:
    h.connect_unix(sys.argv[1])
except nbd.Error:
    sys.exit(1)
sys.exit(0)
PY
grep -q "replication needs a TLS-PSK authenticated connection" "$TESTDIR/b.log" \
  || fail "plaintext claim not refused for the right reason"

# Partition: b's namespace drops everything from and to a.
b_written=$(hfield b 'e["bytes_written"]')
ip netns exec "$NB" nft -f - <<NFT
table inet part {
  chain in { type filter hook input priority 0; ip saddr $IPA drop; }
  chain out { type filter hook output priority 0; ip daddr $IPA drop; }
}
NFT
$PY "${top_srcdir:-$(dirname "$0")/..}/tests/ha-writer.py" write "$(uri a vm1)" \
  "$TESTDIR/acked" $((2 << 20)) 2>/dev/null &
writer=$!
cleanup_fn "kill $writer 2>/dev/null"
b_lost_a () { [ "$(hfield b 'e["peer"]["connected"]')" = False ]; }
poll 20 b_lost_a || fail "b did not notice the partition"
progress () { [ "$(wc -l < "$TESTDIR/acked")" -ge "$1" ]; }
# Writes go on within the timeout, not after TCP's minutes.
poll 20 progress 200 || fail "writes hang during the partition: $(wc -l < "$TESTDIR/acked") acked"
grep -q "writing without the peer: generation" "$TESTDIR/a.log" \
  || fail "no new generation for the writes b does not see"
kill $writer; wait $writer 2>/dev/null || :

# Heal: a resyncs b from its bitmap (the 2 MiB the writer used).
ip netns exec "$NB" nft delete table inet part
poll 30 pair_in_sync a || fail "not in sync after healing: $(hfield a e)"
# What reached b since the partition began: the writes in flight then
# and the writer's 2 MiB area, whichever mirror carried them.
moved=$(( $(hfield b 'e["bytes_written"]') - b_written ))
[ "$moved" -le $((4 << 20)) ] || fail "healing wrote $moved bytes to b"
echo "healed: $moved bytes written to b"
$PY "${top_srcdir:-$(dirname "$0")/..}/tests/ha-writer.py" verify "$(uri b vm1)" "$TESTDIR/acked" \
  || fail "b lacks writes a acknowledged"

# A dead host (no FIN, no RST: everything dropped) is seen within the
# peer-timeout (1 s), and b can then be promoted: within 1 s more.
ip netns exec "$NB" nft -f - <<NFT
table inet part {
  chain in { type filter hook input priority 0; ip saddr $IPA drop; }
  chain out { type filter hook output priority 0; ip daddr $IPA drop; }
}
NFT
t0=$(date +%s%N)
promote_b () { ctl b promote vm1 >/dev/null 2>&1; }
poll 5 promote_b || fail "b not promotable during the partition: $(ctl b promote vm1 2>&1)"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "partition: b promoted $ms ms after the drop (peer-timeout 1000 ms)"
[ $ms -le 2000 ] || fail "promotion took $ms ms, over peer-timeout + 1 s"
grep -q "silent for 1000 ms: considered down" "$TESTDIR/b.log" \
  || fail "b did not say why a is down"
stop_mirrord a
stop_mirrord b
cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "images differ after healing"
exit 0
