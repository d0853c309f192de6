#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The fuzz corpus (seeds, and any crash reproducer added to it) runs
# through the qcow2 driver once: open read-only and writable, extents,
# reads, writes, zeroes, trims, flush, close (tests/fuzz/fuzz-qcow2.c,
# built as replay-qcow2 by every make check; under ASan in the
# sanitizer build).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
replay=$top_builddir/tests/fuzz/replay-qcow2
[ -x "$replay" ] || fail "$replay not built (make check builds it)"
out=$("$replay" "$top_srcdir/tests/fuzz/corpus" 2>&1) || { echo "$out"; fail "replay failed"; }
echo "$out" | tail -1
n=$(find "$top_srcdir/tests/fuzz/corpus" -type f | wc -l)
[[ $out == *"replayed $n inputs"* ]] || { echo "$out"; fail "not every corpus file ran"; }
# The seeds are valid images: each opens (the corpus may also hold
# reproducers that are refused).
seeds=(backing c512 c64k compressed plain v2 zero)
opened=$(sed -n 's/^replayed [0-9]* inputs, \([0-9]*\) opened$/\1/p' <<<"$out")
[ "${opened:-0}" -ge ${#seeds[@]} ] || { echo "$out"; fail "only ${opened:-0} inputs opened"; }
exit 0
