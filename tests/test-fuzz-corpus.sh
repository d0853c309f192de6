#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every seed and crash reproducer of the NBD handshake, NBD
# transmission and bitmap-file fuzz targets runs once through its
# target (tests/fuzz/replay-*, built by every make check; under ASan in
# the sanitizer build).  A target aborts on a broken invariant, so a
# regression in any reproducer fails here.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
set -u

# Every committed corpus is replayed in every make check: corpus-TARGET
# here, the qcow2 corpora (tests/fuzz/corpus, corpus-qcow2-write) by
# test-qcow2-fuzz-corpus.sh.
TARGETS=(nbd-handshake nbd-transmission bitmap)
for d in "$top_srcdir"/tests/fuzz/corpus-*/; do
  t=$(basename "$d"); t=${t#corpus-}
  [[ " ${TARGETS[*]} " == *" $t "* ]] && continue
  grep -q "replay $t corpus-$t\b" "$top_srcdir/tests/test-qcow2-fuzz-corpus.sh" \
    || fail "tests/fuzz/corpus-$t is replayed by no test"
done
grep -q 'tests/test-qcow2-fuzz-corpus.sh' "$top_srcdir/tests/qcow2-tests.am" \
  || fail "tests/fuzz/corpus (qcow2) is replayed by no test"

replay () {
  local target=$1 out n
  local bin=$top_builddir/tests/fuzz/replay-$target
  local corpus=$top_srcdir/tests/fuzz/corpus-$target
  [ -x "$bin" ] || fail "$bin not built (make check builds it)"
  out=$("$bin" "$corpus" 2>"$TESTDIR/$target.err") \
    || { echo "$out"; tail -40 "$TESTDIR/$target.err"; fail "replay-$target failed"; }
  echo "$target: $(tail -1 <<<"$out")"
  n=$(find "$corpus" -type f | wc -l)
  [ "$n" -gt 0 ] || fail "corpus-$target is empty"
  [[ $out == *"replayed $n inputs"* ]] || { echo "$out"; fail "not every $target input ran"; }
  LAST=$(tail -1 <<<"$out")
}

# The NBD seeds are real client sessions: each must get past the
# greeting (an option reply at least), or the harness is broken.
replay nbd-handshake
n=$(find "$top_srcdir/tests/fuzz/corpus-nbd-handshake" -type f | wc -l)
# All but three, which are closed without a reply (the protocol has
# none for them): bad-client-flags, tcp-export-name and
# starttls-plaintext-after.
answered=${LAST##*, }; answered=${answered% answered}
[ "$answered" -ge $((n - 3)) ] || fail "handshake seeds got no reply: $LAST"
replay nbd-transmission
# The bitmap seeds are valid files for their geometry: most must be
# trusted (the rest are corrupt or mismatched on purpose).
replay bitmap
trusted=$(sed -n 's/.*(\([0-9]*\) with a fitting header).*/\1/p' <<<"$LAST")
[ "${trusted:-0}" -ge 3 ] || fail "only ${trusted:-0} bitmap seeds were trusted: $LAST"
exit 0
