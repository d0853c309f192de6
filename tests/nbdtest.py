# SPDX-License-Identifier: MIT
"""A raw NBD client for the integration tests.

libnbd refuses to send most malformed traffic, so tests that need a bad
option, an unknown command or a half-sent request speak the protocol
themselves with this class.  Numbers are the NBD spec's (doc/proto.md).
"""

import socket
import struct

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST = 1, 2, 3
OPT_STARTTLS, OPT_INFO, OPT_GO = 5, 6, 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10

REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
REP_ERR = 1 << 31
REP_ERR_UNSUP, REP_ERR_POLICY, REP_ERR_INVALID = REP_ERR + 1, REP_ERR + 2, REP_ERR + 3
REP_ERR_TLS_REQD, REP_ERR_UNKNOWN, REP_ERR_TOO_BIG = REP_ERR + 5, REP_ERR + 6, REP_ERR + 9

INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3

EFLAG_HAS_FLAGS, EFLAG_READ_ONLY, EFLAG_SEND_FLUSH = 1, 2, 4
EFLAG_SEND_FUA, EFLAG_SEND_TRIM, EFLAG_SEND_WRITE_ZEROES = 8, 32, 64
EFLAG_SEND_DF, EFLAG_CAN_MULTI_CONN = 128, 256
EFLAG_SEND_CACHE, EFLAG_SEND_FAST_ZERO = 1024, 2048

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 4, 5, 6, 7

CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_DF = 1, 2, 4
CMD_FLAG_REQ_ONE, CMD_FLAG_FAST_ZERO = 8, 16

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE = 0, 1, 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 1, (1 << 15) + 2

EPERM, EIO, ENOMEM, EINVAL, ENOSPC = 1, 5, 12, 22, 28
EOVERFLOW, ENOTSUP, ESHUTDOWN = 75, 95, 108


class Closed(Exception):
    """The server closed the connection."""


def socket_of(uri):
    """The unix socket path of an nbd+unix URI."""
    return uri.split("socket=", 1)[1]


class Raw:
    def __init__(self, path, timeout=10):
        """PATH: a unix socket, or a (host, port) tuple for TCP."""
        family = socket.AF_INET if isinstance(path, tuple) else socket.AF_UNIX
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.pending = {}           # cookie -> (type, count)
        self.structured = False
        self.next_cookie = 1

    def close(self):
        self.sock.close()

    # ---- bytes ----

    def send(self, data):
        self.sock.sendall(data)

    def recvn(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                got = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                got = b""
            if not got:
                raise Closed("server closed after %d of %d bytes" % (len(buf), n))
            buf += got
        return bytes(buf)

    def is_closed(self, timeout=10):
        """True when the server closes (EOF) within TIMEOUT; any bytes
        it still sends first are skipped."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            while True:
                try:
                    if not self.sock.recv(65536):
                        return True
                except ConnectionResetError:
                    return True
                except socket.timeout:
                    return False
        finally:
            self.sock.settimeout(old)

    # ---- negotiation ----

    def greeting(self):
        magic, opt, gflags = struct.unpack(">QQH", self.recvn(18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
        return gflags

    def client_flags(self, flags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
        self.send(struct.pack(">I", flags))

    def start(self, flags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
        gflags = self.greeting()
        assert gflags & FLAG_FIXED_NEWSTYLE, "not fixed newstyle"
        self.client_flags(flags)
        return gflags

    def option(self, opt, data=b"", magic=IHAVEOPT):
        self.send(struct.pack(">QII", magic, opt, len(data)) + data)

    def opt_reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", self.recvn(20))
        assert magic == REP_MAGIC, "bad option reply magic %#x" % magic
        return opt, rtype, self.recvn(length)

    def opt_replies(self, opt):
        """Replies to OPT up to and including the final one (ACK or an
        error): a list of (type, data)."""
        out = []
        while True:
            got, rtype, data = self.opt_reply()
            assert got == opt, "reply for option %d, expected %d" % (got, opt)
            out.append((rtype, data))
            if rtype not in (REP_SERVER, REP_INFO, REP_META_CONTEXT):
                return out

    def ask(self, opt, data=b""):
        self.option(opt, data)
        return self.opt_replies(opt)

    @staticmethod
    def info_data(name, infos=()):
        n = name.encode()
        return (struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos))
                + b"".join(struct.pack(">H", i) for i in infos))

    @staticmethod
    def meta_data(name, queries):
        n = name.encode()
        out = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
        for q in queries:
            out += struct.pack(">I", len(q)) + q.encode()
        return out

    @staticmethod
    def meta_contexts(replies):
        """{name: id} from the REP_META_CONTEXT replies."""
        return {d[4:].decode(): struct.unpack(">I", d[:4])[0]
                for t, d in replies if t == REP_META_CONTEXT}

    def go(self, name, infos=()):
        """OPT_GO; returns (size, eflags) or raises on an error reply."""
        replies = self.ask(OPT_GO, self.info_data(name, infos))
        rtype = replies[-1][0]
        if rtype != REP_ACK:
            raise RuntimeError("GO refused: %#x %r" % (rtype, replies[-1][1]))
        for t, d in replies:
            if t == REP_INFO and struct.unpack(">H", d[:2])[0] == INFO_EXPORT:
                _, size, eflags = struct.unpack(">HQH", d)
        self.size, self.eflags = size, eflags
        return size, eflags

    def connect(self, name, structured=True, meta=()):
        """Negotiates up to transmission; returns (size, eflags)."""
        self.start()
        if structured:
            assert self.ask(OPT_STRUCTURED_REPLY)[-1][0] == REP_ACK
            self.structured = True
        if meta:
            replies = self.ask(OPT_SET_META_CONTEXT, self.meta_data(name, meta))
            assert replies[-1][0] == REP_ACK, replies
            self.meta = self.meta_contexts(replies)
        return self.go(name)

    # ---- transmission ----

    def request(self, cmd, offset=0, count=0, flags=0, payload=None,
                cookie=None, magic=REQUEST_MAGIC, send_payload=True):
        if cookie is None:
            cookie = self.next_cookie
            self.next_cookie += 1
        if payload is not None and cmd == CMD_WRITE and count == 0:
            count = len(payload)
        hdr = struct.pack(">IHHQQI", magic, flags, cmd, cookie, offset, count)
        self.pending[cookie] = (cmd, count)
        self.send(hdr + (payload if payload is not None and send_payload else b""))
        return cookie

    def reply(self):
        """One reply message: (cookie, error, chunk) where chunk is
        None for a simple reply, else (flags, type, payload).  A simple
        reply to a READ carries its data as payload."""
        magic = struct.unpack(">I", self.recvn(4))[0]
        if magic == SIMPLE_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recvn(12))
            cmd, count = self.pending.get(cookie, (None, 0))
            data = self.recvn(count) if cmd == CMD_READ and err == 0 else b""
            self.pending.pop(cookie, None)
            return cookie, err, (REPLY_FLAG_DONE, None, data)
        assert magic == STRUCTURED_MAGIC, "bad reply magic %#x" % magic
        flags, rtype, cookie, length = struct.unpack(">HHQI", self.recvn(16))
        payload = self.recvn(length)
        err = 0
        if rtype & (1 << 15):
            err = struct.unpack(">I", payload[:4])[0]
        if flags & REPLY_FLAG_DONE:
            self.pending.pop(cookie, None)
        return cookie, err, (flags, rtype, payload)

    def wait(self, cookie):
        """All chunks of COOKIE's reply (other replies must not be
        interleaved): (error, [(type, payload)...])."""
        chunks, err = [], 0
        while True:
            got, e, (flags, rtype, payload) = self.reply()
            assert got == cookie, "reply for cookie %d, expected %d" % (got, cookie)
            err = err or e
            chunks.append((rtype, payload))
            if flags & REPLY_FLAG_DONE:
                return err, chunks

    def cmd(self, *args, **kw):
        """Sends one request and waits for its reply: (error, chunks)."""
        return self.wait(self.request(*args, **kw))

    def read(self, offset, count):
        """Reads with a single request; returns the bytes (holes as
        zeroes).  Raises on an error reply."""
        err, chunks = self.cmd(CMD_READ, offset, count)
        if err:
            raise RuntimeError("read failed: %d" % err)
        buf = bytearray(count)
        for rtype, payload in chunks:
            if rtype is None:
                buf[:] = payload
            elif rtype == REPLY_TYPE_OFFSET_DATA:
                off = struct.unpack(">Q", payload[:8])[0] - offset
                buf[off:off + len(payload) - 8] = payload[8:]
        return bytes(buf)
