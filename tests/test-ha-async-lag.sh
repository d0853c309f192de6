#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SPEC guarantee 3 over a real, slow link: an async pair in two network
# namespaces, the link limited with tc tbf to about 4 MB/s, max-lag 4M.
# A guest writes several times faster than the link: the lag stays
# near its bound because writes are slowed, here by the forward queue
# being full (congestion: each write waits for room, none is left to the
# bitmap), and once the writer stops the secondary catches up and the
# images are identical.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires ip netns list
requires tc -V

make_netns_pair
truncate -s 64M "$TESTDIR/a.img" "$TESTDIR/b.img"
make_psk "$TESTDIR/keys.psk" pair
netns_member a primary "$NA" "$IPA" "$IPB" ,mode=async,max-lag=4M,peer-timeout=5
netns_member b secondary "$NB" "$IPB" "$IPA" ,mode=async,peer-timeout=5
poll 30 pair_in_sync a || fail "never in sync: $(hfield a e)"
# 32 Mbit/s each way.  A peer-timeout of 5 s (the default): TCP over a
# shaped link can stall for over a second on a drop.
for ns in "$NA:$VA" "$NB:$VB"; do
  ip netns exec "${ns%%:*}" tc qdisc add dev "${ns##*:}" root tbf rate 32mbit \
    burst 64kb latency 400ms
done

# 24 MiB of distinct granules, as fast as the guest can.
$PY - "$(uri a vm1)" <<'PY' &
import nbd, os, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
for i in range(384):
    h.pwrite(os.urandom(65536), i * 2 * 65536)
h.flush()
PY
writer=$!
cleanup_fn "kill $writer 2>/dev/null"
max=0 maxdirty=0
while kill -0 $writer 2>/dev/null; do
  read -r lag dirty < <(hfield a '(e["mirror"]["lag_bytes"], e["dirty_bytes"]) if e["mirror"] else (0, 0)' | tr -d '(),')
  [ "$lag" -gt "$max" ] && max=$lag
  [ "$dirty" -gt "$maxdirty" ] && maxdirty=$dirty
  sleep 0.05      # sampling the lag, not waiting for readiness
done
wait $writer || fail "the writer failed"
waits=$(hfield a 'e["mirror"]["congestion_waits"]')
echo "max lag $max bytes (bound 4 MiB), max dirty $maxdirty, writes that waited for the queue: $waits"
[ "$waits" -gt 0 ] || fail "the writer never had to wait for the link"
# Writes wait for the queue rather than fall back to the bitmap.
[ "$maxdirty" -le $((1 << 20)) ] || fail "$maxdirty dirty bytes: writes went to the bitmap"
# The bound, plus the writes in flight when it was reached.
[ "$max" -le $((8 << 20)) ] || fail "lag $max went far past max-lag"
poll 60 pair_in_sync a || fail "never caught up: $(hfield a e)"
stop_mirrord a
stop_mirrord b
cmp "$TESTDIR/a.img" "$TESTDIR/b.img" || fail "images differ"
exit 0
