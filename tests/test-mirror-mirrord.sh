#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrord to mirrord: a primary configured with peer= and mode=async
# starts mirroring by itself, an fio random-write load with --verify runs
# through it during the bulk copy, and after cut-over the target
# mirrord's image is identical; nbdkit's memory plugin (multi-conn) as a
# target gets several connections.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires fio --version
requires nbdkit --version
fio --enghelp 2>&1 | grep -qw nbd || { echo "fio lacks the nbd engine"; exit 77; }

truncate -s 256M "$TESTDIR/src.img" "$TESTDIR/dst.img"
start_mirrord t --export "vm1=$TESTDIR/dst.img"
start_mirrord s --export "vm1=$TESTDIR/src.img,peer=$(uri t vm1),mode=async,max-lag=1G"
# Started by itself, from the configuration.
has_mirror () { ctl s --json status vm1 | $PY -c 'import json,sys; assert json.load(sys.stdin)["exports"][0]["mirror"]'; }
poll 10 has_mirror || fail "peer= did not start a mirror"

fio --name=load --ioengine=nbd --uri="$(uri s vm1)" --rw=randwrite --bs=4k \
  --iodepth=16 --size=64M --offset=32M --verify=crc32c --do_verify=1 \
  --verify_state_save=0 \
  > "$TESTDIR/fio.out" 2>&1 || { cat "$TESTDIR/fio.out"; fail "fio verify failed"; }
ctl s mirror wait vm1 --until ready --timeout 60
ctl s mirror cutover vm1 >/dev/null
stop_mirrord t
qemu-img compare -f raw -F raw "$TESTDIR/src.img" "$TESTDIR/dst.img"
stop_mirrord s

# A multi-conn target gets several connections.
truncate -s 64M "$TESTDIR/m.img"
nbdkit -f -U "$TESTDIR/mem.sock" memory 64M &
cleanup_fn "kill $! 2>/dev/null"
poll 10 test -S "$TESTDIR/mem.sock"
start_mirrord m --export "vm1=$TESTDIR/m.img"
ctl m mirror start vm1 "nbd+unix:///?socket=$TESTDIR/mem.sock"
conns () { ctl m --json status vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["mirror"]["connections"])'; }
several () { [ "$(conns)" -gt 1 ]; }
# The first connection is up when start returns; the others follow.
poll 10 several || fail "$(conns) connection(s) to a multi-conn target"
ctl m mirror wait vm1 --until ready --timeout 30
ctl m mirror cancel vm1 >/dev/null
stop_mirrord m
exit 0
