#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Which paths and formats are images: format=raw on a file with a
# qcow2 header is refused (serving qcow2 metadata as disk contents is a
# security hole); qcow2 is served at its virtual size; directories,
# devices that are not block devices, FIFOs and missing paths get a
# clear error and never stall the daemon.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-img --version
requires nbdinfo --version

qemu-img create -q -f qcow2 "$TESTDIR/q.qcow2" 16M
truncate -s 4M "$TESTDIR/r.img"
printf 'QFI\xfb' > "$TESTDIR/fake.img"          # a qcow2 magic, nothing else
truncate -s 1M "$TESTDIR/fake.img"
mkdir "$TESTDIR/dir.img"
mkfifo "$TESTDIR/fifo.img"

# At start-up: exit 1 with a message naming the path and the reason.
start_fails () {
  local spec=$1 want=$2 out got=0
  out=$(timeout 20 "$MIRRORD" -f --export "$spec" --nbd-socket "$TESTDIR/x.nbd" \
        --control "$TESTDIR/x.ctl" --state-dir "$TESTDIR/x.state" 2>&1) || got=$?
  [ "$got" -eq 1 ] || fail "--export $spec: exit $got, expected 1: $out"
  [[ $out == *$want* ]] || fail "--export $spec: message lacks '$want': $out"
}
start_fails "vm=$TESTDIR/q.qcow2,format=raw" \
  "$TESTDIR/q.qcow2: has a qcow2 header but format=raw was given"
start_fails "vm=$TESTDIR/fake.img,format=raw" "fake.img: has a qcow2 header"
start_fails "vm=$TESTDIR/dir.img" "$TESTDIR/dir.img: not a regular file or block device"
start_fails "vm=$TESTDIR/fifo.img" "$TESTDIR/fifo.img: not a regular file or block device"
start_fails "vm=/dev/null" "/dev/null: not a regular file or block device"
start_fails "vm=$TESTDIR/missing.img" "$TESTDIR/missing.img: No such file or directory"
start_fails "vm=$TESTDIR/r.img/x" "$TESTDIR/r.img/x: Not a directory"

# The same through the control API, on a running daemon that must
# stay responsive and keep its other exports.
start_mirrord f --export "raw=$TESTDIR/r.img"
add_fails () {
  local want=$1 out; shift
  expect_status 1 timeout 20 "$MIRRORCTL" -s "$TESTDIR/f.ctl" export add "$@" \
    2>"$TESTDIR/err"
  grep -qF -- "$want" "$TESTDIR/err" || fail "export add $*: $(cat "$TESTDIR/err")"
}
add_fails "has a qcow2 header but format=raw was given" q "$TESTDIR/q.qcow2" --format raw
add_fails "not a regular file or block device" d "$TESTDIR/dir.img"
add_fails "$TESTDIR/fifo.img: not a regular file or block device" p "$TESTDIR/fifo.img"
add_fails "$TESTDIR/gone.img: No such file or directory" g "$TESTDIR/gone.img"
[ "$(ctl f --json status | $PY -c '
import json, sys; print(len(json.load(sys.stdin)["exports"]))')" = 1 ] \
  || fail "a refused image was added"

# format=auto and format=raw on a raw file: raw.  (Each export its own
# file: one file, one export.)
cp "$TESTDIR/r.img" "$TESTDIR/r2.img"
ctl f export add r2 "$TESTDIR/r2.img" --format raw --readonly >/dev/null
ctl f --json status raw | grep -q '"format": "raw"' || fail "auto on raw"

# qcow2 (format=qcow2, and found by format=auto): served at its
# virtual size, not its file size.
for fmt in qcow2 auto; do
  cp "$TESTDIR/q.qcow2" "$TESTDIR/q-$fmt.qcow2"
  ctl f export add "q$fmt" "$TESTDIR/q-$fmt.qcow2" --format $fmt --readonly >/dev/null
  nbdinfo "$(uri f q$fmt)" | grep -q 'export-size: 16777216' \
    || fail "qcow2 ($fmt) served at the wrong size"
  ctl f --json status "q$fmt" | grep -q '"format": "qcow2"' || fail "format"
done

# None of this disturbed the daemon.
nbdinfo "$(uri f raw)" | grep -q 'export-size: 4194304' || fail "raw export"
stop_mirrord f
# The image files themselves were not touched.
for q in q q-qcow2 q-auto; do
  qemu-img check -q "$TESTDIR/$q.qcow2" || fail "qcow2 image $q damaged"
done
exit 0
