#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# When the bitmap cannot be recorded (EIO injected into its fdatasync
# with strace), the client's write fails instead of being acknowledged
# without its bit; reads and writes into recorded regions go on; once
# the fault is gone, writes succeed again and the daemon exits cleanly.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires strace -V
requires qemu-io --version

# 4 GiB: 65536 granules in 3 bitmap blocks.  Granule 0 (block 0) is
# recorded first; the fresh write goes to 3 GiB (block 1).
truncate -s 4G "$TESTDIR/disk.img"
start_mirrord a --export "vm1=$TESTDIR/disk.img"
pid=$(mirrord_pid a)
qemu-io -f raw -c 'write -P 1 0 64k' "$(uri a vm1)" >/dev/null     # granule 0 recorded

# Image flushes go through io_submit, so only the bitmap's own
# fdatasync calls fail.
strace_attach "$pid" "$TESTDIR/strace.out" -e trace=fdatasync \
  -e inject=fdatasync:error=EIO

$PY - "$(uri a vm1)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"\x55" * 4096, 3 << 30)       # a granule not yet recorded
    sys.exit("write acknowledged although its bit could not be recorded")
except nbd.Error as e:
    assert e.errno == "EIO", e
# The daemon still serves: reads, and writes into recorded granules.
assert h.pread(4096, 0) == b"\x01" * 4096
h.pwrite(b"\x02" * 4096, 4096)
h.flush()
h.shutdown()
PY
grep -q 'fdatasync.*EIO' "$TESTDIR/strace.out" || fail "no fault was injected"
grep -q 'recording dirty regions failed' "$TESTDIR/a.log" || fail "failure not logged"
# The failed write never reached the image.
qemu-io -f raw -r -c 'read -P 0 3G 4k' "$TESTDIR/disk.img" | grep -q 'read 4096' \
  || fail "data of a refused write reached the disk"

strace_detach "$pid"
qemu-io -f raw -c 'write -P 3 3G 4k' -c 'read -P 3 3G 4k' "$(uri a vm1)" \
  | grep -q 'read 4096' || fail "writes fail after the fault is gone"
nbdinfo --map=qemu:dirty-bitmap:vm1 "$(uri a vm1)" | grep -q '^ *3221225472 ' \
  || fail "the new region is not marked"
stop_mirrord a
exit 0
