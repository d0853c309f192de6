#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A peer that accepts NBD_OPT_STARTTLS and then never answers the TLS
# ClientHello (as a peer mirrord whose loop is busy does) must not stop
# this mirrord.  libnbd 1.14 does not return from nbd_aio_notify_read()
# while its TLS handshake waits: it calls gnutls_handshake() again at
# once until gnutls' 40 s handshake timeout.  On the event loop that
# held the whole daemon for 40 s at its first heartbeat, and two
# mirrords handshaking with each other at once both stood still for
# 40 s (docs/ha.md, "The 40 s stall over TLS").  The handshake now runs
# on a worker thread (mirrord/tls-worker.h): the daemon answers its
# control socket throughout, no callback holds its loop for a second
# (its stall report), and its heartbeats go on, each to a new
# connection, though none completes.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

make_psk "$TESTDIR/keys.psk" pair
truncate -s 16M "$TESTDIR/a.img"
# The silent peer: the NBD greeting, the STARTTLS acknowledgment, then
# nothing.  It counts its connections, and ClientHellos received.
cat > "$TESTDIR/silent.py" <<'EOF'
import socket, struct, sys, threading
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
open(sys.argv[1] + ".tmp", "w").write(str(ls.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
held, lock, hellos = [], threading.Lock(), [0]
def serve(c):
    try:
        c.sendall(b"NBDMAGIC" + b"IHAVEOPT" + struct.pack(">H", 3))
        c.recv(4)                                   # client flags
        opt = b""
        while len(opt) < 16:
            d = c.recv(16 - len(opt))
            if not d:
                return
            opt += d
        if struct.unpack(">QII", opt)[1] != 5:      # not STARTTLS
            return
        c.sendall(struct.pack(">QIII", 0x3e889045565a9, 5, 1, 0))
        if c.recv(1):                               # the ClientHello
            with lock:
                hellos[0] += 1
                open(sys.argv[2], "w").write(str(hellos[0]))
        held.append(c)                              # never answered
    except OSError:
        pass
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
$PY "$TESTDIR/silent.py" "$TESTDIR/port" "$TESTDIR/hellos" &
silent=$!
cleanup_fn "kill $silent 2>/dev/null"
poll 10 test -s "$TESTDIR/port" || fail "the silent peer did not start"

start_mirrord a --tls-psk "$TESTDIR/keys.psk" \
  --export "vm1=$TESTDIR/a.img,role=primary,peer=nbds://pair@127.0.0.1:$(cat "$TESTDIR/port")/vm1,peer-timeout=2,mode=sync"
hellos () { cat "$TESTDIR/hellos" 2>/dev/null || echo 0; }
hello_seen () { [ "$(hellos)" -ge 1 ]; }
poll 10 hello_seen || fail "mirrord never sent a ClientHello"
# Its handshake is waiting now: the daemon must still answer at once,
# for 3 s, while its heartbeats keep trying.
t_end=$(( $(date +%s%N) + 3000000000 ))
worst=0
while (( $(date +%s%N) < t_end )); do
  t0=$(date +%s%N)
  timeout 5 "$MIRRORCTL" -s "$TESTDIR/a.ctl" status vm1 >/dev/null \
    || fail "mirrord did not answer its control socket in 5 s (the loop is held)"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ $ms -le $worst ] || worst=$ms
  sleep 0.1
done
echo "slowest status answer during the silent handshakes: $worst ms; ClientHellos: $(hellos)"
[ "$(hellos)" -ge 2 ] || fail "the heartbeats stopped after the first handshake ($(hellos))"
# The daemon's own measure (a client's start-up under ASan and load can
# take a second by itself): no callback held the loop for 1 s.
grep -q "event loop held" "$TESTDIR/a.log" && fail "the loop was held: $(grep 'event loop held' "$TESTDIR/a.log")"
[ "$(ctl a --json status vm1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["peer"]["connected"])')" = False ] \
  || fail "a peer that never finished a handshake counts as connected"
stop_mirrord a
exit 0
