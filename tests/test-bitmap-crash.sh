#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Write intent under kill -9: a client writes to random granules while
# mirrord is killed.  After the restart every granule whose write was
# acknowledged is marked, and nothing outside the granules the client
# sent writes to (with bitmap-extent=0 random writes mark exactly; the
# resync would copy only those, never the disk).  Then the same with the
# default 64 MiB extents: nothing outside the extents the client sent
# writes to.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

G=65536
truncate -s 1G "$TESTDIR/disk.img"
EXT=1                                       # granules per extent

for cycle in 1 2 3 4 5; do
  if [ $cycle -le 3 ]; then
    EXPORT="vm1=$TESTDIR/disk.img,bitmap-extent=0"
  elif [ $cycle = 4 ]; then
    EXPORT="vm1=$TESTDIR/disk.img"             # the default: 64 MiB extents
    EXT=1024
    rm -rf "$TESTDIR/a.state" "$TESTDIR/sent" "$TESTDIR/acked"
  fi
  start_mirrord a --export "$EXPORT"
  $PY - "$(uri a vm1)" "$TESTDIR" $cycle <<'PY' &
import nbd, random, sys
uri, d, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
# Appended across cycles: the bitmap remembers every cycle's writes.
sent, acked = open(d + "/sent", "a"), open(d + "/acked", "a")
pending = {}
try:
    while True:
        while h.aio_in_flight() < 16:
            g = rnd.randrange(16384)               # 1 GiB / 64 KiB
            off = g * 65536 + rnd.randrange(0, 65536 - 4096, 512)
            sent.write("%d\n" % g); sent.flush()  # before it can reach mirrord
            c = h.aio_pwrite(bytes([g & 0xff]) * 4096, off)
            pending[c] = g
        h.poll(-1)
        for c in list(pending):
            if h.aio_command_completed(c):
                acked.write("%d\n" % pending.pop(c)); acked.flush()
except nbd.Error:
    pass
PY
  writer=$!
  cleanup_fn "kill $writer 2>/dev/null"
  # Kill once a few hundred writes were acknowledged.
  poll 30 bash -c "[ \$(wc -l < '$TESTDIR/acked' 2>/dev/null || echo 0) -ge $((200 * cycle)) ]"
  kill9_mirrord a
  wait "$writer" || :

  start_mirrord a --export "$EXPORT"
  nbdinfo --map=qemu:dirty-bitmap:vm1 "$(uri a vm1)" > "$TESTDIR/map"
  $PY - "$TESTDIR" $G $EXT <<'PY'
import sys
d, G, EXT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
acked = {int(l) for l in open(d + "/acked")}
sent = {int(l) for l in open(d + "/sent")}
dirty = set()
for line in open(d + "/map"):
    off, length, flags = line.split()[:3]
    if flags == "1":
        dirty.update(range(int(off) // G, (int(off) + int(length)) // G))
lost = acked - dirty
sent_ext = {g // EXT for g in sent}
extra = {g for g in dirty if g // EXT not in sent_ext}
print("acked %d, sent %d, dirty %d, acked-but-clean %d, dirty-never-written %d"
      % (len(acked), len(sent), len(dirty), len(lost), len(extra)))
assert not lost, "acknowledged writes not marked: %s" % sorted(lost)[:10]
assert not extra, "granules marked outside the extents written: %s" % sorted(extra)[:10]
PY
  grep -q 'not closed cleanly' "$TESTDIR/a.log" || fail "crash not noticed"
  stop_mirrord a
done
exit 0
