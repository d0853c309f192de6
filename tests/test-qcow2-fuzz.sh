#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A bounded libFuzzer run of the qcow2 driver (FUZZ_SECONDS, default
# 60), from the seed corpus, with a fixed random seed (FUZZ_SEED,
# default 1) so that a run can be repeated.  Needs a build configured with
# CC=clang --enable-fuzz (run-tests.sh makes one when clang is there);
# skipped otherwise.  A crash leaves its input in the test directory's
# log: add it to tests/fuzz/corpus once fixed.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
fuzz=$top_builddir/tests/fuzz/fuzz-qcow2
[ -x "$fuzz" ] || { echo "$0: test skipped: needs configure CC=clang --enable-fuzz"; exit 77; }
mkdir "$TESTDIR/corpus"
status=0
echo "fuzz-qcow2 -seed=${FUZZ_SEED:-1}"
"$fuzz" -seed="${FUZZ_SEED:-1}" -max_total_time="${FUZZ_SECONDS:-60}" \
  -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$TESTDIR/" \
  "$TESTDIR/corpus" "$top_srcdir/tests/fuzz/corpus" > "$TESTDIR/fuzz.log" 2>&1 || status=$?
grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|Done )' "$TESTDIR/fuzz.log" || :
if [ $status -ne 0 ]; then
  grep -v '^#[0-9]' "$TESTDIR/fuzz.log" | tail -60
  for a in "$TESTDIR"/crash-* "$TESTDIR"/leak-* "$TESTDIR"/timeout-* "$TESTDIR"/oom-*; do
    [ -f "$a" ] || continue
    echo "---- $(basename "$a") (base64):"; base64 -w0 < "$a" | head -c 20000; echo
  done
  fail "libFuzzer found a problem (exit $status)"
fi
exit 0
