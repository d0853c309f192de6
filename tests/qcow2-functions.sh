# SPDX-License-Identifier: MIT
# Helpers for the qcow2 tests, sourced after functions.sh.
#
#   export_equals URI IMAGE [FMT]
#                         the whole export, read over NBD, equals IMAGE
#                         as qemu-img reads it (FMT default qcow2)
#   map_agrees URI IMAGE [FMT]
#                         nbdinfo --map of URI agrees with qemu-img map
#                         about data vs zero vs hole (tests/qcow2util.py)
#   check_clean IMAGE     qemu-img check exits 0 (no leak, no corruption)
#   check_no_corruption IMAGE
#                         qemu-img check exits 0 or 3 (leaks are fine
#                         after a crash), never 2 (corruption)
#   qio IMAGE|URI CMD...  qemu-io with one -c per CMD; fails unless every
#                         command succeeded (qemu-io exits 0 on some
#                         failed commands, so its output is checked too)
#   qcow2util ARGS...     tests/qcow2util.py
#   is_marked_corrupt IMAGE
#                         qemu-img info says "corrupt: true"
#   check_counts IMAGE    "corruptions N leaks M check-errors K" from
#                         qemu-img check (of an image corrupt on purpose:
#                         compare before and after)
#   same_but_corrupt_bit BEFORE AFTER
#                         AFTER is BEFORE byte for byte, except that the
#                         corrupt bit (incompatible feature bit 1) is set
#   log_lines_naming FILE TEXT
#                         how many lines of FILE contain TEXT
#   make_samples          makes $TESTDIR/NAME.qcow2 for each NAME in
#                         ${samples[@]}: images of every kind qemu makes
#                         (cluster sizes 512 B-2 MiB, v2, zero and
#                         compressed clusters, a multi-cluster L1)
requires qemu-img --version
requires qemu-io --version
requires nbdinfo --version

qcow2util () { $PY "$top_srcdir/tests/qcow2util.py" "$@"; }

export_equals () {
  local u=$1 img=$2 fmt=${3:-qcow2} tag
  tag=$(basename "$img")
  rm -f "$TESTDIR/$tag.nbd.raw" "$TESTDIR/$tag.ref.raw"
  qemu-img convert -f raw -O raw "$u" "$TESTDIR/$tag.nbd.raw" \
    || fail "$tag: reading the export $u failed"
  qemu-img convert -U -f "$fmt" -O raw "$img" "$TESTDIR/$tag.ref.raw"
  cmp "$TESTDIR/$tag.nbd.raw" "$TESTDIR/$tag.ref.raw" \
    || fail "$tag: export $u differs from qemu-img's reading of $img"
  rm -f "$TESTDIR/$tag.nbd.raw" "$TESTDIR/$tag.ref.raw"
}

map_agrees () {
  qcow2util map "$@" || fail "$(basename "$2"): block status disagrees with qemu-img map"
}

check_clean () {
  local got=0
  qemu-img check -f qcow2 "$1" > "$TESTDIR/check.out" 2>&1 || got=$?
  [ "$got" -eq 0 ] || { cat "$TESTDIR/check.out" >&2;
                        fail "qemu-img check $(basename "$1"): exit $got, expected 0"; }
}

check_no_corruption () {
  local got=0
  qemu-img check -f qcow2 "$1" > "$TESTDIR/check.out" 2>&1 || got=$?
  case $got in
    0|3) ;;
    *) cat "$TESTDIR/check.out" >&2
       fail "qemu-img check $(basename "$1"): exit $got (2 = corruption)" ;;
  esac
}

qio () {
  local ro=(-r) c0
  for c0 in "${@:2}"; do [[ $c0 == read* ]] || ro=(); done
  local target=$1 fmt=qcow2 args=() c n=0 out
  shift
  [[ $target == nbd* ]] && fmt=raw
  for c in "$@"; do args+=(-c "$c"); n=$((n + 1)); done
  out=$(qemu-io "${ro[@]}" -f "$fmt" "${args[@]}" "$target" 2>&1) \
    || { echo "$out" >&2; fail "qemu-io on $target failed"; }
  if grep -qiE 'error|failed|pattern verification|Input/output' <<<"$out"; then
    echo "$out" >&2; fail "qemu-io on $target: a command failed"
  fi
  [ "$(grep -cE '^(wrote|read|discard) ' <<<"$out")" -eq "$n" ] \
    || { echo "$out" >&2; fail "qemu-io on $target: not every command completed"; }
}

is_marked_corrupt () {
  qemu-img info -U --output=json "$1" | $PY -c '
import json, sys
sys.exit(0 if json.load(sys.stdin)["format-specific"]["data"].get("corrupt") else 1)'
}

check_counts () {
  local out
  out=$(qemu-img check -U --output=json -f qcow2 "$1" 2>/dev/null) || :
  $PY -c '
import json, sys
d = json.loads(sys.argv[1])
print("corruptions %d leaks %d check-errors %d"
      % (d.get("corruptions", 0), d.get("leaks", 0), d.get("check-errors", 0)))' "$out"
}

same_but_corrupt_bit () {
  $PY - "$1" "$2" <<'PY'
import struct, sys
a, b = (open(p, "rb").read() for p in sys.argv[1:3])
if len(a) != len(b):
    sys.exit("size changed: %d -> %d" % (len(a), len(b)))
fa, fb = (struct.unpack(">Q", x[72:80])[0] for x in (a, b))
if fb != fa | 2 or fa & 2:
    sys.exit("incompatible features %#x -> %#x: not just the corrupt bit" % (fa, fb))
if a[:72] != b[:72] or a[80:] != b[80:]:
    diff = [i for i in range(len(a)) if a[i] != b[i] and not 72 <= i < 80]
    sys.exit("%d bytes changed, the first at %#x" % (len(diff), diff[0]))
PY
}

log_lines_naming () {
  grep -c -F -- "$2" "$1" || :
}

make_samples () {
  # Scattered writes every image gets (offsets fit in 64M).
  scatter=(
    'write -P 0x11 0 64k'
    'write -P 0x12 1M 4k'
    'write -P 0x13 1000 3000'
    'write -P 0x14 5000001 100000'
    'write -P 0x15 65535 2'
    'write -P 0x16 8M 3M'
    'write -P 0x17 30M 1'
    'write -P 0x18 33554431 513'
  )
  _mk () {                             # _mk NAME SIZE CREATE-OPTS...
    local name=$1 size=$2; shift 2
    qemu-img create -q -f qcow2 "$@" "$TESTDIR/$name.qcow2" "$size"
    qio "$TESTDIR/$name.qcow2" "${scatter[@]}"
  }

  # Cluster sizes; the 2 MiB one ends 512 bytes into a cluster.
  _mk c512 64M -o cluster_size=512
  _mk c4k 64M -o cluster_size=4096
  _mk c64k 64M
  _mk c2m $((70 << 20 | 512)) -o cluster_size=2M
  qio "$TESTDIR/c2m.qcow2" 'write -P 0x19 73400320 512' 'write -P 0x1a 69M 1M'
  # Data at the very end of the default image.
  qio "$TESTDIR/c64k.qcow2" 'write -P 0x1b 67108863 1' 'write -P 0x1c 63M 1000'

  # Version 2, including zeroes written over data (v2 has no zero flag).
  _mk v2 64M -o compat=0.10
  qio "$TESTDIR/v2.qcow2" 'write -z 8M 64k' 'write -z -u 9M 128k' 'write -P 0x1d 40M 1M'

  # Zero clusters: over data and over nothing, kept and unmapped, whole
  # and partial clusters.
  _mk zero 64M
  qio "$TESTDIR/zero.qcow2" 'write -z 0 64k' 'write -z -u 8M 1M' 'write -z 20M 128k' \
    'write -z -u 21M 64k' 'write -z 9M 1000' 'write -z 10M 1M' 'write -P 0x1e 10M 64k'

  # Compressed clusters (64K and 4K), next to incompressible data that
  # qemu-img stores uncompressed.
  truncate -s 32M "$TESTDIR/src.raw"
  qemu-io -f raw -c 'write -P 0x21 0 4M' -c 'write -P 0x22 6M 100k' \
    -c 'write -P 0x23 31M 1M' "$TESTDIR/src.raw" >/dev/null
  head -c 2M /dev/urandom | dd of="$TESTDIR/src.raw" bs=1M seek=12 conv=notrunc status=none
  seq 1 400000 | dd of="$TESTDIR/src.raw" bs=1M seek=20 conv=notrunc status=none
  qemu-img convert -c -O qcow2 "$TESTDIR/src.raw" "$TESTDIR/comp.qcow2"
  qemu-img convert -c -O qcow2 -o cluster_size=4096 "$TESTDIR/src.raw" "$TESTDIR/comp4k.qcow2"
  for c in comp comp4k; do
    # There are compressed clusters (data without a host offset).
    qemu-img map --output=json "$TESTDIR/$c.qcow2" | grep '"data": true' \
      | grep -vq '"offset"' || fail "$c has no compressed cluster"
  done

  # A 4 GiB image with 512-byte clusters: its L1 table spans 2048
  # clusters; data at far offsets.
  qemu-img create -q -f qcow2 -o cluster_size=512 "$TESTDIR/bigl1.qcow2" 4G
  far=('write -P 0x31 0 4k' 'write -P 0x32 2G 64k' 'write -P 0x33 4294966784 512'
       'write -P 0x34 3000000000 7000')
  qio "$TESTDIR/bigl1.qcow2" "${far[@]}"
  samples=(c512 c4k c64k c2m v2 zero comp comp4k bigl1)
}

# three_clusters IMAGE: a 16 MiB qcow2 with 64 KiB clusters and data at
# guest 0, 1M and 2M (0x11, 0x22, 0x33): the base the overlap and
# shared-cluster tests then damage.
three_clusters () {
  qemu-img create -q -f qcow2 "$1" 16M
  qio "$1" 'write -P 0x11 0 64k' 'write -P 0x22 1M 64k' 'write -P 0x33 2M 64k'
}
