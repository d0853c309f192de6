#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# TLS-PSK on the NBD server (SPEC §3, §6.7): with --tls-psk every TCP
# client must use TLS; libnbd and qemu clients with the key read and
# write; a plaintext client is told TLS is required; a wrong key or an
# unknown user is refused, logged with the peer, and the daemon goes
# on serving; the unix socket stays plaintext (STARTTLS optional);
# key-file errors exit 2 naming the file and line.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires nbdinfo --version
requires qemu-io --version
requires qemu-img --version

mkdir "$TESTDIR/keys" "$TESTDIR/wrong" "$TESTDIR/bob"
make_psk "$TESTDIR/keys/keys.psk" alice
make_psk "$TESTDIR/keys/keys.psk" carol
make_psk "$TESTDIR/wrong/keys.psk" alice      # same user, another key
make_psk "$TESTDIR/bob/keys.psk" bob          # a user the server lacks
KEYS=$TESTDIR/keys/keys.psk
truncate -s 64M "$TESTDIR/d.img"

start_mirrord_tcp t -v --export "vm1=$TESTDIR/d.img" --tls-psk "$KEYS"
TLS_URI="nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$KEYS"
grep -q "TLS-PSK: 2 keys from $KEYS" "$TESTDIR/t.log" || fail "no TLS line in the log"

# libnbd with the key.
out=$(nbdinfo "$TLS_URI") || fail "nbdinfo over TLS: $out"
grep -q 'newstyle-fixed with TLS' <<<"$out" || fail "not TLS: $out"
grep -q 'export-size: 67108864' <<<"$out" || fail "nbdinfo: $out"
grep -q "127.0.0.1:[0-9]*: TLS up, PSK user 'alice'" "$TESTDIR/t.log" \
  || fail "username not recorded: $(cat "$TESTDIR/t.log")"

# qemu as a TLS client: its tls-creds-psk reads DIR/keys.psk.
qtls () {
  local dir=$1 user=$2; shift 2
  "$@" --object "tls-creds-psk,id=tls0,dir=$dir,endpoint=client,username=$user" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=vm1,tls-creds=tls0"
}
out=$(qtls "$TESTDIR/keys" alice qemu-io -c 'write -P 0x5a 1M 3M' \
        -c 'write -z 8M 1M' -c 'read -P 0x5a 1M 3M' 2>&1) \
  && ! grep -qi fail <<<"$out" || fail "qemu-io over TLS: $out"
qemu-io -f raw -c 'write -P 0x77 20M 2M' "$(uri t vm1)" >/dev/null
out=$(qtls "$TESTDIR/keys" carol qemu-io -r -c 'read -P 0x77 20M 2M' 2>&1) \
  && ! grep -qi fail <<<"$out" || fail "qemu-io as carol: $out"
qemu-img compare --object "tls-creds-psk,id=tls0,dir=$TESTDIR/keys,endpoint=client,username=alice" \
  --image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=vm1,tls-creds=tls0" \
  --image-opts "driver=file,filename=$TESTDIR/d.img" || fail "qemu-img compare over TLS"

# Plaintext TCP: every option but STARTTLS/ABORT gets ERR_TLS_REQD.
out=$(LIBNBD_DEBUG=1 nbdinfo "nbd://127.0.0.1:$PORT/vm1" 2>&1) \
  && fail "plaintext client served: $out"
grep -q 'server error message: TLS is required' <<<"$out" \
  || fail "no TLS-required error: $out"
out=$(qemu-img info "nbd://127.0.0.1:$PORT/vm1" 2>&1) && fail "qemu-img plaintext: $out"
grep -q 'TLS negotiation required' <<<"$out" || fail "qemu-img: $out"
# EXPORT_NAME cannot be refused: the connection is closed.
$PY - "$PORT" <<'PY'
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return b
        b += c
    return b
assert len(recv(18)) == 18
s.sendall(struct.pack(">I", 3))                           # fixed newstyle, no zeroes
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 3) + b"vm1")  # EXPORT_NAME
assert recv(1) == b"", "EXPORT_NAME without TLS was answered"
PY

# A wrong key, an unknown user: refused and logged with the peer; the
# daemon keeps serving.
out=$(qtls "$TESTDIR/wrong" alice qemu-io -r -c 'read 0 4k' 2>&1) && fail "wrong key accepted: $out"
grep -qi 'TLS' <<<"$out" || fail "wrong key: $out"
out=$(nbdinfo "nbds://bob@127.0.0.1:$PORT/vm1?tls-psk-file=$TESTDIR/bob/keys.psk" 2>&1) \
  && fail "unknown user accepted: $out"
poll 10 grep -q "127.0.0.1:[0-9]*: TLS handshake failed" "$TESTDIR/t.log" \
  || fail "no handshake failure logged"
grep -q "127.0.0.1:[0-9]*: TLS-PSK: unknown username 'bob'" "$TESTDIR/t.log" \
  || fail "unknown user not logged"
nbdinfo "$TLS_URI" >/dev/null || fail "not serving after refused clients"

# The unix socket: plaintext for the local hypervisor, TLS if asked.
out=$(qemu-io -f raw -r -c 'read -P 0x5a 1M 3M' "$(uri t vm1)" 2>&1) \
  && ! grep -qi fail <<<"$out" || fail "unix socket plaintext: $out"
out=$(nbdinfo "nbds+unix://alice@/vm1?socket=$TESTDIR/t.nbd&tls-psk-file=$KEYS") \
  || fail "STARTTLS on the unix socket"
grep -q 'with TLS' <<<"$out" || fail "unix socket TLS: $out"

# Pipelined writes and reads of random data over several TLS
# connections (nbdcopy uses multi-conn): records split and gnutls
# buffering exercised; the bytes arrive intact.
if command -v nbdcopy >/dev/null; then
  head -c 48M /dev/urandom > "$TESTDIR/random.img"
  truncate -s 64M "$TESTDIR/random.img"
  nbdcopy "$TESTDIR/random.img" "$TLS_URI" || fail "nbdcopy to TLS"
  nbdcopy "$TLS_URI" "$TESTDIR/back.img" || fail "nbdcopy from TLS"
  cmp "$TESTDIR/random.img" "$TESTDIR/back.img" || fail "data changed over TLS"
  cmp "$TESTDIR/random.img" "$TESTDIR/d.img" || fail "image differs from what was sent"
fi

stop_mirrord t

# Without --tls-psk, STARTTLS is refused (NOTLS mode).
start_mirrord n --export "vm1=$TESTDIR/d.img"
nbdinfo "nbds+unix://alice@/vm1?socket=$TESTDIR/n.nbd&tls-psk-file=$KEYS" >/dev/null 2>&1 \
  && fail "TLS without --tls-psk"
nbdinfo "$(uri n vm1)" >/dev/null || fail "plaintext without --tls-psk"
stop_mirrord n

# With keys, any address may listen, without --insecure and its warning.
TCP_HOST=0.0.0.0 start_mirrord_tcp a --export "vm1=$TESTDIR/d.img" --tls-psk "$KEYS"
grep -q 'insecure' "$TESTDIR/a.log" && fail "warned about plaintext"
nbdinfo "nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$KEYS" >/dev/null \
  || fail "TLS on 0.0.0.0"
stop_mirrord a
# The config file's tls-psk does the same.
printf '[mirrord]\ntls-psk = %s\n' "$KEYS" > "$TESTDIR/tls.conf"
start_mirrord_tcp f -c "$TESTDIR/tls.conf" --export "vm1=$TESTDIR/d.img"
nbdinfo "nbds://alice@127.0.0.1:$PORT/vm1?tls-psk-file=$KEYS" >/dev/null \
  || fail "tls-psk from the config file"
nbdinfo "nbd://127.0.0.1:$PORT/vm1" >/dev/null 2>&1 && fail "config tls-psk: plaintext served"
stop_mirrord f

# Key-file errors: exit 2, naming the file (and line).
key_error () {
  local want=$1 out; shift
  out=$("$MIRRORD" -f --export "vm1=$TESTDIR/d.img" --nbd-socket "$TESTDIR/x.nbd" \
        --control "$TESTDIR/x.ctl" --state-dir "$TESTDIR/x.state" "$@" 2>&1) \
    && fail "accepted: $*"
  [ $? -eq 2 ] || fail "$*: exit not 2: $out"
  [[ $out == *"$want"* ]] || fail "$*: '$out' lacks '$want'"
}
key_error "$TESTDIR/none.psk: No such file" --tls-psk "$TESTDIR/none.psk"
: > "$TESTDIR/empty.psk"
key_error "$TESTDIR/empty.psk: the key file is empty" --tls-psk "$TESTDIR/empty.psk"
printf 'alice:00ff\nbob 1234\n' > "$TESTDIR/bad.psk"
key_error "$TESTDIR/bad.psk:2: expected USERNAME:HEXKEY" --tls-psk "$TESTDIR/bad.psk"
printf 'alice:0g\n' > "$TESTDIR/bad.psk"
key_error "$TESTDIR/bad.psk:1: key for 'alice' is not hexadecimal" --tls-psk "$TESTDIR/bad.psk"
[ ! -e "$TESTDIR/x.ctl" ] || fail "a daemon started with a bad key file"
exit 0
