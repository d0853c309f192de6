#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# NBD over TCP: --nbd-listen on IPv4 and IPv6 loopback serves clients;
# without TLS any address — loopback too, which every local user can
# reach — is refused (exit 2) unless --insecure, which is logged as a
# warning; a port in use is a runtime error (exit 1).
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires nbdinfo --version

qio () {
  local out
  out=$(qemu-io "$@" 2>&1) && ! grep -qi 'fail' <<<"$out" \
    || { echo "$out" >&2; return 1; }
}
# A free TCP port on FAMILY's loopback (the kernel picks it).
free_port () {
  $PY -c '
import socket, sys
fam, host = (socket.AF_INET6, "::1") if sys.argv[1] == "6" else (socket.AF_INET, "127.0.0.1")
s = socket.socket(fam)
s.bind((host, 0))
print(s.getsockname()[1])' "$1"
}

truncate -s 32M "$TESTDIR/d.img"

# IPv4 loopback.
port=$(free_port 4)
start_mirrord t --export "vm1=$TESTDIR/d.img" --nbd-listen "127.0.0.1:$port" --insecure
qio -f raw -c 'write -P 0x41 1M 1M' -c 'read -P 0x41 1M 1M' \
  "nbd://127.0.0.1:$port/vm1" || fail "qemu-io over IPv4"
nbdinfo "nbd://127.0.0.1:$port/vm1" | grep -q 'export-size: 33554432' \
  || fail "nbdinfo over IPv4"
# The unix socket still serves next to TCP, the same data.
qio -f raw -r -c 'read -P 0x41 1M 1M' "$(uri t vm1)" || fail "unix socket next to TCP"
# The port is bound to loopback only.
if command -v ss >/dev/null; then
  [ "$(ss -Hltn "sport = :$port" | awk '{print $4}')" = "127.0.0.1:$port" ] \
    || fail "listening on: $(ss -Hltn "sport = :$port")"
fi

# A port in use: exit 1, naming the address.  (Another image: d.img
# is locked by the daemon that serves it.)
truncate -s 32M "$TESTDIR/e.img"
out=$("$MIRRORD" -f --export "vm1=$TESTDIR/e.img" --nbd-listen "127.0.0.1:$port" --insecure \
      --nbd-socket "$TESTDIR/b.nbd" --control "$TESTDIR/b.ctl" \
      --state-dir "$TESTDIR/b.state" 2>&1) && fail "a port in use was accepted"
got=$?
[ $got -eq 1 ] || fail "port in use: exit $got: $out"
[[ $out == *"127.0.0.1:$port"*"Address already in use"* ]] || fail "port in use: $out"
stop_mirrord t
# The port is free again once the daemon is gone.
qemu-io -f raw -r -c 'read 0 4k' "nbd://127.0.0.1:$port/vm1" >/dev/null 2>&1 \
  && fail "still serving after exit"

# IPv6 loopback, where the host has it.
if $PY -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
  port6=$(free_port 6)
  start_mirrord t6 --export "vm1=$TESTDIR/d.img" --nbd-listen "[::1]:$port6" --insecure
  qio -f raw -c 'write -P 0x66 2M 1M' -c 'read -P 0x66 2M 1M' \
    "nbd://[::1]:$port6/vm1" || fail "qemu-io over IPv6"
  nbdinfo "nbd://[::1]:$port6/vm1" | grep -q 'export-size: 33554432' \
    || fail "nbdinfo over IPv6"
  stop_mirrord t6
else
  echo "$0: IPv6 loopback unavailable; skipping that part"
fi

# Without --insecure: a usage error saying what to do, for loopback
# as for any other address; nothing is started.
for addr in "127.0.0.1:$port" "[::1]:$port" "0.0.0.0:$port" "[::]:$port"; do
  out=$("$MIRRORD" -f --export "vm1=$TESTDIR/d.img" --nbd-listen "$addr" \
        --nbd-socket "$TESTDIR/n.nbd" --control "$TESTDIR/n.ctl" \
        --state-dir "$TESTDIR/n.state" 2>&1) && fail "$addr accepted without --insecure"
  got=$?
  [ $got -eq 2 ] || fail "$addr: exit $got, expected 2: $out"
  [[ $out == *"--nbd-listen $addr without --tls-psk"*"any local user"*--insecure* ]] \
    || fail "$addr: $out"
done
[ ! -e "$TESTDIR/n.ctl" ] || fail "a refused daemon started"
# The same from the config file.
printf '[mirrord]\nnbd-listen = 0.0.0.0:%s\n' "$port" > "$TESTDIR/tcp.conf"
expect_status 2 "$MIRRORD" -f -c "$TESTDIR/tcp.conf" --nbd-socket "$TESTDIR/n.nbd" \
  --control "$TESTDIR/n.ctl" --state-dir "$TESTDIR/n.state" 2>/dev/null

# With --insecure: served, with a warning in the log.
start_mirrord i --export "vm1=$TESTDIR/d.img" --nbd-listen "0.0.0.0:$port" --insecure
grep -q "warn.*--insecure: serving plaintext NBD on 0.0.0.0:$port" "$TESTDIR/i.log" \
  || fail "no warning: $(cat "$TESTDIR/i.log")"
qio -f raw -r -c 'read -P 0x41 1M 1M' "nbd://127.0.0.1:$port/vm1" \
  || fail "qemu-io over 0.0.0.0"
stop_mirrord i

# insecure = true in the file does the same.
printf '[mirrord]\nnbd-listen = 0.0.0.0:%s\ninsecure = true\n' "$port" > "$TESTDIR/tcp.conf"
start_mirrord f -c "$TESTDIR/tcp.conf" --export "vm1=$TESTDIR/d.img"
grep -q "insecure: serving plaintext NBD on 0.0.0.0:$port" "$TESTDIR/f.log" \
  || fail "no warning from the file's insecure"
nbdinfo "nbd://127.0.0.1:$port/vm1" | grep -q 'export-size: 33554432' \
  || fail "config-file TCP"
stop_mirrord f
exit 0
