#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mirrord configured by a file (-c) and by --export specs: the file's
# [mirrord] settings and exports are used, command-line options win,
# --export options (format, readonly) take effect, and conflicts or
# bad specs are usage errors (exit 2).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires nbdinfo --version

qio () {
  local out
  out=$(qemu-io "$@" 2>&1) && ! grep -qi 'fail' <<<"$out" \
    || { echo "$out" >&2; return 1; }
}

for i in 1 2 3 4; do truncate -s ${i}M "$TESTDIR/d$i.img"; done
qemu-io -f raw -c 'write -P 0x33 0 1M' "$TESTDIR/d3.img" >/dev/null

# Everything from the file, in daemon mode.
cat > "$TESTDIR/all.conf" <<CONF
# a comment
[mirrord]
nbd-socket = $TESTDIR/f.nbd
control = $TESTDIR/f.ctl
state-dir = $TESTDIR/f.state
pid-file = $TESTDIR/f.pid

[export vm1]
path = $TESTDIR/d1.img
format = raw

; another comment
[export vm2]
path = $TESTDIR/d2.img
readonly = true
granularity = 1M
CONF
"$MIRRORD" -c "$TESTDIR/all.conf"
pid=$(cat "$TESTDIR/f.pid")
cleanup_fn "kill $pid 2>/dev/null"
[ -S "$TESTDIR/f.nbd" ] && [ -S "$TESTDIR/f.ctl" ] || fail "sockets from the file unused"
"$MIRRORCTL" -s "$TESTDIR/f.ctl" --json status > "$TESTDIR/f.json"
$PY -c '
import json, sys
ex = {e["name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
assert sorted(ex) == ["vm1", "vm2"], ex
assert ex["vm1"]["size"] == 1 << 20 and ex["vm1"]["readonly"] is False
assert ex["vm2"]["size"] == 2 << 20 and ex["vm2"]["readonly"] is True
assert ex["vm2"]["granularity"] == 1 << 20, ex["vm2"]
assert ex["vm1"]["granularity"] == 65536
assert all(e["from_config"] for e in ex.values())' "$TESTDIR/f.json"
qio -f raw -c 'write -P 1 0 64k' -c 'read -P 1 0 64k' \
  "nbd+unix:///vm1?socket=$TESTDIR/f.nbd" || fail "vm1 from the file"
nbdinfo "nbd+unix:///vm2?socket=$TESTDIR/f.nbd" | grep -q 'is_read_only: true' \
  || fail "vm2 from the file is not read-only"
kill -TERM "$pid"
poll 10 bash -c "! kill -0 $pid"

# The file's exports plus --export specs with options; the command
# line's sockets win over the file's.
start_mirrord c -c "$TESTDIR/all.conf" \
  --export "vm3=$TESTDIR/d3.img,format=raw,readonly" \
  --export "vm4=$TESTDIR/d4.img,format=raw,role=primary,mode=async"
[ ! -e "$TESTDIR/f.nbd" ] || fail "the file's nbd-socket was used over --nbd-socket"
ctl c --json status > "$TESTDIR/c.json"
$PY -c '
import json, sys
ex = {e["name"]: e for e in json.load(open(sys.argv[1]))["exports"]}
assert sorted(ex) == ["vm1", "vm2", "vm3", "vm4"], ex
assert ex["vm1"]["from_config"] and ex["vm2"]["from_config"]
assert not ex["vm3"]["from_config"] and not ex["vm4"]["from_config"]
assert ex["vm3"]["readonly"] is True and ex["vm3"]["writable"] is False
assert ex["vm3"]["format"] == "raw" and ex["vm3"]["size"] == 3 << 20
assert ex["vm4"]["readonly"] is False and ex["vm4"]["role"] == "primary"' "$TESTDIR/c.json"
qio -f raw -r -c 'read -P 0x33 0 1M' "$(uri c vm3)" || fail "vm3 read"
nbdinfo "$(uri c vm3)" | grep -q 'is_read_only: true' || fail "vm3 not read-only"
qio -f raw -c 'write -P 0x44 1M 2M' -c 'read -P 0x44 1M 2M' "$(uri c vm4)" \
  || fail "vm4 read/write"
stop_mirrord c
qio -f raw -r -c 'read -P 0x44 1M 2M' "$TESTDIR/d4.img" || fail "vm4 data not on disk"
qio -f raw -r -c 'read -P 0x33 0 1M' -c 'read -P 0 1M 2M' "$TESTDIR/d3.img" \
  || fail "read-only vm3 changed"

# Usage and config errors: exit 2 with a message naming the problem.
check_usage () {
  local want=$1 out; shift
  out=$("$MIRRORD" -f --nbd-socket "$TESTDIR/u.nbd" --control "$TESTDIR/u.ctl" \
        --state-dir "$TESTDIR/u.state" "$@" 2>&1) && fail "accepted: $*"
  local got=$?
  [ "$got" -eq 2 ] || fail "$*: exit $got, expected 2: $out"
  [[ $out == *"$want"* ]] || fail "$*: message lacks '$want': $out"
}
check_usage "vm1: also defined in $TESTDIR/all.conf" \
  -c "$TESTDIR/all.conf" --export "vm1=$TESTDIR/d3.img"
check_usage "vmdk" --export "vm1=$TESTDIR/d1.img,format=vmdk"
check_usage "role" --export "vm1=$TESTDIR/d1.img,role=leader"
check_usage "unknown export key 'colour'" --export "vm1=$TESTDIR/d1.img,colour=red"
check_usage "is not key=value" --export "vm1=$TESTDIR/d1.img,fast"
check_usage "no path" --export "vm1="
check_usage "granularity" --export "vm1=$TESTDIR/d1.img,granularity=1000"
check_usage "readonly" --export "vm1=$TESTDIR/d1.img,readonly=maybe"

printf '[mirrord]\nbogus-key = 1\n' > "$TESTDIR/b1.conf"
check_usage "$TESTDIR/b1.conf:2:" -c "$TESTDIR/b1.conf"
printf '[export vm1]\npath = %s\n[export vm1]\npath = %s\n' \
  "$TESTDIR/d1.img" "$TESTDIR/d2.img" > "$TESTDIR/b2.conf"
check_usage "$TESTDIR/b2.conf:3: export 'vm1' is defined twice" -c "$TESTDIR/b2.conf"
printf '[export vm1]\nformat = raw\n' > "$TESTDIR/b3.conf"
check_usage "$TESTDIR/b3.conf:1:" -c "$TESTDIR/b3.conf"
printf '[export vm1]\npath = %s\nthis is not ini\n' "$TESTDIR/d1.img" > "$TESTDIR/b4.conf"
check_usage "$TESTDIR/b4.conf:3:" -c "$TESTDIR/b4.conf"
[ ! -e "$TESTDIR/u.ctl" ] || fail "a refused configuration started serving"
exit 0
