#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# One image, one writer, among mirrords: a daemon refuses to export a
# file it already exports — under another export name, through a
# symlink, a hard link or a path with ".." — naming the export that has
# it, at start-up and through mirrorctl; a second mirrord (its own
# state directory and sockets) is refused the image at start-up (exit
# 1, "locked by another process"), writable or read-only, while the
# first serves on untouched; two read-only daemons may share one.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version

mkdir "$TESTDIR/dir"
truncate -s 16M "$TESTDIR/d.img" "$TESTDIR/e.img" "$TESTDIR/f.img" "$TESTDIR/g.img"
ln -s d.img "$TESTDIR/link.img"
ln "$TESTDIR/d.img" "$TESTDIR/hard.img"
ln -s g.img "$TESTDIR/g-link.img"

start_mirrord a --export "vm1=$TESTDIR/d.img"
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c flush "$(uri a vm1)" >/dev/null

# (a) The same file again, by any name: refused, naming vm1.
for path in "$TESTDIR/d.img" "$TESTDIR/link.img" "$TESTDIR/hard.img" \
            "$TESTDIR/dir/../d.img"; do
  for ro in "" --readonly; do
    out=$(ctl a export add vm2 "$path" $ro 2>&1) && fail "$path $ro exported twice"
    [[ $out == *"export vm2: $path is already exported as vm1 ($TESTDIR/d.img)"* ]] \
      || fail "export add $path $ro: $out"
  done
done
ctl a --json status | $PY -c '
import json, sys
assert [e["name"] for e in json.load(sys.stdin)["exports"]] == ["vm1"]'
# Another file is fine.
ctl a export add vm3 "$TESTDIR/e.img" >/dev/null

# At start-up: the daemon does not start.
out=$(timeout 20 "$MIRRORD" -f --export "x=$TESTDIR/f.img" --export "y=$TESTDIR/g.img" \
        --export "z=$TESTDIR/g-link.img" --nbd-socket "$TESTDIR/s.nbd" \
        --control "$TESTDIR/s.ctl" --state-dir "$TESTDIR/s.state" 2>&1) \
  && status=0 || status=$?
[ "$status" -eq 1 ] || fail "start-up with one file twice: exit $status: $out"
[[ $out == *"export z: $TESTDIR/g-link.img is already exported as y"* ]] \
  || fail "start-up message: $out"

# (b) A second daemon, own state and sockets: refused at start-up,
# writable or read-only, by any name.
second () {   # second SPEC: mirrord must exit 1 saying the image is locked
  local out status
  out=$(timeout 20 "$MIRRORD" -f --export "$1" --nbd-socket "$TESTDIR/b.nbd" \
          --control "$TESTDIR/b.ctl" --state-dir "$TESTDIR/b.state" 2>&1) \
    && status=0 || status=$?
  [ "$status" -eq 1 ] || fail "second mirrord with $1: exit $status: $out"
  [[ $out == *"image locked by another process (QEMU or another mirrord?)"* ]] \
    || fail "second mirrord with $1: $out"
}
second "vm1=$TESTDIR/d.img"
second "vm1=$TESTDIR/link.img"
second "other=$TESTDIR/hard.img,readonly"
second "vm3=$TESTDIR/e.img,format=raw"

# The first daemon served on and its data is intact.
qemu-io -f raw -c 'read -P 0x5a 0 1M' -c 'write -P 0x5b 1M 1M' -c flush \
  "$(uri a vm1)" | grep -q '^wrote 1048576' || fail "vm1 after the refusals"
stop_mirrord a
cmp -n $((1 << 20)) "$TESTDIR/d.img" <(tr '\0' '\132' < /dev/zero) \
  || fail "d.img lost the first write"

# Read-only: two daemons may serve one image; a writer may not join.
start_mirrord a --export "vm1=$TESTDIR/d.img,readonly"
start_mirrord c --export "vm1=$TESTDIR/link.img,readonly"
second "vm1=$TESTDIR/d.img"
stop_mirrord c
stop_mirrord a

# Once the first has gone, the image is free.
start_mirrord b --export "vm1=$TESTDIR/hard.img"
stop_mirrord b
exit 0
