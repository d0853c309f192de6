#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Bounded libFuzzer runs of the qcow2 driver from the seed corpora:
# fuzz-qcow2 (open, read, write: FUZZ_SECONDS, default 60) and
# fuzz-qcow2-write (writes into mutated images, checked against a
# model of the guest's data and an independent refcount check:
# FUZZ_WRITE_SECONDS, default 25), each with a fixed random seed
# (FUZZ_SEED, default 1) so that a run can be repeated.  Needs a build
# configured with
# CC=clang --enable-fuzz (run-tests.sh makes one when clang is there);
# skipped otherwise.  A crash prints its input (base64): add it to the
# target's corpus once fixed.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
[ -x "$top_builddir/tests/fuzz/fuzz-qcow2" ] \
  || { echo "$0: test skipped: needs configure CC=clang --enable-fuzz"; exit 77; }

status=0
for t in qcow2:corpus:${FUZZ_SECONDS:-60} qcow2-write:corpus-qcow2-write:${FUZZ_WRITE_SECONDS:-25}; do
  IFS=: read -r target seeds seconds <<<"$t"
  mkdir "$TESTDIR/$target"
  rc=0
  echo "fuzz-$target -seed=${FUZZ_SEED:-1}"
  "$top_builddir/tests/fuzz/fuzz-$target" -seed="${FUZZ_SEED:-1}" \
    -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$TESTDIR/$target-" \
    "$TESTDIR/$target" "$top_srcdir/tests/fuzz/$seeds" > "$TESTDIR/$target.log" 2>&1 || rc=$?
  echo "$target: $(grep -E '^stat::number_of_executed_units' "$TESTDIR/$target.log" || :)" \
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
