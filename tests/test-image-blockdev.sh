#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A raw image on a block device (a loop device over a file): size from
# the device, O_DIRECT with the device's sector size; reads, unaligned
# writes (pipelined, sharing sectors), write-zeroes and trim are all
# correct, and the backing file holds exactly what was acknowledged
# (qemu-img compare).  Needs root and a working losetup (else skipped).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires test "$(id -u)" -eq 0
requires losetup --version
requires $PY -c 'import nbd'
requires qemu-img --version

$PY -c '
import random, sys
open(sys.argv[1], "wb").write(random.Random(9).randbytes(32 << 20))' "$TESTDIR/backing.img"
dev=$(losetup -f --show "$TESTDIR/backing.img" 2>/dev/null) \
  || { echo "$0: test skipped: losetup cannot attach a loop device"; exit 77; }
cleanup_fn '[ -z "$dev" ] || losetup -d "$dev"'
[ -b "$dev" ] || fail "$dev is not a block device"

start_mirrord b --export "vm=$dev"
ctl b --json status vm | $PY -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["size"] == 32 << 20 and e["direct_io"] is True, e
assert e["format"] == "raw", e'
grep -q "export vm: $dev (raw, 33554432 bytes, O_DIRECT)" "$TESTDIR/b.log" \
  || fail "not logged: $(cat "$TESTDIR/b.log")"

# Random unaligned I/O against a model, then pipelined writes sharing
# sectors; TRIM may zero whole sectors only; a block device is reported
# fully allocated.
$PY -m exerciser "$(uri b vm)" "$TESTDIR/backing.img" --seed 13 --ops 800 \
    --mix wwwwwwwwwzzzttrrrrrr --max-lengths 600,9000,400000 --fua 0.22 \
    --flush-every 100 --trim any --trim-unit 512 \
    --pipeline-bytes $((8 << 20)) --pipeline-max-write 3000 \
    --allocated --model-out "$TESTDIR/model.img" \
  | grep -qx ok || fail "data checks failed"
[ "$(stat -c %s "$TESTDIR/model.img")" = $((32 << 20)) ] || fail "no model"

# The export, the device and its backing file all agree with the model.
qemu-img compare -f raw -F raw "$(uri b vm)" "$TESTDIR/model.img" \
  || fail "export differs from the model"
stop_mirrord b
qemu-img compare -f raw -F raw "$dev" "$TESTDIR/model.img" \
  || fail "device differs from the model"
losetup -d "$dev"
dev=
qemu-img compare -f raw -F raw "$TESTDIR/backing.img" "$TESTDIR/model.img" \
  || fail "backing file differs from the model"
exit 0
