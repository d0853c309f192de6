#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# kill -9 during write loads, four cycles, on a plain qcow2 half full of
# data and on an overlay (4K clusters) over a compressed qcow2 backing
# file.  A libnbd writer logs every request and every acknowledged
# FLUSH and FUA write; after each crash qemu-img check may find leaked
# clusters (exit 3) but never corruption (exit 2), and after a restart
# every block holds its last durable version or a later one, never
# anything else.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "$top_srcdir/tests/qcow2-functions.sh"
cd "$TESTDIR"
seed=${QCOW2_TEST_SEED:-$RANDOM}
echo "seed $seed (QCOW2_TEST_SEED=$seed to repeat)"
RANDOM=$seed

qemu-img create -q -f qcow2 plain.qcow2 128M
qio plain.qcow2 'write -P 0x77 0 64M'
truncate -s 64M b.raw
qemu-io -f raw -c 'write -P 0x66 0 48M' b.raw >/dev/null
qemu-img convert -c -O qcow2 b.raw base.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 ovl.qcow2 64M
for i in plain ovl; do qemu-img convert -f qcow2 -O raw $i.qcow2 $i.initial.raw; done

exports=(--export "plain=$TESTDIR/plain.qcow2,format=qcow2"
         --export "ovl=$TESTDIR/ovl.qcow2,format=qcow2")
flushes () { cat "$@" 2>/dev/null | grep -c '^F' || :; }
for cycle in 1 2 3 4; do
  start_mirrord a "${exports[@]}"
  if [ $cycle -gt 1 ]; then
    for i in plain ovl; do
      $PY "$top_srcdir/tests/qcow2crash.py" verify "$(uri a $i)" $i.initial.raw $i.log.* \
        || fail "$i: after crash $((cycle - 1)), durable data lost (seed $seed)"
    done
  fi
  pids=()
  for i in plain ovl; do
    $PY "$top_srcdir/tests/qcow2crash.py" write "$(uri a $i)" $i.log.$cycle $cycle \
      $((seed * 10 + cycle)) &
    pids+=($!)
    cleanup_fn "kill $! 2>/dev/null"
  done
  # Kill after a random number of flushes (10 to 60 on each).
  want=$((10 + RANDOM % 50))
  enough () { [ "$(flushes plain.log.$cycle)" -ge $want ] && [ "$(flushes ovl.log.$cycle)" -ge $want ]; }
  poll 40 enough || fail "cycle $cycle: the writers did not get $want flushes through"
  kill9_mirrord a
  wait "${pids[@]}" || fail "a writer failed"
  for i in plain ovl; do
    echo "cycle $cycle: $i: $(grep -c '^[WZ]' $i.log.$cycle) requests, $(flushes $i.log.$cycle) flushes"
    check_no_corruption $i.qcow2
  done
done

start_mirrord a "${exports[@]}"
for i in plain ovl; do
  $PY "$top_srcdir/tests/qcow2crash.py" verify "$(uri a $i)" $i.initial.raw $i.log.* \
    || fail "$i: after the last crash, durable data lost (seed $seed)"
done
stop_mirrord a
for i in plain ovl; do check_no_corruption $i.qcow2; done
qemu-img compare -q -f raw -F qcow2 b.raw base.qcow2 || fail "the backing file changed"
exit 0
