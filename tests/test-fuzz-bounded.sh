#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A bounded libFuzzer run of each NBD and bitmap target from its seeds:
# FUZZ_SECONDS each (default 25, so the three stay within CI's budget),
# with a fixed random seed (FUZZ_SEED, default 1) so that a run can be
# repeated: the same seed mutates the same seeds the same way.  Needs
# configure CC=clang --enable-fuzz (run-tests.sh makes that build);
# skipped otherwise.  A crash prints its input (base64): once fixed, add
# it to tests/fuzz/corpus-TARGET/.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
set -u
[ -x "$top_builddir/tests/fuzz/fuzz-bitmap" ] \
  || { echo "$0: test skipped: needs configure CC=clang --enable-fuzz"; exit 77; }

seed=${FUZZ_SEED:-1}
status=0
for target in nbd-handshake nbd-transmission bitmap; do
  mkdir "$TESTDIR/$target"
  rc=0
  "$top_builddir/tests/fuzz/fuzz-$target" -seed="$seed" \
    -max_total_time="${FUZZ_SECONDS:-25}" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$TESTDIR/$target-" \
    "$TESTDIR/$target" "$top_srcdir/tests/fuzz/corpus-$target" \
    > "$TESTDIR/$target.log" 2>&1 || rc=$?
  echo "$target (-seed=$seed): $(grep -E '^stat::number_of_executed_units' "$TESTDIR/$target.log" || :)" \
       "$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9/a-zA-Z]+' "$TESTDIR/$target.log" | tail -1)"
  if [ $rc -ne 0 ]; then
    status=1
    grep -v '^#[0-9]' "$TESTDIR/$target.log" | tail -60
    for a in "$TESTDIR/$target"-*; do
      [ -f "$a" ] || continue
      echo "---- $(basename "$a") (base64):"; base64 -w0 < "$a" | head -c 20000; echo
    done
  fi
done
[ $status -eq 0 ] || fail "libFuzzer found a problem"
exit 0
