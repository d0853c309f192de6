#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Hostile TLS traffic harms only its own connection: FORCEDTLS answers
# every option before STARTTLS with ERR_TLS_REQD; garbage instead of a
# ClientHello, plaintext smuggled in behind STARTTLS, a forged record
# once TLS is up each close that connection (logged with the peer); a
# stalled handshake neither blocks other clients nor outlives the
# negotiation timeout.  The daemon serves throughout and exits 0.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires $PY -c 'import nbd'

make_psk "$TESTDIR/keys.psk" alice
truncate -s 16M "$TESTDIR/d.img"
printf '[mirrord]\nhandshake-timeout = 1\n' > "$TESTDIR/t.conf"
start_mirrord_tcp t -c "$TESTDIR/t.conf" --export "vm1=$TESTDIR/d.img" \
  --tls-psk "$TESTDIR/keys.psk"

timeout 60 $PY - "$PORT" "$TESTDIR/keys.psk" <<'PY'
import os, socket, struct, sys, threading, time
import nbd
from nbdtest import *

port, keys = int(sys.argv[1]), sys.argv[2]
addr = ("127.0.0.1", port)

def tls_uri(p):
    return "nbds://alice@127.0.0.1:%d/vm1?tls-psk-file=%s" % (p, keys)

def client():
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)
    return h

def served():
    h = client()
    h.connect_uri(tls_uri(port))
    assert h.pread(4096, 0) == bytes(4096)
    h.shutdown()

# FORCEDTLS: nothing but STARTTLS and ABORT before TLS.
r = Raw(addr)
r.start()
for opt, data in ((OPT_LIST, b""), (OPT_INFO, Raw.info_data("vm1")),
                  (OPT_GO, Raw.info_data("vm1")), (OPT_STRUCTURED_REPLY, b""),
                  (OPT_LIST_META_CONTEXT, Raw.meta_data("vm1", [])), (99, b"")):
    rtype = r.ask(opt, data)[-1][0]
    assert rtype == REP_ERR_TLS_REQD, "option %d: %#x" % (opt, rtype)
assert r.ask(OPT_STARTTLS, b"x")[-1][0] == REP_ERR_INVALID, "STARTTLS with data"
assert r.ask(OPT_ABORT)[-1][0] == REP_ACK
assert r.is_closed(), "ABORT did not close"

# Garbage where the ClientHello should be.
r = Raw(addr)
r.start()
assert r.ask(OPT_STARTTLS)[-1][0] == REP_ACK
r.send(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(200))
assert r.is_closed(), "garbage handshake: connection left open"
served()

# Plaintext sent behind STARTTLS, before our reply: never parsed.
r = Raw(addr)
r.start()
r.send(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0)
       + struct.pack(">QII", IHAVEOPT, OPT_LIST, 0))
assert r.is_closed(), "plaintext after STARTTLS: connection left open"

# A stalled handshake: half a ClientHello, then silence.  Others are
# served meanwhile; the negotiation timeout (1 s) closes it.
r = Raw(addr)
r.start()
assert r.ask(OPT_STARTTLS)[-1][0] == REP_ACK
r.send(b"\x16\x03\x01\x02\x00\x01\x00")
t0 = time.monotonic()
served()
assert r.is_closed(timeout=10), "stalled handshake never closed"
assert time.monotonic() - t0 < 8

# Once TLS is up: a forged application-data record, slipped into the
# stream by a proxy, fails authentication and closes that connection.
class Proxy:
    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.up = None
        self.ready = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def run(self):
        c, _ = self.ls.accept()
        self.up = socket.create_connection(addr)
        self.ready.set()
        threading.Thread(target=self.pump, args=(self.up, c), daemon=True).start()
        self.pump(c, self.up)

p = Proxy()
h = client()
h.connect_uri(tls_uri(p.port))
h.pwrite(b"\x42" * 65536, 1 << 20)
assert h.pread(65536, 1 << 20) == b"\x42" * 65536
assert p.ready.wait(10)
p.up.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
try:
    h.pread(4096, 0)
    sys.exit("the connection survived a forged record")
except nbd.Error:
    pass
served()
PY
log=$TESTDIR/t.log
grep -q "127.0.0.1:[0-9]*: TLS handshake failed" "$log" || fail "no handshake failure: $(cat "$log")"
grep -q "127.0.0.1:[0-9]*: plaintext data after STARTTLS; closing" "$log" \
  || fail "injection not logged"
grep -q "127.0.0.1:[0-9]*: negotiation timed out" "$log" || fail "no timeout logged"
grep -q "127.0.0.1:[0-9]*: TLS: .*; closing the connection" "$log" \
  || fail "forged record not logged"
kill -0 "$(mirrord_pid t)" || fail "mirrord died"
stop_mirrord t
exit 0
