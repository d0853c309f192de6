#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A damaged bitmap file never reads clean: writes go through the export
# (qemu-io), mirrord is killed (-9) or stopped, the file is damaged —
# truncated to 8 KiB, truncated inside a data block, one data block
# zeroed, one checksum broken — and after the restart every recorded
# write is still dirty in qemu:dirty-bitmap:vm1 (nbdinfo --map) and in
# `mirrorctl --json status` dirty_bytes; each damaged block's whole range
# is dirty and the intact blocks are exact.  The file is repaired (a
# strict start accepts it afterwards), and with bitmap-strict=true the
# damaged file is refused with a message saying what is wrong.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires nbdinfo --version

# 4 KiB granules: one data block (32704 granules) covers 127.75 MiB, so
# this 512 MiB disk has 5 blocks, the last one partial.
G=4096
PER_BLOCK=$((32704 * G))
SIZE=$((512 << 20))
truncate -s $SIZE "$TESTDIR/disk.img"
EXPORT="vm1=$TESTDIR/disk.img,granularity=4K,bitmap-extent=0"   # exact marks
BITMAP=$TESTDIR/a.state/vm1.bitmap

# Writes into every block, one across the boundary of blocks 0 and 1.
WRITES="0 4096
$((100 << 20)) 8192
$((PER_BLOCK - 2048)) 4096
$((200 << 20)) 65536
$((300 << 20)) 4096
$((420 << 20)) 12288
$((SIZE - (512 << 10))) 4096"

write_all () {
  local args=() off len
  while read -r off len; do
    args+=(-c "write -P 0x5a $off $len")
  done <<<"$WRITES"
  qemu-io -f raw "${args[@]}" "$(uri a vm1)" >/dev/null
}

dirty_bytes () {
  ctl a --json status vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["dirty_bytes"])'
}

# check_dirty BLOCKS...: the dirty map is exactly the written granules
# plus the whole range of each damaged data block named.
check_dirty () {
  nbdinfo --map=qemu:dirty-bitmap:vm1 "$(uri a vm1)" > "$TESTDIR/map"
  $PY - "$TESTDIR/map" "$G" "$PER_BLOCK" "$SIZE" "$(dirty_bytes)" "$@" <<PY
import sys
path, G, per_block, size, dirty_bytes = sys.argv[1], *map(int, sys.argv[2:6])
bad = [int(b) for b in sys.argv[6:]]
written = set()
for line in """$WRITES""".splitlines():
    off, length = map(int, line.split())
    written.update(range(off // G, (off + length - 1) // G + 1))
damaged = set()
for b in bad:
    first = b * per_block // G
    damaged.update(range(first, min(first + per_block // G, size // G)))
dirty = set()
for line in open(path):
    off, length, flags = line.split()[:3]
    if int(flags) & 1:
        dirty.update(range(int(off) // G, (int(off) + int(length)) // G))
lost = written - dirty
assert not lost, "recorded writes read clean: granules %s" % sorted(lost)[:10]
assert damaged <= dirty, "%d granules of a damaged block read clean" % len(damaged - dirty)
extra = dirty - written - damaged
assert not extra, "granules dirty that no write or damage explains: %s" % sorted(extra)[:10]
assert dirty_bytes == len(dirty) * G, "dirty_bytes %d, map %d" % (dirty_bytes, len(dirty) * G)
print("ok: %d written granules, %d in damaged blocks, %d dirty" % (len(written), len(damaged), len(dirty)))
PY
}

# strict_refuses WHAT: a bitmap-strict start on the damaged file fails,
# and its message names the file, strict mode and WHAT.
strict_refuses () {
  local out status=0
  out=$(timeout 30 "$MIRRORD" -f --export "$EXPORT,bitmap-strict=true" \
        --nbd-socket "$TESTDIR/s.nbd" --control "$TESTDIR/s.ctl" \
        --state-dir "$TESTDIR/a.state" 2>&1) || status=$?
  [ $status -ne 124 ] || fail "strict mode accepted a damaged file ($1)"
  [ $status -ne 0 ] || fail "strict mode exited 0 on a damaged file ($1)"
  [[ $out == *vm1.bitmap*"$1"*strict* ]] || fail "strict message: $out"
}

# damage_case NAME STOP DAMAGE LOGGED BLOCKS...: writes, then STOP
# (kill9_mirrord or stop_mirrord), then DAMAGE (a command on $BITMAP);
# the restart must log LOGGED and show BLOCKS' ranges dirty.
damage_case () {
  local name=$1 stop=$2 damage=$3 logged=$4; shift 4
  echo "== $name"
  rm -rf "$TESTDIR/a.state"
  start_mirrord a --export "$EXPORT"
  write_all
  $stop a
  eval "$damage"
  cp "$BITMAP" "$TESTDIR/damaged.bitmap"

  start_mirrord a --export "$EXPORT"
  check_dirty "$@"
  grep -q "vm1.bitmap: .*$logged" "$TESTDIR/a.log" || fail "$name: not logged: $logged"
  # Repaired: a clean restart, strict, keeps the same bits.
  stop_mirrord a
  start_mirrord a --export "$EXPORT,bitmap-strict=true"
  check_dirty "$@"
  stop_mirrord a

  cp "$TESTDIR/damaged.bitmap" "$BITMAP"
  strict_refuses "$logged"
}

block_at () { echo $((8192 + 4096 * $1)); }

damage_case "truncated to 8 KiB after kill -9" kill9_mirrord \
  'truncate -s 8K "$BITMAP"' "past the end of the file" 0 1 2 3 4
damage_case "truncated inside block 3 after a clean stop" stop_mirrord \
  'truncate -s $(( $(block_at 3) + 1000 )) "$BITMAP"' "past the end of the file" 3 4
damage_case "block 1 zeroed after a clean stop" stop_mirrord \
  'dd if=/dev/zero of="$BITMAP" bs=4096 seek=3 count=1 conv=notrunc status=none' \
  "all zeroes" 1
damage_case "block 3's checksum broken after kill -9" kill9_mirrord \
  'printf "\\377" | dd of="$BITMAP" bs=1 seek=$(( $(block_at 3) + 4095 )) conv=notrunc status=none' \
  "bad checksum" 3
exit 0
