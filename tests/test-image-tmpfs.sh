#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Raw images on memory file systems: on tmpfs (which newer kernels let
# use O_DIRECT) and on ramfs (which refuses O_DIRECT, so mirrord logs
# that it falls back to buffered I/O).  Either way every read, write,
# zero and trim is correct, checked against a model of the disk and
# against the file itself.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'
requires test "$(stat -f -c %T /dev/shm)" = tmpfs

run () {
  local name=$1 file=$2 direct=$3 trim=$4
  truncate -s 24M "$file"
  start_mirrord "$name" --export "vm1=$file"
  [ "$(ctl "$name" --json status vm1 | $PY -c '
import json, sys; print(json.load(sys.stdin)["exports"][0]["direct_io"])')" = "$direct" ] \
    || fail "$name: direct_io is not $direct"
  # Random unaligned I/O, pipelined, checked against a model and the
  # file.  TRIM "zero": trimmed bytes read as zero (a hole was punched);
  # "any": each reads as zero or as before (TRIM is advisory).
  $PY -m exerciser "$(uri "$name" vm1)" "$file" --seed "$RANDOM" --trim "$trim" \
      --verify-image \
    | grep -qx ok || fail "$name: data checks failed"
  stop_mirrord "$name"
  rm -f "$file"
}

# tmpfs: O_DIRECT used if the kernel allows it, buffered with a log
# line if not.
shm=$(mktemp -d /dev/shm/mirrord-test.XXXXXX)
cleanup_fn "rm -rf '$shm'"
touch "$shm/probe"
if $PY -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT))' \
    "$shm/probe" 2>/dev/null; then
  tmpfs_direct=True
else
  tmpfs_direct=False
fi
run shm "$shm/disk.img" "$tmpfs_direct" zero
if [ $tmpfs_direct = False ]; then
  grep -q "O_DIRECT refused by the file system.*using buffered I/O" "$TESTDIR/shm.log" \
    || fail "no log line about buffered I/O"
fi

# ramfs refuses O_DIRECT outright (needs root to mount).
mkdir "$TESTDIR/ramfs"
if mount -t ramfs ramfs "$TESTDIR/ramfs" 2>/dev/null; then
  cleanup_fn "umount '$TESTDIR/ramfs'"
  run ram "$TESTDIR/ramfs/disk.img" False any
  grep -q "ramfs/disk.img: O_DIRECT refused by the file system.*using buffered I/O" \
    "$TESTDIR/ram.log" || fail "no log line about buffered I/O: $(cat "$TESTDIR/ram.log")"
  grep -q "export vm1: .*buffered" "$TESTDIR/ram.log" || fail "export not logged as buffered"
else
  echo "$0: cannot mount ramfs; the O_DIRECT refusal part is skipped"
fi
exit 0
