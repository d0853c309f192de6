#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A mirror to itself is refused at once (exit 1, a message saying so)
# and writes nothing, however the export is reached: its unix socket,
# its TCP address, "localhost", a proxy (nbdkit's nbd plugin), a
# 0.0.0.0 listener reached through 127.0.0.1 (in a network namespace
# of its own).  The mirror recognises its own export by the instance id
# in the target's NBD description (docs/mirror.md).  A mirror to
# another export of the same daemon is still a mirror, and converges.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires qemu-img --version
requires nbdkit nbd --version
requires unshare -n true
requires ip -V

truncate -s 16M "$TESTDIR/d1.img" "$TESTDIR/d2.img"
qemu-io -f raw -c 'write -P 0x5a 0 3M' -c 'write -P 0x5b 9M 1M' "$TESTDIR/d1.img" >/dev/null
start_mirrord_tcp s --insecure --export "vm1=$TESTDIR/d1.img" --export "vm2=$TESTDIR/d2.img"
sums () { md5sum "$TESTDIR/d1.img" "$TESTDIR/d2.img" | cut -d' ' -f1 | xargs; }
before=$(sums)

# self_refused NAME EXPORT URI: mirror start exits 1 within 5 s, saying
# the target is the export itself; the job is left failed.
self_refused () {
  local t0 out status=0
  t0=$(date +%s%N)
  out=$(timeout 30 "$MIRRORCTL" -s "$TESTDIR/$1.ctl" mirror start "$2" "$3" 2>&1) || status=$?
  [ "$status" -eq 1 ] || fail "mirror start $2 $3: exit $status: $out"
  [[ $out == *"target is export $2 itself"* ]] || fail "mirror start $2 $3: $out"
  (( $(date +%s%N) - t0 < 5000000000 )) || fail "mirror start $2 $3 took too long"
  ctl "$1" --json status "$2" | $PY -c '
import json, sys
m = json.load(sys.stdin)["exports"][0]["mirror"]
assert m["state"] == "failed" and "itself" in m["error"], m'
}

self_refused s vm1 "$(uri s vm1)"
self_refused s vm1 "nbd://127.0.0.1:$PORT/vm1"
self_refused s vm1 "nbd://localhost:$PORT/vm1"
nbdkit -U "$TESTDIR/proxy.sock" -P "$TESTDIR/proxy.pid" nbd \
  socket="$TESTDIR/s.nbd" export=vm1
cleanup_fn 'kill "$(cat "$TESTDIR/proxy.pid")" 2>/dev/null'
self_refused s vm1 "nbd+unix:///?socket=$TESTDIR/proxy.sock"
[ "$(sums)" = "$before" ] || fail "a refused mirror wrote"

# Another export of the same daemon is another disk: that mirror runs.
ctl s mirror start vm1 "$(uri s vm2)" >/dev/null
ctl s mirror wait vm1 --until ready --timeout 60 || fail "vm1 -> vm2 not ready"
qemu-img compare -f raw -F raw "$(uri s vm1)" "$(uri s vm2)" || fail "vm2 differs"
ctl s mirror cancel vm1 >/dev/null

# A daemon listening on 0.0.0.0 in a namespace of its own, reached
# through 127.0.0.1.
cat > "$TESTDIR/lo-up" <<'SH'
#!/bin/sh
ip link set lo up && exec "$@"
SH
chmod +x "$TESTDIR/lo-up"
truncate -s 16M "$TESTDIR/n1.img"
MIRRORD_WRAPPER="unshare -n $TESTDIR/lo-up" \
  start_mirrord n --nbd-listen 0.0.0.0:10809 --insecure --export "vm1=$TESTDIR/n1.img"
self_refused n vm1 "nbd://127.0.0.1:10809/vm1"
self_refused n vm1 "nbd://127.1.2.3:10809/vm1"
stop_mirrord n
stop_mirrord s
exit 0
