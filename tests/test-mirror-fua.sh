#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sync mode keeps a guest's FUA: a FUA write is stable on the target
# before it is acknowledged — sent with FUA where the target offers it
# (nbdkit's log shows fua=1), followed by a FLUSH where it does not (a
# target whose flushes take a second makes only the FUA write wait).
# Copies and plain writes carry no FUA.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdkit --version
requires nbdkit --filter=log eval --dump-plugin

truncate -s 16M "$TESTDIR/src1.img" "$TESTDIR/src2.img" "$TESTDIR/t1.img" "$TESTDIR/t2.img"
start_mirrord a --export "vm1=$TESTDIR/src1.img" --export "vm2=$TESTDIR/src2.img"

serve () {   # serve NAME NBDKIT-ARGS...
  local name=$1; shift
  nbdkit -f -U "$TESTDIR/$name.sock" "$@" &
  cleanup_fn "kill $! 2>/dev/null"
  poll 10 test -S "$TESTDIR/$name.sock"
}
# A write through mirrord; prints how long it took, in seconds.
timed_write () {   # timed_write EXPORT OFFSET FUA(0|1)
  $PY - "$(uri a "$1")" "$2" "$3" <<'EOF'
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
flags = nbd.CMD_FLAG_FUA if sys.argv[3] == "1" else 0
t = time.monotonic()
h.pwrite(b"\x5a" * 4096, int(sys.argv[2]), flags)
print("%.3f" % (time.monotonic() - t))
h.shutdown()
EOF
}

# A target with native FUA.
serve t1 --filter=log file "$TESTDIR/t1.img" logfile="$TESTDIR/t1.log"
ctl a mirror start vm1 "nbd+unix:///?socket=$TESTDIR/t1.sock" --mode sync
ctl a mirror wait vm1 --until ready --timeout 30
timed_write vm1 $((1 << 20)) 1 >/dev/null
timed_write vm1 $((2 << 20)) 0 >/dev/null
grep -q 'Write id=[0-9]* offset=0x100000 count=0x1000 fua=1' "$TESTDIR/t1.log" \
  || fail "the FUA write did not reach the target with FUA: $(grep 'offset=0x100000' "$TESTDIR/t1.log")"
grep -q 'Write id=[0-9]* offset=0x200000 count=0x1000 fua=0' "$TESTDIR/t1.log" \
  || fail "the plain write was not forwarded plain: $(grep 'offset=0x200000' "$TESTDIR/t1.log")"
[ "$(grep -c 'Write id=.*fua=1' "$TESTDIR/t1.log")" -eq 1 ] \
  || fail "FUA on writes the guest did not ask it for"

# A target without FUA (the eval plugin says so) whose flushes take
# 1.5 s: only the FUA write waits for one.
serve t2 --filter=log eval \
  get_size='echo 16M' \
  pread='dd if='"$TESTDIR"'/t2.img skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none' \
  pwrite='dd of='"$TESTDIR"'/t2.img seek=$4 oflag=seek_bytes conv=notrunc status=none' \
  can_write='exit 0' can_flush='exit 0' flush='sleep 1.5' can_fua='echo none' \
  logfile="$TESTDIR/t2.log"
ctl a mirror start vm2 "nbd+unix:///?socket=$TESTDIR/t2.sock" --mode sync
ctl a mirror wait vm2 --until ready --timeout 30
grep -q 'Connect .* fua=0' "$TESTDIR/t2.log" || fail "the eval target offers FUA after all"
plain=$(timed_write vm2 $((2 << 20)) 0)
fua=$(timed_write vm2 $((1 << 20)) 1)
echo "plain write $plain s, FUA write $fua s (flushes take 1.5 s)"
$PY -c "import sys; sys.exit(0 if float('$fua') >= 1.4 else 1)" \
  || fail "the FUA write was acknowledged before the target flushed ($fua s)"
$PY -c "import sys; sys.exit(0 if float('$plain') < 1.4 else 1)" \
  || fail "a plain write waited for a flush ($plain s)"
ctl a mirror cutover vm2 >/dev/null
cmp "$TESTDIR/src2.img" "$TESTDIR/t2.img" || fail "vm2's target differs"
