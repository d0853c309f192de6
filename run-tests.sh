#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds with warnings as errors, runs the unit and integration
# tests (the end-to-end ones with a real guest too), then runs them all
# again, but the end-to-end ones, on an ASan+UBSan build.
#
#   ./run-tests.sh            everything
#   ./run-tests.sh quick      the optimised build only
set -euo pipefail
srcdir=$(cd "$(dirname "$0")" && pwd)
cd "$srcdir"

tests/setup.sh deps
status=0

run_suite () {
  local dir=$1; shift
  tests/setup.sh build "$dir" "$@"
  echo "==> make check (in $dir)"
  if ! make -C "$dir" -j"$(nproc)" check; then
    status=1
    # Show each failed test's log: CI output is all a reader gets.
    for log in $(grep -l '^FAIL\|^ERROR' "$dir"/tests/*.log "$dir"/tests/unit/*.log 2>/dev/null); do
      echo "---- $log"; tail -60 "$log"
    done
  fi
}

run_suite build --enable-werror CFLAGS="-O2 -g"
if [ "${1:-}" != quick ]; then
  # The end-to-end tests (a TCG guest, tests/e2e-tests.am) ran in the
  # plain build; under ASan they would spend the guests' minutes again
  # on daemon paths the block-level tests already run there.
  MIRRORD_SKIP_E2E=1 run_suite build-asan --enable-werror --enable-sanitizers CFLAGS="-O1 -g"
  # libFuzzer (clang): bounded runs of the fuzz targets (qcow2 60 s,
  # qcow2-write, NBD handshake, NBD transmission, bitmap 25 s each) and their
  # corpus replays; the rest of the suite ran above.
  if command -v clang >/dev/null; then
    tests/setup.sh build build-fuzz CC=clang --enable-fuzz CFLAGS="-O1 -g"
    echo "==> make check (fuzz tests, in build-fuzz)"
    if ! make -C build-fuzz check \
        TESTS="tests/test-qcow2-fuzz.sh tests/test-qcow2-fuzz-corpus.sh
               tests/test-fuzz-bounded.sh tests/test-fuzz-corpus.sh"; then
      status=1
      for log in build-fuzz/tests/test-qcow2-fuzz*.log build-fuzz/tests/test-fuzz-*.log; do
        echo "---- $log"; tail -60 "$log"
      done
    fi
  fi
fi
# One closing line over both builds, in the form CI reads.
passed=0 failed=0 skipped=0
for log in build/test-suite.log build-asan/test-suite.log build-fuzz/test-suite.log; do
  [ -f "$log" ] || continue
  read -r p f e s < <(awk '/^# PASS:/{p=$3} /^# FAIL:/{f=$3} /^# ERROR:/{e=$3}
                           /^# SKIP:/{s=$3} END{print p+0, f+0, e+0, s+0}' "$log")
  passed=$((passed + p)); failed=$((failed + f + e)); skipped=$((skipped + s))
done
[ $failed -eq 0 ] || status=1
if [ $status -eq 0 ]; then echo "==> all test suites passed"; else echo "==> FAILURES"; fi
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
