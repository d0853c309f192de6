#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Errors that tell the truth: a refusal carries its errno as a code but
# not the errno's text ("export nosuch not found", not "...: No such
# file or directory"); a system call's failure keeps it; mirrorctl
# --json prints every failure as a JSON document on stdout with the
# exit code unchanged; a zero-byte image is refused, at start-up and by
# export add; a config file with several errors reports each at its
# own line with its own message.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires python3 -c 'import json'

truncate -s 1M "$TESTDIR/a.img"
: > "$TESTDIR/empty.img"
start_mirrord m --export "a=$TESTDIR/a.img"

# refused EXPECTED-TEXT MIRRORCTL-ARGS...: exit 1, EXPECTED on stderr,
# no errno text after it.
refused () {
  local want=$1 out st=0; shift
  out=$(ctl m "$@" 2>&1) || st=$?
  [ $st -eq 1 ] || fail "mirrorctl $*: exit $st, expected 1: $out"
  [ "$out" = "mirrorctl: $want" ] || fail "mirrorctl $*: '$out', expected 'mirrorctl: $want'"
}
refused "export nosuch not found" status nosuch
refused "export a has no active mirror" mirror cancel a
refused "export a has no active mirror" mirror cutover a
refused "export a has no peer (no HA pair)" promote a
refused "export a already exists" export add a "$TESTDIR/a.img"
refused "export nosuch not found" export remove nosuch
refused "export e: $TESTDIR/empty.img is empty (0 bytes): give the image a size first (qemu-img create, or truncate -s)" \
  export add e "$TESTDIR/empty.img"
# A real system call failure keeps its text.
out=$(ctl m export add g "$TESTDIR/gone.img" 2>&1) && fail "gone.img added"
[[ $out == *"gone.img: No such file or directory" ]] || fail "missing image: $out"

# --json: the failure as a document, the exit code kept.
json_error () {
  local code=$1 errno=$2 want=$3 out st=0; shift 3
  out=$("$@" 2>/dev/null) || st=$?
  [ $st -eq "$code" ] || fail "$*: exit $st, expected $code"
  OUT=$out python3 -c '
import json, os, sys
code, errno, want = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
e = json.loads(os.environ["OUT"])["error"]
assert e["code"] == code and e["errno"] == errno and e["message"] == want, e
' "$code" "$errno" "$want" || fail "$*: stdout: $out"
}
json_error 1 2 "export nosuch not found" ctl m --json status nosuch
json_error 1 22 "export a has no active mirror" ctl m mirror cancel a --json
json_error 2 0 "unknown command 'bogus'" ctl m --json bogus
json_error 3 0 "cannot connect to mirrord control socket $TESTDIR/none.ctl: No such file or directory" \
  "$MIRRORCTL" -s "$TESTDIR/none.ctl" --json status
# Success prints the result, not an error document.
ctl m --json status a | python3 -c 'import json,sys; assert "error" not in json.load(sys.stdin)' \
  || fail "--json status"

# A zero-byte image at start-up: exit 1, with the reason.
out=$("$MIRRORD" -f --nbd-socket "$TESTDIR/z.nbd" --control "$TESTDIR/z.ctl" \
      --state-dir "$TESTDIR/z.state" --export "e=$TESTDIR/empty.img" 2>&1) \
  && fail "an empty image was served"
[[ $out == *"export e: $TESTDIR/empty.img is empty (0 bytes)"* ]] || fail "empty image: $out"

# Several errors in a file: each line with its own message, in order.
cat > "$TESTDIR/bad.conf" <<CONF
[mirrord]
bogus = 1
[export vm1]
path = $TESTDIR/a.img
colour = red
this is not ini
format = qcow3
[export vm1]
path = $TESTDIR/a.img
[nope]
k = v
CONF
st=0
out=$("$MIRRORD" -f -c "$TESTDIR/bad.conf" 2>&1) || st=$?
[ $st -eq 2 ] || fail "bad.conf: exit $st: $out"
f=$TESTDIR/bad.conf
want="mirrord: $f:2: unknown key 'bogus' in [mirrord]
mirrord: $f:5: unknown export key 'colour' (expected path, format, role, peer, mode, granularity, bandwidth, readonly, cache, bitmap, bitmap-strict, bitmap-extent, max-lag, fence-peer, peer-timeout or peer-user)
mirrord: $f:6: syntax error (expected [section], key = value, or a ; or # comment)
mirrord: $f:7: format: unknown format 'qcow3' (expected raw, qcow2 or auto)
mirrord: $f:8: export 'vm1' is defined twice
mirrord: $f:11: unknown section [nope] (expected [mirrord] or [export NAME])"
[ "$out" = "$want" ] || fail "bad.conf reported as:
$out
expected:
$want"
# Exports that fail validation are each reported at their section.
printf '[export a]\nformat = raw\n[export b]\npath = %s\ngranularity = 1000\n' \
  "$TESTDIR/a.img" > "$TESTDIR/v.conf"
out=$("$MIRRORD" -f -c "$TESTDIR/v.conf" 2>&1) && fail "v.conf accepted"
grep -q "v.conf:1: export a: no path given" <<<"$out" || fail "v.conf: $out"
grep -q "v.conf:3: export b: granularity 1000" <<<"$out" || fail "v.conf: $out"
exit 0
