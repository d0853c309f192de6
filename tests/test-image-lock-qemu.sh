#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# One image, one writer, with QEMU: mirrord takes the byte-range locks
# QEMU's file driver takes (docs/locking.md), the same bytes as a QEMU
# guest disk.  While mirrord serves an image, qemu-io and qemu-img
# cannot open it for writing ('Failed to get "write" lock') and leave
# it untouched, while readers with -U (force share) keep working; a
# qcow2 image's backing file is locked as QEMU locks one; an image
# QEMU (qemu-nbd, qemu-storage-daemon, qemu-io) holds read-write is
# refused by mirrord; a read-only export lives with QEMU readers the
# way QEMU's own read-only users do; the locks go with the daemon.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires qemu-img --version
requires qemu-nbd --version
requires qemu-storage-daemon --version
requires nbdinfo --version

locks () { image_locks "$@"; }
has_lock () { [[ " $(locks "$1") " == *" $2 "* ]]; }
# refused WANT CMD...: CMD fails, saying WANT.
refused () {
  local want=$1 out; shift
  out=$("$@" 2>&1) && fail "'$*' succeeded: $out"
  [[ $out == *"$want"* ]] || fail "'$*' failed otherwise: $out"
}
# works CMD...: CMD succeeds.
works () { "$@" >"$TESTDIR/out" 2>&1 || fail "'$*': $(cat "$TESTDIR/out")"; }
WRITE_LOCK='Failed to get "write" lock'

truncate -s 16M "$TESTDIR/r.img" "$TESTDIR/other.img"
qemu-io -f raw -c 'write -P 0x66 0 1M' "$TESTDIR/other.img" >/dev/null
start_mirrord a --export "vm1=$TESTDIR/r.img"

# A raw export: mirrord holds read and write, shares neither write
# nor resize: the bytes of a QEMU guest's raw disk, plus resize.
[ "$(locks "$TESTDIR/r.img")" = "100 101 201 203" ] \
  || fail "raw export locks: $(locks "$TESTDIR/r.img")"
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c flush "$(uri a vm1)" >/dev/null
sum=$(md5sum < "$TESTDIR/r.img")

# Writers are refused, and nothing reaches the image.
refused "$WRITE_LOCK" qemu-io -f raw -c 'write -P 0x77 0 4k' "$TESTDIR/r.img"
refused "$WRITE_LOCK" qemu-img resize -f raw "$TESTDIR/r.img" 32M
refused "$WRITE_LOCK" qemu-img convert -n -f raw -O raw "$TESTDIR/other.img" "$TESTDIR/r.img"
refused "$WRITE_LOCK" qemu-img create -f raw "$TESTDIR/r.img" 16M
[ "$(md5sum < "$TESTDIR/r.img")" = "$sum" ] || fail "a refused writer changed the image"
[ "$(stat -c %s "$TESTDIR/r.img")" = $((16 << 20)) ] || fail "the image was resized"

# Readers keep working: with -U, and (raw) without: QEMU's raw readers
# share write themselves.
works qemu-img info -U -f raw "$TESTDIR/r.img"
works qemu-io -f raw -r -U -c 'read -P 0x5a 0 1M' "$TESTDIR/r.img"
works qemu-io -f raw -r -c 'read -P 0x5a 0 1M' "$TESTDIR/r.img"
works qemu-img compare -U -f raw -F raw "$TESTDIR/r.img" "$(uri a vm1)"
qemu-io -f raw -c 'read -P 0x5a 0 1M' "$(uri a vm1)" | grep -q '^read 1048576' \
  || fail "the export lost its data"

# qcow2: the file grows, so mirrord also holds resize.  QEMU's qcow2
# readers do not share write, so only -U reads a served image.
qemu-img create -f qcow2 "$TESTDIR/q.qcow2" 16M >/dev/null
ctl a export add vq "$TESTDIR/q.qcow2" >/dev/null
[ "$(locks "$TESTDIR/q.qcow2")" = "100 101 103 201 203" ] \
  || fail "qcow2 export locks: $(locks "$TESTDIR/q.qcow2")"
qemu-io -f raw -c 'write -P 0x3c 64k 1M' -c flush "$(uri a vq)" >/dev/null
refused "$WRITE_LOCK" qemu-io -f qcow2 -c 'write 0 4k' "$TESTDIR/q.qcow2"
refused "$WRITE_LOCK" qemu-img resize -f qcow2 "$TESTDIR/q.qcow2" 32M
refused 'Failed to get shared "write" lock' qemu-img info "$TESTDIR/q.qcow2"
works qemu-img info -U "$TESTDIR/q.qcow2"
works qemu-io -f qcow2 -r -U -c 'read -P 0x3c 64k 1M' "$TESTDIR/q.qcow2"
works qemu-img compare -U -f qcow2 -F raw "$TESTDIR/q.qcow2" "$(uri a vq)"

# A backing file: read, sharing neither write nor resize (what QEMU
# takes on the backing file of a guest's disk).  QEMU cannot write it;
# another export in this daemon cannot either; readers can, and so can
# a read-only export or a second overlay: all readers.
qemu-img create -f raw "$TESTDIR/base.img" 16M >/dev/null
qemu-io -f raw -c 'write -P 0x21 0 2M' "$TESTDIR/base.img" >/dev/null
for n in 1 2; do
  qemu-img create -f qcow2 -b base.img -F raw "$TESTDIR/ov$n.qcow2" >/dev/null
done
ctl a export add ov1 "$TESTDIR/ov1.qcow2" >/dev/null
[ "$(locks "$TESTDIR/base.img")" = "100 201 203" ] \
  || fail "backing file locks: $(locks "$TESTDIR/base.img")"
refused "$WRITE_LOCK" qemu-io -f raw -c 'write 0 4k' "$TESTDIR/base.img"
works qemu-io -f raw -r -c 'read -P 0x21 0 2M' "$TESTDIR/base.img"
out=$(ctl a export add base "$TESTDIR/base.img" 2>&1) && fail "base exported writable: $out"
[[ $out == *"base.img: image already in use by this mirrord"* ]] || fail "base: $out"
ctl a export add base "$TESTDIR/base.img" --readonly >/dev/null
ctl a export add ov2 "$TESTDIR/ov2.qcow2" >/dev/null
qemu-io -f raw -r -c 'read -P 0x21 0 2M' "$(uri a ov2)" | grep -q '^read 2097152' \
  || fail "second overlay reads wrong"

# A read-only export: read, sharing neither write nor resize, as a
# QEMU guest's read-only disk.  QEMU's readers (qemu-io -r, qemu-img
# info, qemu-nbd -r) work without -U; its writers do not; a second
# mirrord may serve the same image read-only too.
cp "$TESTDIR/other.img" "$TESTDIR/ro.img"
ctl a export add vro "$TESTDIR/ro.img" --readonly >/dev/null
[ "$(locks "$TESTDIR/ro.img")" = "100 201 203" ] \
  || fail "read-only export locks: $(locks "$TESTDIR/ro.img")"
works qemu-io -f raw -r -c 'read -P 0x66 0 1M' "$TESTDIR/ro.img"
works qemu-img info -f raw "$TESTDIR/ro.img"
qemu-nbd -r -f raw -x ro -k "$TESTDIR/qro.sock" -t "$TESTDIR/ro.img" &
qro=$!
cleanup_fn "kill $qro 2>/dev/null"
poll 10 test -S "$TESTDIR/qro.sock" || fail "qemu-nbd -r did not start"
works nbdinfo "nbd+unix:///ro?socket=$TESTDIR/qro.sock"
kill $qro
wait $qro 2>/dev/null || :
refused "$WRITE_LOCK" qemu-io -f raw -c 'write 0 4k' "$TESTDIR/ro.img"
start_mirrord b --export "vro=$TESTDIR/ro.img,readonly"
stop_mirrord b

# QEMU first: an image qemu-nbd, qemu-storage-daemon or qemu-io holds
# read-write is refused, writable or read-only, at start-up too; once
# QEMU lets go it can be exported.
truncate -s 16M "$TESTDIR/q1.img" "$TESTDIR/q3.img"
qemu-img create -f qcow2 "$TESTDIR/q2.qcow2" 16M >/dev/null
export_refused () {   # export_refused FILE [--readonly]: mirrorctl says why
  local out
  out=$(ctl a export add held "$@" 2>&1) && fail "$1 exported while QEMU writes it"
  [[ $out == *"image locked by another process (QEMU or another mirrord?), which "*'"write" access'* ]] \
    || fail "export add $*: $out"
}
qemu-nbd -f raw -x q1 -k "$TESTDIR/q1.sock" -t "$TESTDIR/q1.img" &
q1=$!
cleanup_fn "kill $q1 2>/dev/null"
poll 10 has_lock "$TESTDIR/q1.img" 101 || fail "qemu-nbd holds no write lock"
export_refused "$TESTDIR/q1.img"
export_refused "$TESTDIR/q1.img" --readonly

qemu-storage-daemon \
  --blockdev "driver=file,filename=$TESTDIR/q2.qcow2,node-name=f0" \
  --blockdev driver=qcow2,file=f0,node-name=d0 \
  --nbd-server "addr.type=unix,addr.path=$TESTDIR/q2.sock" \
  --export type=nbd,id=e0,node-name=d0,name=q2,writable=on &
q2=$!
cleanup_fn "kill $q2 2>/dev/null"
poll 10 has_lock "$TESTDIR/q2.qcow2" 101 || fail "qemu-storage-daemon holds no write lock"
export_refused "$TESTDIR/q2.qcow2"
out=$(timeout 20 "$MIRRORD" -f --export "q2=$TESTDIR/q2.qcow2" --nbd-socket "$TESTDIR/c.nbd" \
        --control "$TESTDIR/c.ctl" --state-dir "$TESTDIR/c.state" 2>&1) && status=0 || status=$?
[ "$status" -eq 1 ] || fail "mirrord started on an image QEMU writes (exit $status): $out"
[[ $out == *"q2.qcow2: image locked by another process"* ]] || fail "start-up message: $out"

mkfifo "$TESTDIR/qemu-io.in"
qemu-io -f raw "$TESTDIR/q3.img" < "$TESTDIR/qemu-io.in" > "$TESTDIR/qemu-io.out" 2>&1 &
q3=$!
cleanup_fn "kill $q3 2>/dev/null"
exec 3> "$TESTDIR/qemu-io.in"
poll 10 has_lock "$TESTDIR/q3.img" 101 || fail "qemu-io holds no write lock"
export_refused "$TESTDIR/q3.img"
echo quit >&3
exec 3>&-
wait $q3
ctl a export add q3 "$TESTDIR/q3.img" >/dev/null
kill $q1 $q2
wait $q1 $q2 2>/dev/null || :
ctl a export add q1 "$TESTDIR/q1.img" >/dev/null

# The locks live as long as the daemon, however it ends.
stop_mirrord a
[ -z "$(locks "$TESTDIR/r.img")" ] || fail "locks left after exit: $(locks "$TESTDIR/r.img")"
works qemu-io -f raw -c 'write -P 0x77 0 4k' "$TESTDIR/r.img"
start_mirrord a --export "vm1=$TESTDIR/r.img"
refused "$WRITE_LOCK" qemu-io -f raw -c 'write 0 4k' "$TESTDIR/r.img"
kill9_mirrord a
works qemu-io -f raw -c 'write -P 0x78 0 4k' "$TESTDIR/r.img"
exit 0
