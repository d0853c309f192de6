#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The qcow2 fuzz corpora (seeds, and any crash reproducer added to
# them) run through the driver once, by the replay drivers every make
# check builds (under ASan in the sanitizer build):
#  - replay-qcow2: open read-only and writable, extents, reads, writes,
#    zeroes, trims, flush, close (tests/fuzz/fuzz-qcow2.c);
#  - replay-qcow2-write: requests into clean and corrupt images,
#    checked against the model of the guest's data and, for clean
#    images, an independent refcount check (fuzz-qcow2-write.c).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

replay () {
  local bin=$top_builddir/tests/fuzz/replay-$1 corpus=$top_srcdir/tests/fuzz/$2 n
  [ -x "$bin" ] || fail "$bin not built (make check builds it)"
  out=$("$bin" "$corpus" 2>&1) || { echo "$out"; fail "replay-$1 failed"; }
  echo "$1: $(tail -1 <<<"$out")"
  n=$(find "$corpus" -type f | wc -l)
  [[ $out == *"replayed $n inputs"* ]] || { echo "$out"; fail "not every $1 input ran"; }
}

replay qcow2 corpus
# The seeds are valid images: each opens (the corpus may also hold
# reproducers that are refused).
seeds=(backing c512 c64k compressed plain v2 zero)
opened=$(sed -n 's/^replayed [0-9]* inputs, \([0-9]*\) opened$/\1/p' <<<"$(tail -1 <<<"$out")")
[ "${opened:-0}" -ge ${#seeds[@]} ] || { echo "$out"; fail "only ${opened:-0} inputs opened"; }

replay qcow2-write corpus-qcow2-write
# Its clean seeds (c4k c512 rc1 rc64 v2 zero) are found clean by the
# target's own check, or that check is broken.
clean=$(sed -n 's/^replayed [0-9]* inputs, [0-9]* opened, \([0-9]*\) clean$/\1/p' <<<"$(tail -1 <<<"$out")")
[ "${clean:-0}" -ge 6 ] || { echo "$out"; fail "only ${clean:-0} clean inputs"; }
exit 0
