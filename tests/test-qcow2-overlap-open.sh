#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 metadata structures that overlap each other (issue 14): a
# refcount table entry pointing at an L2 table (refcount updates used
# to overwrite the mapping), the refcount table at or inside the L1
# table (its write-back used to overwrite L1), two L1 entries sharing
# one L2 table, an L2 table that is the refcount table, a refcount
# block inside L1.  A writable open is refused, at start-up (exit 1)
# and by `mirrorctl export add` (exit 1, the daemon goes on), with a
# message naming both structures; the file is not changed; a read-only
# open serves the image.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
cd "$TESTDIR"

# make_image IMAGE KIND CLUSTER_SIZE SIZE
make_image () {
  qemu-img create -q -f qcow2 -o cluster_size="$3" "$1" "$4"
  qio "$1" 'write -P 0x11 0 64k' 'write -P 0x22 1M 64k'
  [ "$4" = 2G ] && qio "$1" 'write -P 0x33 512M 64k'
  $PY - "$1" "$2" <<'PY'
import sys, qcow2util as q
img, kind = q.Image(sys.argv[1]), sys.argv[2]
l1 = img.l1()
if kind == "reftable-entry-at-l2":
    img.set_reftable(0, img.l2_offset(0))
elif kind == "reftable-at-l1":
    img.set_field("refcount_table_offset", img.l1_offset)
elif kind == "reftable-inside-l1":
    assert img.l1_size * 8 > 4 * img.cs, "L1 must span clusters"
    img.set_field("refcount_table_offset", img.l1_offset + 3 * img.cs)
    img.set_field("refcount_table_clusters", 1)
elif kind == "l1-entries-share-l2":
    img._put_u64(img.l1_offset + 8, l1[0])
elif kind == "l2-at-reftable":
    img._put_u64(img.l1_offset + 8, img.reftable_offset | q.COPIED)
elif kind == "refblock-in-l1":
    img.set_reftable(0, img.l1_offset)
PY
}

declare -A message
message[reftable-entry-at-l2]="the L2 table of L1 entry 0 and the refcount block of refcount table entry 0 overlap"
message[reftable-at-l1]="the L1 table and the refcount table overlap"
message[reftable-inside-l1]="the L1 table and the refcount table overlap"
message[l1-entries-share-l2]="the L2 table of L1 entry 0 and the L2 table of L1 entry 1 overlap"
message[l2-at-reftable]="the L2 table of L1 entry 1 and the refcount table overlap"
message[refblock-in-l1]="the L1 table and the refcount block of refcount table entry 0 overlap"
geometry=(reftable-entry-at-l2:65536:16M reftable-at-l1:65536:16M
          reftable-inside-l1:512:16M l1-entries-share-l2:65536:2G
          l2-at-reftable:65536:2G refblock-in-l1:65536:16M)

for g in "${geometry[@]}"; do
  IFS=: read -r kind cs size <<<"$g"
  echo "== $kind"
  img=$TESTDIR/$kind.qcow2
  make_image "$img" "$kind" "$cs" "$size"
  sum=$(sha256sum < "$img")
  status=0
  timeout 20 "$MIRRORD" -f --export "vm1=$img,format=qcow2" \
    --nbd-socket x.nbd --control x.ctl --state-dir x.state 2>err || status=$?
  [ $status = 1 ] || fail "$kind: a writable start exited $status, expected 1"
  grep -F "qcow2 metadata is corrupt: ${message[$kind]}" err \
    || fail "$kind: $(cat err)"
  grep -q "repair with 'qemu-img check -r all', or open read-only" err \
    || fail "$kind: the refusal does not say what to do: $(cat err)"
  [ "$(sha256sum < "$img")" = "$sum" ] || fail "$kind: the refused open changed the image"
  start_mirrord r --export "vm1=$img,format=qcow2,readonly"
  qio "$(uri r vm1)" 'read -P 0x11 0 64k'
  grep -qF "${message[$kind]}" "$TESTDIR/r.log" || fail "$kind: read-only open did not warn"
  stop_mirrord r
  [ "$(sha256sum < "$img")" = "$sum" ] || fail "$kind: the read-only open changed the image"
done

# Added to a running daemon: refused, the daemon and its export go on.
qemu-img create -q -f qcow2 good.qcow2 16M
start_mirrord a --export "vm1=$TESTDIR/good.qcow2,format=qcow2"
img=$TESTDIR/reftable-entry-at-l2.qcow2
sum=$(sha256sum < "$img")
status=0
ctl a export add vm2 "$img" --format qcow2 2>err || status=$?
[ $status = 1 ] || fail "export add exited $status, expected 1"
grep -qF "${message[reftable-entry-at-l2]}" err || fail "export add: $(cat err)"
qio "$(uri a vm1)" 'write -P 0x44 0 64k' 'read -P 0x44 0 64k'
stop_mirrord a
[ "$(sha256sum < "$img")" = "$sum" ] || fail "export add changed the image"
check_clean good.qcow2
exit 0
