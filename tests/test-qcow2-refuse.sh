#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# qcow2 images with features mirrord does not implement are refused,
# at start-up (exit 1) and by `mirrorctl export add` (exit 1), with
# "PATH: unsupported qcow2 feature: NAME", and never opened wrongly:
# encryption (LUKS and the old AES), an external data file, zstd
# compression, extended L2 entries, an unknown incompatible feature
# bit.  Internal snapshots, the corrupt bit and the dirty bit are
# refused on a writable open only: read-only, the image is served as
# qemu reads it.  Refused or not, no image file changes.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
cd "$TESTDIR"

declare -A feature       # image -> the NAME its refusal must give
mkq () { qemu-img create -q -f qcow2 "$@"; }
secret=(--object secret,id=s0,data=abc)

# LUKS needs a PBKDF benchmark: keep it short.  The old AES method too.
if mkq "${secret[@]}" -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
    luks.qcow2 16M 2>/dev/null; then
  feature[luks]=encryption
fi
mkq "${secret[@]}" -o encrypt.format=aes,encrypt.key-secret=s0 aes.qcow2 16M
feature[aes]=encryption
mkq -o data_file="$TESTDIR/data.raw" datafile.qcow2 16M
feature[datafile]="external data file"
if mkq -o compression_type=zstd zstd.qcow2 16M 2>/dev/null; then
  feature[zstd]="compression type zstd"
else
  echo "this qemu-img cannot make zstd images: not tested"
fi
mkq -o extended_l2=on extl2.qcow2 16M
feature[extl2]="extended L2 entries"
mkq unknown.qcow2 16M
qcow2util incompat unknown.qcow2 7
feature[unknown]="unknown incompatible feature bit 7"
# Data in each, so a wrong open would have something to show.
for i in datafile zstd extl2; do
  [ -f $i.qcow2 ] && qio $i.qcow2 'write -P 0x42 0 1M'
done

# Refused only writable.
mkq snap.qcow2 16M
qio snap.qcow2 'write -P 0x11 0 1M'
qemu-img snapshot -c s1 snap.qcow2
qio snap.qcow2 'write -P 0x22 512k 1M'          # differs from the snapshot
feature[snap]="internal snapshots"
for b in dirty:0 corrupt:1; do
  i=${b%%:*}
  mkq $i.qcow2 16M
  qio $i.qcow2 'write -P 0x33 0 2M' 'write -z 4M 1M'
  qcow2util incompat $i.qcow2 "${b#*:}"
done
feature[dirty]="dirty bit"
feature[corrupt]="corrupt bit"
rw_only=(snap dirty corrupt)

declare -A sum
for f in *.qcow2 data.raw; do sum[$f]=$(sha256sum < "$f"); done

# At start-up.
start_fails () {                    # start_fails IMAGE SPEC-SUFFIX
  local i=$1 opts=$2 out got=0
  out=$(timeout 20 "$MIRRORD" -f --export "vm=$TESTDIR/$i.qcow2$opts" \
        --nbd-socket "$TESTDIR/x.nbd" --control "$TESTDIR/x.ctl" \
        --state-dir "$TESTDIR/x.state" 2>&1) || got=$?
  [ "$got" -eq 1 ] || fail "$i ($opts): mirrord exited $got, expected 1: $out"
  want="$TESTDIR/$i.qcow2: unsupported qcow2 feature: ${feature[$i]}"
  [[ $out == *"$want"* ]] || fail "$i ($opts): message lacks '$want': $out"
}
for i in "${!feature[@]}"; do
  start_fails "$i" ,format=qcow2
  start_fails "$i" ,format=auto
done
# Refused read-only too, except the writable-only ones.
for i in "${!feature[@]}"; do
  [[ " ${rw_only[*]} " == *" $i "* ]] && continue
  start_fails "$i" ,format=qcow2,readonly
done

# Through the control API, on a running daemon that keeps serving.
qemu-img create -q -f qcow2 good.qcow2 16M
qio good.qcow2 'write -P 0x55 0 1M'
start_mirrord a --export "good=$TESTDIR/good.qcow2,format=qcow2"
for i in "${!feature[@]}"; do
  for fmt in qcow2 auto; do
    expect_status 1 timeout 20 "$MIRRORCTL" -s "$TESTDIR/a.ctl" export add "x$i" \
      "$TESTDIR/$i.qcow2" --format $fmt 2>err
    want="$TESTDIR/$i.qcow2: unsupported qcow2 feature: ${feature[$i]}"
    grep -qF -- "$want" err || fail "export add $i --format $fmt: $(cat err)"
  done
done
[ "$(ctl a --json status | $PY -c 'import json,sys; print(len(json.load(sys.stdin)["exports"]))')" = 1 ] \
  || fail "a refused image was added"

# Read-only opens of the writable-only ones work, and read what qemu
# reads (the active layer, not the snapshot).
for i in "${rw_only[@]}"; do
  ctl a export add "$i" "$TESTDIR/$i.qcow2" --format qcow2 --readonly >/dev/null \
    || fail "$i: read-only export add refused"
  export_equals "$(uri a "$i")" "$TESTDIR/$i.qcow2"
done
qio "$(uri a snap)" 'read -P 0x11 0 512k' 'read -P 0x22 512k 1M'
qio "$(uri a good)" 'read -P 0x55 0 1M'
stop_mirrord a
# ... and at start-up.
start_mirrord b --export "snap=$TESTDIR/snap.qcow2,format=qcow2,readonly" \
  --export "dirty=$TESTDIR/dirty.qcow2,format=auto,readonly"
export_equals "$(uri b snap)" "$TESTDIR/snap.qcow2"
export_equals "$(uri b dirty)" "$TESTDIR/dirty.qcow2"
stop_mirrord b

for f in "${!sum[@]}"; do
  [ "$(sha256sum < "$f")" = "${sum[$f]}" ] || fail "$f was changed"
done
qemu-img snapshot -l snap.qcow2 | grep -qw s1 || fail "the snapshot is gone"
exit 0
