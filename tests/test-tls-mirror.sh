#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Mirroring over TLS-PSK (SPEC §3, §6.7): to a qemu-nbd TLS target via
# nbds://, written to during the copy, then cut over: identical.
# mirrord to mirrord over TLS on TCP, and over STARTTLS on the unix
# socket (nbds+unix).  A target refusing our key, a plaintext nbd://
# URI to a TLS-only server and nbds:// without --tls-psk are refused
# by `mirror start` with a message saying why.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-nbd --version
requires qemu-io --version
requires qemu-img --version

mkdir "$TESTDIR/keys" "$TESTDIR/wrong"
make_psk "$TESTDIR/keys/keys.psk" alice
make_psk "$TESTDIR/keys/keys.psk" bob
make_psk "$TESTDIR/wrong/keys.psk" alice
KEYS=$TESTDIR/keys/keys.psk
for i in 1 2 3; do
  truncate -s 64M "$TESTDIR/src$i.img" "$TESTDIR/dst$i.img"
  qemu-io -f raw -c "write -P 0x1$i 0 4M" -c "write -P 0x2$i 40M 1M" \
    "$TESTDIR/src$i.img" >/dev/null
done

# qemu-nbd NAME KEYDIR IMAGE: a TLS-only qemu-nbd on a free port, left
# in $QPORT (another port if it was taken meanwhile).
qemu_nbd_tls () {
  local name=$1 dir=$2 img=$3 try
  for try in 1 2 3 4 5; do
    QPORT=$(free_port)
    rm -f "$TESTDIR/$name.pid"
    qemu-nbd --object "tls-creds-psk,id=tls0,endpoint=server,dir=$dir" \
      --tls-creds tls0 -f raw -x vm1 -b 127.0.0.1 -p "$QPORT" -t \
      --pid-file "$TESTDIR/$name.pid" "$img" 2>"$TESTDIR/$name.log" &
    local pid=$!
    cleanup_fn "kill $pid 2>/dev/null"
    if poll 10 bash -c "test -s '$TESTDIR/$name.pid' || ! kill -0 $pid" \
       && kill -0 "$pid" 2>/dev/null; then
      return 0
    fi
    grep -q 'Address already in use' "$TESTDIR/$name.log" || break
  done
  cat "$TESTDIR/$name.log" >&2
  fail "qemu-nbd $name did not start"
}

# mirror_refused NAME EXPORT URI WANT: mirror start exits 1 saying WANT.
mirror_refused () {
  local out
  out=$(ctl "$1" mirror start "$2" "$3" 2>&1) && fail "mirror to $3 started: $out"
  [[ $out == *"$4"* ]] || fail "mirror to $3: '$out' lacks '$4'"
}

start_mirrord a --export "vm1=$TESTDIR/src1.img" --export "vm2=$TESTDIR/src2.img" \
  --export "vm3=$TESTDIR/src3.img" --tls-psk "$KEYS"

# A target that does not know our key.
truncate -s 64M "$TESTDIR/unused.img"
qemu_nbd_tls wrong "$TESTDIR/wrong" "$TESTDIR/unused.img"
mirror_refused a vm3 "nbds://127.0.0.1:$QPORT/vm1" \
  "TLS-PSK handshake failed: the target refused the key of user 'alice'"
# Our file lacks the user the URI names.
mirror_refused a vm3 "nbds://127.0.0.1:$QPORT/vm1?tls-username=zoe" \
  "username zoe was not found"

# To qemu-nbd over TLS; the file's first user (alice) by default.
qemu_nbd_tls q "$TESTDIR/keys" "$TESTDIR/dst1.img"
DST=nbds://127.0.0.1:$QPORT/vm1
qemu-io -f raw -c 'write -P 0x44 8M 4M' "$(uri a vm1)" >/dev/null &
writer=$!
ctl a mirror start vm1 "$DST" --mode async
wait $writer
ctl a mirror wait vm1 --until ready --timeout 30
qemu-io -f raw -c 'write -P 0x55 50M 1M' "$(uri a vm1)" >/dev/null
ctl a mirror cutover vm1 --timeout 30
qemu-img compare -f raw -F raw "$TESTDIR/src1.img" "$TESTDIR/dst1.img" \
  || fail "qemu-nbd target differs after cut-over"

# mirrord to mirrord: TLS on TCP, as user bob from the URI.
start_mirrord_tcp b --export "vm1=$TESTDIR/dst2.img" \
  --export "vm3=$TESTDIR/dst3.img" --tls-psk "$KEYS" -v
# A plaintext URI to a TLS-only server.
mirror_refused a vm2 "nbd://127.0.0.1:$PORT/vm1" "server requires TLS"
ctl a mirror start vm2 "nbds://bob@127.0.0.1:$PORT/vm1" --mode sync
ctl a mirror wait vm2 --until ready --timeout 30
grep -q "TLS up, PSK user 'bob'" "$TESTDIR/b.log" || fail "not bob over TLS"
qemu-io -f raw -c 'write -P 0x66 30M 2M' "$(uri a vm2)" >/dev/null
ctl a mirror cutover vm2 --timeout 30
# STARTTLS on the unix socket: nbds+unix.
ctl a mirror start vm3 "nbds+unix:///vm3?socket=$TESTDIR/b.nbd" --mode async
ctl a mirror wait vm3 --until ready --timeout 30
ctl a mirror cutover vm3 --timeout 30
stop_mirrord b
qemu-img compare -f raw -F raw "$TESTDIR/src2.img" "$TESTDIR/dst2.img" \
  || fail "mirrord TCP target differs"
qemu-img compare -f raw -F raw "$TESTDIR/src3.img" "$TESTDIR/dst3.img" \
  || fail "mirrord unix TLS target differs"
stop_mirrord a

# nbds:// needs --tls-psk.
start_mirrord c --export "vm1=$TESTDIR/src1.img"
mirror_refused c vm1 "nbds://127.0.0.1:$QPORT/vm1" "needs mirrord --tls-psk"
stop_mirrord c
exit 0
