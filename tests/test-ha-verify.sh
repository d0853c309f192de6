#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrorctl verify (SPEC §4): an HA pair in sync reports no differing
# blocks; bytes changed behind mirrord's back on the secondary's image
# (so no bitmap knows) are found, block by block, with their ranges,
# from either side; a peer that is down is an error, not a hang.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version

truncate -s 32M "$TESTDIR/a.img" "$TESTDIR/b.img"
qemu-io -f raw -c 'write -P 0x11 0 4M' "$TESTDIR/a.img" >/dev/null
start_pair_member a primary
start_pair_member b secondary
poll 30 pair_in_sync a || fail "never in sync"
vfield () { ctl "$1" --json verify vm1 | $PY -c "import json,sys; r=json.load(sys.stdin); print($2)"; }
[ "$(vfield a 'r["differing_blocks"]')" = 0 ] || fail "a pair in sync differs: $(vfield a r)"

# Change b's image underneath: one byte at 1 MiB, 100 KiB at 20 MiB.
stop_mirrord b
printf 'X' | dd of="$TESTDIR/b.img" bs=1 seek=$((1 << 20)) conv=notrunc status=none
head -c 102400 /dev/urandom | dd of="$TESTDIR/b.img" bs=1024 seek=$((20 << 10)) conv=notrunc status=none
start_pair_member b secondary
poll 30 pair_in_sync a || fail "not in sync after b's restart"
got=$(vfield a '"%d %s" % (r["differing_blocks"], " ".join("%d+%d" % (x["offset"], x["length"]) for x in r["ranges"]))')
# 64 KiB blocks: the byte's block, and the two blocks 20 MiB+100 KiB spans.
[ "$got" = "3 1048576+65536 20971520+131072" ] || fail "verify from a: $got"
got=$(vfield b 'r["differing_blocks"]')
[ "$got" = 3 ] || fail "verify from b: $got"
ctl a verify vm1 | grep -q "3 differing blocks" || fail "human output"

# The peer gone: an error, promptly.
stop_mirrord b
expect_status 1 ctl a verify vm1 2>"$TESTDIR/err"
grep -q "verify\|b.nbd" "$TESTDIR/err" || fail "$(cat "$TESTDIR/err")"
stop_mirrord a
exit 0
