#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Data clusters referenced beyond their refcount (issue 14), found by
# the reference scan of a writable open:
#  - two L2 entries (both COPIED) map one cluster whose refcount is 1:
#    writing either in place used to change the other guest cluster
#    too, and a discard or zero freed (and punched) the other's data;
#  - the same with refcount 2, but COPIED still set on both: an in-place
#    write would change the other;
#  - one entry maps a cluster whose refcount is 0: the allocator used
#    to hand it out to the next write elsewhere, overwriting it;
#  - an L2 entry and a refcount table entry point just past the end of
#    the file: as writes elsewhere grew the file, the allocator handed
#    out those clusters, and guest 1M then mapped another guest
#    cluster's data (found by fuzz-qcow2-write).
# The request that would write such a cluster in place or free it gets
# EIO, the other guest cluster's data stays, the file is byte for byte
# what it was except for the corrupt bit, the log has one line naming
# the cluster and its references, later writes are refused, and
# qemu-img check finds what it found before.  Writes elsewhere that
# allocate never take the cluster.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
requires $PY -c 'import nbd'

# make_image IMAGE KIND: data at 0, 1M and 2M (64 KiB clusters), then
# guest 1M pointed at guest 0's cluster (KIND shared, shared-rc2), or
# guest 1M's cluster given refcount 0 (KIND unCounted).
make_image () {
  three_clusters "$1"
  $PY - "$1" "$2" <<'PY'
import os, sys, qcow2util as q
img, kind = q.Image(sys.argv[1]), sys.argv[2]
e0, e1 = img.l2_entry(0), img.l2_entry(1 << 20)
if kind in ("shared", "shared-rc2"):
    img.set_l2_entry(1 << 20, e0)
    img.set_refcount((e1 & q.OFFSET_MASK) // img.cs, 0)   # no leak besides
    if kind == "shared-rc2":
        img.set_refcount((e0 & q.OFFSET_MASK) // img.cs, 2)
elif kind == "uncounted":
    img.set_refcount((e1 & q.OFFSET_MASK) // img.cs, 0)
elif kind == "past-end":
    end = os.path.getsize(sys.argv[1])
    assert end % img.cs == 0
    img.set_l2_entry(1 << 20, (end + img.cs) | q.COPIED)
    img.set_reftable(1, end + 2 * img.cs)
    print(end)
PY
}

# expect_refused URI REQUEST OFFSET PATTERN_AT_1M: REQUEST at OFFSET
# gets EIO, and so does every later change; guest 0 and 1M still read
# what they held.
expect_refused () {
  $PY - "$@" <<'PY'
import errno, nbd, sys
uri, req, off, p1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4], 0)
h = nbd.NBD()
h.connect_uri(uri)
M = 1 << 20

def refused(what, fn):
    try:
        fn()
    except nbd.Error as e:
        if e.errnum != errno.EIO:
            sys.exit("%s: %s, expected EIO" % (what, e))
        return
    sys.exit("%s succeeded" % what)

requests = {
    "write": lambda: h.pwrite(b"\x44" * 4096, off),
    "zero": lambda: h.zero(65536, off),
    "trim": lambda: h.trim(65536, off),
}
refused("%s at %#x" % (req, off), requests[req])
refused("a later write", lambda: h.pwrite(b"\x55" * 4096, 8 * M))
h.flush()
assert h.pread(65536, 0) == b"\x11" * 65536, "guest 0 changed"
assert h.pread(65536, M) == bytes([p1]) * 65536, "guest 1M changed"
assert h.pread(65536, 2 * M) == b"\x33" * 65536, "guest 2M changed"
PY
}

# one_case KIND REQUEST OFFSET PATTERN_AT_1M MESSAGE
one_case () {
  local kind=$1 req=$2 off=$3 p1=$4 msg=$5 img=$TESTDIR/$1-$2-$3.qcow2 before
  echo "== $kind: $req at $off"
  make_image "$img" "$kind"
  cp "$img" "$img.orig"
  before=$(check_counts "$img")
  start_mirrord a --export "vm1=$img,format=qcow2"
  expect_refused "$(uri a vm1)" "$req" "$off" "$p1" || fail "$kind, $req at $off"
  stop_mirrord a
  same_but_corrupt_bit "$img.orig" "$img" || fail "$kind, $req at $off: the image changed"
  is_marked_corrupt "$img" || fail "$kind, $req at $off: qemu-img info does not say corrupt"
  [ "$(log_lines_naming "$TESTDIR/a.log" "$msg")" = 1 ] \
    || { cat "$TESTDIR/a.log"; fail "$kind, $req at $off: not one log line '$msg'"; }
  grep -F "$msg" "$TESTDIR/a.log"
  [ "$(check_counts "$img")" = "$before" ] \
    || fail "$kind, $req: qemu-img check: '$(check_counts "$img")', before: '$before'"
  qio "$img" 'read -P 0x11 0 64k' "read -P $p1 1M 64k" 'read -P 0x33 2M 64k'
  mv "$TESTDIR/a.log" "$TESTDIR/$kind-$req-$off.log"
}

rc1="host cluster at 0x50000 for guest offset %#x has 2 references but a refcount of 1"
copied="has 2 references but one claims it alone (COPIED)"
# shellcheck disable=SC2059
{
  one_case shared write $((1 << 20)) 0x11 "$(printf "$rc1" $((1 << 20)))"
  one_case shared write 0 0x11 "$(printf "$rc1" 0)"
  one_case shared trim $((1 << 20)) 0x11 "$(printf "$rc1" $((1 << 20)))"
  one_case shared zero $((1 << 20)) 0x11 "$(printf "$rc1" $((1 << 20)))"
}
one_case shared-rc2 write $((1 << 20)) 0x11 "$copied"
one_case uncounted write $((1 << 20)) 0x22 "has 1 reference but a refcount of 0"

# Writes elsewhere that allocate never take a cluster still referenced
# (refcount 0 here): they succeed, and guest 1M keeps its data.
img=$TESTDIR/alloc.qcow2
make_image "$img" uncounted
before=$(check_counts "$img")
start_mirrord a --export "vm1=$img,format=qcow2"
qio "$(uri a vm1)" 'write -P 0x66 4M 256k' 'write -P 0x67 9M 64k' 'read -P 0x22 1M 64k'
stop_mirrord a
is_marked_corrupt "$img" && fail "allocating elsewhere marked the image corrupt"
qio "$img" 'read -P 0x22 1M 64k' 'read -P 0x66 4M 256k' 'read -P 0x67 9M 64k' \
  'read -P 0x11 0 64k' 'read -P 0x33 2M 64k'
[ "$(check_counts "$img")" = "$before" ] \
  || fail "alloc: qemu-img check: '$(check_counts "$img")', before: '$before'"

# Past the end of the file: a write of 1M elsewhere grows the file over
# both clusters without taking them; a write at guest 1M is refused.
img=$TESTDIR/past-end.qcow2
end=$(make_image "$img" past-end)
start_mirrord a --export "vm1=$img,format=qcow2"
qio "$(uri a vm1)" 'write -P 0x66 4M 1M'
$PY - "$(uri a vm1)" <<'PY' || fail "past-end: guest 1M maps someone else's data"
import errno, nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
M = 1 << 20
assert h.pread(65536, M) != b"\x66" * 65536, "guest 1M reads guest 4M's data"
try:
    h.pwrite(b"\x44" * 4096, M)
    sys.exit("a write through the entry past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
assert h.pread(M, 4 * M) == b"\x66" * M
PY
stop_mirrord a
[ "$(log_lines_naming "$TESTDIR/a.log" "lay past the end of the file at open")" = 1 ] \
  || fail "past-end: not one log line naming the cluster"
qio "$img" 'read -P 0x66 4M 1M' 'read -P 0x11 0 64k' 'read -P 0x33 2M 64k'
$PY - "$img" "$end" <<'PY' || fail "past-end: a reserved cluster was written"
import sys
f = open(sys.argv[1], "rb")
f.seek(int(sys.argv[2]) + 65536)
assert f.read(2 * 65536).strip(b"\0") == b""
PY
exit 0
