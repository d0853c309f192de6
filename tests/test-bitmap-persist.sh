#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The persistent dirty bitmap: writes mark exactly their granules,
# status and qemu:dirty-bitmap:EXPORT (nbdinfo --map, libnbd) report
# them, a clean restart keeps the exact bitmap, `bitmap clear` forgets,
# writes into marked regions cost no metadata flush, and a corrupt or
# mismatched file never yields a clean bitmap.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires nbdinfo --version

G=65536
truncate -s 256M "$TESTDIR/disk.img"
EXPORT="vm1=$TESTDIR/disk.img"

dirty_bytes () {
  ctl "$1" --json status vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["dirty_bytes"])'
}
flushes () {
  ctl "$1" --json status vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["bitmap_flushes"])'
}
# The dirty extents as "offset length" lines, from nbdinfo --map.
dirty_map () {
  nbdinfo --map=qemu:dirty-bitmap:vm1 "$(uri "$1" vm1)" | awk '$3 == 1 {print $1, $2}'
}

start_mirrord a --export "$EXPORT"
[ "$(dirty_bytes a)" -eq 0 ] || fail "a new export is dirty"
# The context is listed and selectable.
nbdinfo --list "$(uri a vm1)" | grep -q 'qemu:dirty-bitmap:vm1' || fail "context not listed"

# 4 KiB at 0, 1000 bytes straddling 1 MiB + 65000 (two granules), 64 KiB
# at 100 MiB, and zeroes/trim at 200 MiB: five granules.
qemu-io -f raw -c 'write -P 1 0 4k' -c "write -P 2 $((1048576 + 65000)) 1000" \
  -c 'write -P 3 100M 64k' -c 'write -z 200M 4k' -c 'discard 201M 64k' \
  "$(uri a vm1)" >/dev/null
want="0 65536
1048576 131072
104857600 65536
209715200 65536
210763776 65536"
[ "$(dirty_map a)" = "$want" ] || fail "dirty map: $(dirty_map a)"
[ "$(dirty_bytes a)" -eq $((6 * G)) ] || fail "dirty_bytes $(dirty_bytes a)"

# BLOCK_STATUS with both contexts, through libnbd, REQ_ONE included.
$PY - "$(uri a vm1)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.add_meta_context("qemu:dirty-bitmap:vm1")
h.connect_uri(sys.argv[1])
seen = {}
def cb(ctx, off, entries, err):
    seen[ctx] = entries
h.block_status(4 << 20, 0, cb)
d = seen["qemu:dirty-bitmap:vm1"]
assert d[:6] == [65536, 1, 983040, 0, 131072, 1], d
assert "base:allocation" in seen
seen.clear()
h.block_status(4 << 20, 65536, cb, nbd.CMD_FLAG_REQ_ONE)
assert seen["qemu:dirty-bitmap:vm1"] == [983040, 0], seen
PY

# Rewriting marked granules costs no metadata flush.
before=$(flushes a)
qemu-io -f raw -c 'write -P 4 0 64k' -c 'write -P 5 100M 4k' "$(uri a vm1)" >/dev/null
[ "$(flushes a)" -eq "$before" ] || fail "marked regions cost a flush ($before -> $(flushes a))"
# A new region costs one (several writes in one burst share it).
qemu-io -f raw -c 'aio_write -P 6 150M 4k' -c 'aio_write -P 6 151M 4k' \
  -c 'aio_write -P 6 152M 4k' -c aio_flush "$(uri a vm1)" >/dev/null
after=$(flushes a)
[ "$after" -gt "$before" ] && [ "$after" -le $((before + 3)) ] \
  || fail "flushes $before -> $after for one burst"
[ "$(dirty_bytes a)" -eq $((9 * G)) ] || fail "dirty_bytes $(dirty_bytes a)"

# A clean restart keeps the exact bitmap.
map_before=$(dirty_map a)
stop_mirrord a
start_mirrord a --export "$EXPORT"
[ "$(dirty_map a)" = "$map_before" ] || fail "bitmap changed across a clean restart"
grep -q 'not closed cleanly' "$TESTDIR/a.log" && fail "clean shutdown seen as a crash"

# bitmap clear: a range, then everything; persisted.
ctl a bitmap clear vm1 --offset 100M --length 64K >/dev/null
[ "$(dirty_bytes a)" -eq $((8 * G)) ] || fail "range clear: $(dirty_bytes a)"
ctl a bitmap clear vm1 >/dev/null
[ "$(dirty_bytes a)" -eq 0 ] || fail "clear: $(dirty_bytes a)"
expect_status 1 ctl a bitmap clear nosuch 2>/dev/null
stop_mirrord a
start_mirrord a --export "$EXPORT"
[ "$(dirty_bytes a)" -eq 0 ] || fail "cleared bitmap came back: $(dirty_bytes a)"
# A new 64 MiB extent (the default bitmap-extent) costs one flush for
# all of its granules: 32 writes, one request at a time, to 32 granules
# of the first extent, backwards (not a stream), cost 1 flush, not 32.
before=$(flushes a)
cmds=()
for i in $(seq 31 -1 0); do cmds+=(-c "write -P 7 $((i * 2 * G)) 4k"); done
qemu-io -f raw "${cmds[@]}" "$(uri a vm1)" >/dev/null
after=$(flushes a)
[ "$after" -eq $((before + 1)) ] || fail "32 granules in one extent: flushes $before -> $after"
[ "$(dirty_bytes a)" -eq $((32 * G)) ] || fail "live bitmap not exact: $(dirty_bytes a)"
qemu-io -f raw -c 'write -P 7 64M 4k' "$(uri a vm1)" >/dev/null
stop_mirrord a

# A corrupt header: the whole disk is dirty, never clean.
cp "$TESTDIR/a.state/vm1.bitmap" "$TESTDIR/good.bitmap"
printf 'garbage!' | dd of="$TESTDIR/a.state/vm1.bitmap" bs=1 seek=0 conv=notrunc status=none
printf 'garbage!' | dd of="$TESTDIR/a.state/vm1.bitmap" bs=1 seek=4096 conv=notrunc status=none
start_mirrord a --export "$EXPORT"
[ "$(dirty_bytes a)" -eq $((256 << 20)) ] || fail "corrupt header: $(dirty_bytes a)"
grep -q 'no valid header' "$TESTDIR/a.log" || fail "corruption not logged"
stop_mirrord a

# Strict mode refuses it instead (exit 1, message names the file).
cp "$TESTDIR/good.bitmap" "$TESTDIR/a.state/vm1.bitmap"
printf 'garbage!' | dd of="$TESTDIR/a.state/vm1.bitmap" bs=1 seek=0 conv=notrunc status=none
printf 'garbage!' | dd of="$TESTDIR/a.state/vm1.bitmap" bs=1 seek=4096 conv=notrunc status=none
out=$("$MIRRORD" -f --export "$EXPORT,bitmap-strict=true" --nbd-socket "$TESTDIR/x.nbd" \
  --control "$TESTDIR/x.ctl" --state-dir "$TESTDIR/a.state" 2>&1) && fail "strict accepted"
[[ $out == *vm1.bitmap*strict* ]] || fail "strict message: $out"

# A corrupt data block: only its range is dirty (the rest kept).
cp "$TESTDIR/good.bitmap" "$TESTDIR/a.state/vm1.bitmap"
printf 'x' | dd of="$TESTDIR/a.state/vm1.bitmap" bs=1 seek=$((8192 + 100)) conv=notrunc status=none
start_mirrord a --export "$EXPORT"
# One data block covers 32704 granules = all 4096 of this 256 MiB disk.
[ "$(dirty_bytes a)" -eq $((256 << 20)) ] || fail "corrupt block: $(dirty_bytes a)"
grep -q 'corrupt block' "$TESTDIR/a.log" || fail "block corruption not logged"
stop_mirrord a

# Another granularity: the old file cannot be trusted.
cp "$TESTDIR/good.bitmap" "$TESTDIR/a.state/vm1.bitmap"
start_mirrord a --export "$EXPORT,granularity=128K"
[ "$(dirty_bytes a)" -eq $((256 << 20)) ] || fail "mismatch: $(dirty_bytes a)"
grep -q 'made for' "$TESTDIR/a.log" || fail "mismatch not logged"
stop_mirrord a
exit 0
