#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# base:allocation of qcow2 exports tells the truth, as qemu-img map
# sees the same image: allocated clusters (plain or compressed) are
# data, zero clusters read as zero, unallocated clusters are hole+zero.
# Checked on every sample image (cluster sizes 512 B-2 MiB, v2, zero
# and compressed clusters, a multi-cluster L1), then again after writes,
# zero writes and trims made through mirrord.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"

make_samples
start_mirrord a
for i in "${samples[@]}"; do
  ctl a export add "$i" "$TESTDIR/$i.qcow2" --format qcow2 >/dev/null || fail "export add $i"
done
for i in "${samples[@]}"; do
  map_agrees "$(uri a "$i")" "$TESTDIR/$i.qcow2"
done

# The map is not trivially "all data": the zero image has data, holes
# and zero clusters (zero clusters may say hole+zero or zero: both read
# as zero, and map_agrees checked where they are).
nbdinfo --map "$(uri a zero)" > "$TESTDIR/zero.map"
for t in 0 3; do
  awk -v t=$t '$3 == t { found = 1 } END { exit !found }' "$TESTDIR/zero.map" \
    || { cat "$TESTDIR/zero.map"; fail "no extent of type $t in the zero image's map"; }
done
qemu-img map -U --output=json "$TESTDIR/zero.qcow2" \
  | grep '"present": true, "zero": true' >/dev/null || fail "zero image has no zero cluster"

# Block status with small request windows and at odd offsets agrees
# with a whole-image query (a client may ask for any range).
$PY - "$(uri a c4k)" "$(uri a zero)" <<'PY'
import nbd, sys
for u in sys.argv[1:]:
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri(u)
    size = h.get_size()
    def status(off, length):
        got = []
        def cb(ctx, o, entries, err):
            for k in range(0, len(entries), 2):
                got.append((entries[k], entries[k + 1]))
        h.block_status(length, off, cb)
        return got
    # Whole-image map at byte resolution (of 512-byte sectors).
    full = []
    off = 0
    while off < size:
        ext = status(off, min(size - off, 1 << 30))
        for length, flags in ext:
            full.append((off, length, flags))
            off += length
    def flags_at(o):
        for s, l, f in full:
            if s <= o < s + l:
                return f
        raise AssertionError("offset %d not covered" % o)
    for off in (0, 512, 4095, 65535, 1 << 20, (8 << 20) + 1000, (9 << 20) - 1,
                (20 << 20) + 4096, 5000001, 33554431, size - 1):
        if off >= size:
            continue
        ext = status(off, min(4096, size - off))
        assert ext and ext[0][0] > 0, (u, off, ext)
        assert ext[0][1] == flags_at(off), \
            "%s: status at %d says %d, whole map %d" % (u, off, ext[0][1], flags_at(off))
    h.shutdown()
PY

# Writes, zeroes and trims through mirrord change the map as they
# change qemu-img's view of the file.
qio "$(uri a c64k)" 'write -P 0x41 40M 64k' 'write -P 0x42 41M 1000' \
  'write -z 0 64k' 'write -z -u 8M 1M' 'write -z 42M 64k' 'discard 30M 2M' \
  'write -P 0x43 50M 4M' 'discard 51M 1M' 'write -z 52M 128k'
qio "$(uri a c512)" 'write -P 0x44 20M 5000' 'write -z 8M 1M' 'discard 1M 512' \
  'write -z -u 9M 4k'
qio "$(uri a comp)" 'write -P 0x45 100k 4k' 'write -z 1M 64k' 'discard 2M 64k'
qio "$(uri a v2)" 'write -z 0 64k' 'discard 8M 3M' 'write -P 0x46 20M 64k'
for i in c64k c512 comp v2; do
  map_agrees "$(uri a "$i")" "$TESTDIR/$i.qcow2"
done
stop_mirrord a
for i in "${samples[@]}"; do check_clean "$TESTDIR/$i.qcow2"; done
exit 0
