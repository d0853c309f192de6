#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# kill -9 during an fio random-write run.  After the restart, counting
# granules: every granule whose content changed is marked, and nothing
# outside the area fio wrote is (the resync would copy only that).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires fio --version
fio --enghelp 2>&1 | grep -qw nbd || { echo "fio lacks the nbd engine"; exit 77; }

G=65536
truncate -s 512M "$TESTDIR/disk.img"              # all zeroes
start_mirrord a --export "vm1=$TESTDIR/disk.img"

written () {
  ctl a --json status vm1 2>/dev/null \
    | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["bytes_written"])'
}

# Random 4 KiB writes of random data into [128 MiB, 384 MiB).
fio --name=crash --ioengine=nbd --uri="$(uri a vm1)" --rw=randwrite --bs=4k \
  --iodepth=32 --offset=128M --size=256M --time_based --runtime=60 \
  --randrepeat=0 > "$TESTDIR/fio.out" 2>&1 &
fio_pid=$!
cleanup_fn "kill $fio_pid 2>/dev/null"
enough_written () { [ "$(written)" -ge $((48 << 20)) ]; }
poll 30 enough_written || { cat "$TESTDIR/fio.out"; fail "fio did not write"; }
kill9_mirrord a
wait "$fio_pid" || :

start_mirrord a --export "vm1=$TESTDIR/disk.img"
nbdinfo --map=qemu:dirty-bitmap:vm1 "$(uri a vm1)" > "$TESTDIR/map"
$PY - "$TESTDIR" $G <<'PY'
import sys
d, G = sys.argv[1], int(sys.argv[2])
dirty = set()
for line in open(d + "/map"):
    off, length, flags = line.split()[:3]
    if flags == "1":
        dirty.update(range(int(off) // G, (int(off) + int(length)) // G))
changed = set()
zero = bytes(G)
with open(d + "/disk.img", "rb") as f:
    g = 0
    while True:
        b = f.read(G)
        if not b:
            break
        if b != zero[:len(b)]:
            changed.add(g)
        g += 1
lo, hi = (128 << 20) // G, (384 << 20) // G
print("changed %d granules, marked %d (%.2fx), area %d"
      % (len(changed), len(dirty), len(dirty) / max(1, len(changed)), hi - lo))
missing = changed - dirty
assert not missing, "changed but not marked: %s" % sorted(missing)[:10]
outside = [g for g in dirty if not lo <= g < hi]
assert not outside, "marked outside the written area: %s" % outside[:10]
assert changed, "nothing was written"
PY
stop_mirrord a
exit 0
