#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# L2 entries that point into metadata (issue 14): the request that
# would write or free the cluster fails with EIO, before anything is
# written.  A preallocated zero cluster or a compressed cluster inside
# the L1 table or an L2 table used to be freed by a write, a zero or a
# discard (a discard also punched the L1 table out of the file): every
# guest cluster was lost, silently.
#
# The same for a zero cluster inside a persistent bitmap's directory.
# For each case: the request gets EIO; so do later writes, zeroes and
# discards; reads still work; the file is byte for byte what it was
# except for the corrupt bit (qemu-img info: "corrupt: true"); the log
# has one line naming the structure; qemu-img check finds what it
# found before, no more.  Then: the next writable open is refused
# saying why, a read-only one serves the image, and a write
# acknowledged before the corruption was found survives the shutdown.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
requires $PY -c 'import nbd'

# make_image IMAGE KIND: 64 KiB clusters, data at 0, 1M and 2M, then
# the entry of guest 1M replaced according to KIND.
make_image () {
  three_clusters "$1"
  $PY - "$1" "$2" <<'PY'
import sys, qcow2util as q
img, kind = q.Image(sys.argv[1]), sys.argv[2]
l1, l2 = img.l1_offset, img.l2_offset(0)
x = 62 - (img.h["cluster_bits"] - 8)       # compressed: sector count at bit x
entry = {
    "zero-in-l1": l1 | q.ZERO | q.COPIED,
    "zero-in-l2": l2 | q.ZERO | q.COPIED,
    "zero-in-l1-uncopied": l1 | q.ZERO,
    "compressed-in-l1": q.COMPRESSED | (1 << x) | l1,   # 2 sectors of L1
    "compressed-in-l2": q.COMPRESSED | (0 << x) | (l2 + 512),
    "data-in-l2": l2 | q.COPIED,
    "none": img.l2_entry(1 << 20),
}[kind]
img.set_l2_entry(1 << 20, entry)
PY
}

# expect_refused URI REQUEST: REQUEST at guest 1M gets EIO, and so does
# every later change; reads elsewhere still work.
expect_refused () {
  $PY - "$1" "$2" <<'PY'
import errno, nbd, sys
uri, req = sys.argv[1:3]
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

assert h.pread(65536, 0) == b"\x11" * 65536
requests = {
    "write": lambda: h.pwrite(b"\x44" * 4096, M),
    "write-whole": lambda: h.pwrite(b"\x44" * 65536, M),
    "zero": lambda: h.zero(65536, M),
    "trim": lambda: h.trim(65536, M),
}
refused(req + " at 1M", requests[req])
refused("a later write", lambda: h.pwrite(b"\x55" * 4096, 8 * M))
refused("a later zero", lambda: h.zero(65536, 8 * M))
refused("a later trim", lambda: h.trim(65536, 8 * M))
h.flush()
assert h.pread(65536, 0) == b"\x11" * 65536
assert h.pread(65536, 2 * M) == b"\x33" * 65536
PY
}

# one_case KIND REQUEST STRUCTURE
one_case () {
  local kind=$1 req=$2 what=$3 img=$TESTDIR/$1-$2.qcow2 before
  echo "== $kind, $req: must not touch the $what"
  make_image "$img" "$kind"
  cp "$img" "$img.orig"
  before=$(check_counts "$img")
  start_mirrord a --export "vm1=$img,format=qcow2"
  expect_refused "$(uri a vm1)" "$req" || fail "$kind, $req: not refused as it should be"
  ctl a status >/dev/null || fail "daemon unresponsive"
  stop_mirrord a
  same_but_corrupt_bit "$img.orig" "$img" || fail "$kind, $req: the image changed"
  is_marked_corrupt "$img" || fail "$kind, $req: qemu-img info does not say corrupt"
  [ "$(log_lines_naming "$TESTDIR/a.log" "$what")" = 1 ] \
    || { cat "$TESTDIR/a.log"; fail "$kind, $req: not one log line naming the $what"; }
  grep -F "$what" "$TESTDIR/a.log"
  [ "$(check_counts "$img")" = "$before" ] \
    || fail "$kind, $req: qemu-img check: '$(check_counts "$img")', before: '$before'"
  mv "$TESTDIR/a.log" "$TESTDIR/$kind-$req.log"
}

one_case zero-in-l1 trim "L1 table"
one_case zero-in-l1 write "L1 table"
one_case zero-in-l2 write "L2 table"
one_case zero-in-l2 zero "L2 table"
one_case zero-in-l1-uncopied zero "L1 table"
one_case compressed-in-l1 write "L1 table"
one_case compressed-in-l2 trim "L2 table"
# A data cluster inside an L2 table was refused before already.
one_case data-in-l2 write-whole "L2 table"

# The bitmap directory of a persistent bitmap (its bitmaps become
# invalid on a writable open, which clears the auto-clear bit; the
# directory stays): a discard through a zero cluster inside it.
img=$TESTDIR/bitmap.qcow2
make_image "$img" none
qemu-img bitmap --add "$img" b0
dir=$($PY - "$img" <<'PY'
import struct, sys, qcow2util as q
img = q.Image(sys.argv[1])
raw = img.read(0, img.cs)
pos = img.h["header_length"]
while pos + 8 <= len(raw):
    t, n = struct.unpack(">II", raw[pos:pos + 8])
    if t == 0x23852875:
        size, off = struct.unpack(">QQ", raw[pos + 16:pos + 32])
        img.set_l2_entry(1 << 20, off | q.ZERO | q.COPIED)
        print(off, size)
        break
    pos += 8 + (n + 7) // 8 * 8
else:
    sys.exit("no bitmaps extension")
PY
)
read -r dir_off dir_size <<<"$dir"
dd if="$img" of="$TESTDIR/dir.before" bs=1 skip="$dir_off" count="$dir_size" status=none
start_mirrord a --export "vm1=$img,format=qcow2"
expect_refused "$(uri a vm1)" trim || fail "bitmap directory: not refused"
stop_mirrord a
dd if="$img" of="$TESTDIR/dir.after" bs=1 skip="$dir_off" count="$dir_size" status=none
cmp "$TESTDIR/dir.before" "$TESTDIR/dir.after" || fail "the bitmap directory changed"
is_marked_corrupt "$img" || fail "bitmap directory: not marked corrupt"
[ "$(log_lines_naming "$TESTDIR/a.log" "overlaps the bitmap directory")" = 1 ] \
  || { cat "$TESTDIR/a.log"; fail "bitmap directory: not one log line naming it"; }

# qemu-io as the client: a write over NBD gets EIO.
img=$TESTDIR/qemu-io.qcow2
make_image "$img" zero-in-l2
cp "$img" "$img.orig"
start_mirrord a --export "vm1=$img,format=qcow2"
out=$(qemu-io -f raw -c 'write -P 0x44 1M 4k' "$(uri a vm1)" 2>&1) || :
grep -q "write failed: Input/output error" <<<"$out" || fail "qemu-io: $out"
stop_mirrord a
same_but_corrupt_bit "$img.orig" "$img" || fail "qemu-io: the image changed"

# The next writable open is refused, saying why; read-only works.
status=0
timeout 20 "$MIRRORD" -f --export "vm1=$img,format=qcow2" \
  --nbd-socket "$TESTDIR/x.nbd" --control "$TESTDIR/x.ctl" --state-dir "$TESTDIR/x.state" \
  2>"$TESTDIR/err" || status=$?
[ $status = 1 ] || fail "writable reopen exited $status, expected 1"
grep -q "unsupported qcow2 feature: corrupt bit: its metadata was found inconsistent" \
  "$TESTDIR/err" || fail "writable reopen: $(cat "$TESTDIR/err")"
start_mirrord b --export "vm1=$img,format=qcow2,readonly"
qio "$(uri b vm1)" 'read -P 0x11 0 64k' 'read -P 0x33 2M 64k'
stop_mirrord b
same_but_corrupt_bit "$img.orig" "$img" || fail "the read-only open changed the image"

# A write acknowledged (not flushed) before the corruption was found is
# in the image after the shutdown.
img=$TESTDIR/acked.qcow2
make_image "$img" zero-in-l1
before=$(check_counts "$img")
start_mirrord a --export "vm1=$img,format=qcow2"
qio "$(uri a vm1)" 'write -P 0x66 4M 64k'
expect_refused "$(uri a vm1)" trim || fail "acked: not refused"
stop_mirrord a
qio "$img" 'read -P 0x66 4M 64k' 'read -P 0x11 0 64k' 'read -P 0x33 2M 64k'
[ "$(check_counts "$img")" = "$before" ] \
  || fail "acked: qemu-img check: '$(check_counts "$img")', before: '$before'"
exit 0
