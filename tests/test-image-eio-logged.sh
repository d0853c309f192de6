#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A disk that fails writes (EIO injected with strace into io_submit and
# the worker threads' pwritev2) fails the client's writes with EIO and
# says so in the log as an error — once a second at most, with a count,
# however many requests fail; reads go on; once the fault is gone,
# writes succeed again and the daemon exits cleanly.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires strace -V

truncate -s 64M "$TESTDIR/disk.img"
start_mirrord a --export "vm1=$TESTDIR/disk.img"
pid=$(mirrord_pid a)
# The granules are recorded in the bitmap first, so only the image's
# own writes meet the fault.
$PY - "$(uri a vm1)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x01" * 65536, 0, nbd.CMD_FLAG_FUA)
PY

strace_attach "$pid" "$TESTDIR/strace.out" -e trace=io_submit,pwritev2 \
  -e inject=io_submit,pwritev2:error=EIO

$PY - "$(uri a vm1)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(50):
    try:
        h.pwrite(b"\x02" * 4096, 4096 * (i % 16), nbd.CMD_FLAG_FUA if i % 2 else 0)
        sys.exit("write %d acknowledged although the disk failed it" % i)
    except nbd.Error as e:
        assert e.errno == "EIO", e
PY
grep -q 'INJECTED' "$TESTDIR/strace.out" || fail "no fault was injected"
strace_detach "$pid"

n=$(grep -c '\[error\].*WRITE at .* failed: Input/output error' "$TESTDIR/a.log" || :)
[ "$n" -ge 1 ] || { cat "$TESTDIR/a.log"; fail "the disk errors were not logged"; }
# 50 failures within a second or two: a line or a few, not 50.
[ "$n" -le 5 ] || fail "$n lines for 50 failures: not rate limited"
qemu-io -f raw -c 'write -P 3 0 4k' -c 'read -P 3 0 4k' "$(uri a vm1)" | grep -q 'read 4096' \
  || fail "writes fail after the fault is gone"
stop_mirrord a
exit 0
