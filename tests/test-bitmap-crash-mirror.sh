#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Write intent under kill -9, with a mirror running: whoever sets a
# dirty bit — a guest write, a sync-mode forward that reached the
# target, an async forward still on its way, a copy the target failed
# — the bit is on disk before anything relies on it.  mirrord is killed
# while a client writes; the target (nbdkit on a file, slowed or
# failing) is stopped at the same moment, so its file holds exactly
# what it was sent.  After the restart every granule where the source
# and the target differ must be dirty: otherwise a resync would leave
# the target wrong without anyone knowing.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdkit --version
requires nbdkit --filter=delay --filter=error null --dump-plugin
requires $PY -c 'import nbd'

G=65536
SIZE=$((256 << 20))
ondisk () {
  ctl "$1" --json status vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["bitmap_ondisk_bytes"])'
}
ondisk_below () { [ "$(ondisk "$1")" -lt "$2" ]; }

# run_case NAME MODE FILTER FILTER-PARAMS...: one kill -9 cycle.
run_case () {
  local name=$1 mode=$2 filter=$3; shift 3
  local src="$TESTDIR/$name-src.img" tgt="$TESTDIR/$name-tgt.img"
  truncate -s $SIZE "$src" "$tgt"
  # Some data to copy besides what the client writes.
  $PY -c "
import os
with open('$src', 'r+b') as f:
    for i in range(0, 64):
        f.seek(i * 4 << 20); f.write(os.urandom(65536))"
  nbdkit -f -U "$TESTDIR/$name.sock" -P "$TESTDIR/$name.pid" --filter="$filter" file "$tgt" "$@" \
    2>"$TESTDIR/$name-nbdkit.log" &
  local nbdkit_pid=$!
  cleanup_fn "kill $nbdkit_pid 2>/dev/null"
  poll 10 test -S "$TESTDIR/$name.sock"
  start_mirrord "$name" --export "vm1=$src"
  ctl "$name" mirror start vm1 "nbd+unix:///?socket=$TESTDIR/$name.sock" --mode "$mode" >/dev/null
  # Past the full sync, its bits gone from the file too, so the bitmap
  # holds only what follows.
  ctl "$name" mirror wait vm1 --until ready --timeout 60 >/dev/null
  poll 30 ondisk_below "$name" $((16 << 20)) \
    || fail "$name: the file still marks $(ondisk "$name") bytes"
  rm -f "$TESTDIR/acked"
  $PY - "$(uri "$name" vm1)" "$TESTDIR/acked" <<'PY' &
import nbd, random, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
acked = open(sys.argv[2], "a")
rnd = random.Random(7)
pending = {}
try:
    while True:
        while h.aio_in_flight() < 16:
            # The first 64 MiB: the rest must stay clean.
            off = rnd.randrange(1024) * 65536 + rnd.randrange(0, 61440, 4096)
            pending[h.aio_pwrite(rnd.randbytes(4096), off)] = off
        h.poll(-1)
        for c in list(pending):
            if h.aio_command_completed(c):
                acked.write("%d\n" % pending.pop(c)); acked.flush()
except nbd.Error:
    pass
PY
  local writer=$!
  cleanup_fn "kill $writer 2>/dev/null"
  poll 60 bash -c "[ \$(wc -l < '$TESTDIR/acked' 2>/dev/null || echo 0) -ge 400 ]" \
    || fail "$name: the writer did not get going"
  # Both at once: the target keeps what it had when mirrord died.
  kill -STOP $nbdkit_pid
  kill9_mirrord "$name"
  kill -9 $nbdkit_pid
  wait $nbdkit_pid 2>/dev/null || :
  wait "$writer" || :
  # Restarted with the target gone: the job resumes, disconnected.
  start_mirrord "$name" --export "vm1=$src"
  nbdinfo --map=qemu:dirty-bitmap:vm1 "$(uri "$name" vm1)" > "$TESTDIR/map"
  stop_mirrord "$name"
  $PY - "$src" "$tgt" "$TESTDIR/map" $G "$name" <<'PY'
import sys
src, tgt, mapfile, G, name = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
dirty = set()
for line in open(mapfile):
    off, length, flags = line.split()[:3]
    if flags == "1":
        dirty.update(range(int(off) // G, (int(off) + int(length) + G - 1) // G))
differ = set()
with open(src, "rb") as a, open(tgt, "rb") as b:
    g = 0
    while True:
        x, y = a.read(G), b.read(G)
        if not x:
            break
        if x != y:
            differ.add(g)
        g += 1
lost = differ - dirty
print("%s: %d granules differ, %d dirty, %d differ but clean"
      % (name, len(differ), len(dirty), len(lost)))
assert differ, "%s: nothing differs: the case did not test anything" % name
assert len(dirty) < 2048, "%s: %d granules dirty: the check would be empty" % (name, len(dirty))
assert not lost, "%s: differs but clean: %s" % (name, sorted(lost)[:10])
PY
}

# Sync mode, the target slowed so forwards are in flight at the kill.
run_case sync sync delay delay-write=5ms
# Async mode: forwards queue behind the guest's acknowledgments.
run_case async async delay delay-write=5ms
# Copies and forwards that the target fails: they are marked again.
run_case failing sync error error=EIO error-pwrite-rate=30%
exit 0
