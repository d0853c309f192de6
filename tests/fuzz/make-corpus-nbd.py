#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Regenerates the seed corpora of the NBD fuzz targets
# (corpus-nbd-handshake/, corpus-nbd-transmission/): client sessions
# written from the protocol (NetworkBlockDevice doc/proto.md), each a
# few hundred bytes to a few KiB.  Input formats: fuzz-nbd-*.c.
#   tests/fuzz/make-corpus-nbd.py [DIR]
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513
FIXED, NO_ZEROES = 1, 2
(EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, STRUCTURED, LIST_META,
 SET_META) = 1, 2, 3, 5, 6, 7, 8, 9, 10
READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZERO, BLOCK_STATUS = range(8)
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def string(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def go(name, infos=(), o=GO):
    return opt(o, string(name) + struct.pack(">H", len(infos))
               + b"".join(struct.pack(">H", i) for i in infos))


def meta(o, name, queries):
    return opt(o, string(name) + struct.pack(">I", len(queries))
               + b"".join(string(q) for q in queries))


cookie = 0


def req(cmd, off, count, flags=0, payload=None):
    global cookie
    cookie += 1
    h = struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie, off, count)
    if cmd == WRITE:
        h += payload if payload is not None else bytes([cookie & 0xff]) * count
    return h


def flags(f=FIXED):
    return struct.pack(">I", f)


HANDSHAKE = {
    "go-info-requests": b"\0" + flags() + opt(STRUCTURED)
    + go("e", (1, 2, 3)) + req(READ, 0, 4096) + req(DISC, 0, 0),
    "export-name-ro": b"\0" + flags(FIXED | NO_ZEROES) + opt(EXPORT_NAME, b"ro")
    + req(READ, 0, 512) + req(DISC, 0, 0),
    "export-name-zeroes": b"\0" + flags() + opt(EXPORT_NAME, b"e"),
    "list-everything": b"\0" + flags() + opt(LIST) + meta(LIST_META, "e", [])
    + meta(LIST_META, "e", ["base:", "qemu:", "qemu:dirty-bitmap:", "mirrord:"])
    + meta(LIST_META, "ro", ["qemu:dirty-bitmap:ro", "base:allocation", "x:y"])
    + go("ro", (), INFO) + opt(ABORT),
    "set-meta-then-go": b"\0" + flags() + opt(STRUCTURED)
    + meta(SET_META, "e", ["base:allocation", "qemu:dirty-bitmap:e"])
    + go("e") + req(BLOCK_STATUS, 0, 1 << 20) + req(DISC, 0, 0),
    "refusals": b"\0" + flags() + opt(99, b"abc") + opt(STRUCTURED, b"x")
    + meta(SET_META, "e", ["base:allocation"]) + go("nosuch") + go("")
    + opt(INFO, b"\0\0\0\x09e") + meta(LIST_META, "e", ["base:allocation"])[:-3]
    + opt(LIST, b"x") + opt(STARTTLS),
    "too-long-option": b"\0" + flags() + opt(INFO, b"\0" * 65537) + opt(ABORT),
    "bad-option-magic": b"\0" + flags() + opt(LIST) + b"IHAVEOPX" + b"\0" * 8,
    "bad-client-flags": b"\0" + flags(4),
    "tcp-tls-required": b"\1" + flags() + opt(LIST) + go("e", (), INFO)
    + opt(STRUCTURED) + opt(STARTTLS)
    # The start of a TLS record (a ClientHello), cut short.
    + bytes.fromhex("16030100a5010000a10303") + bytes(32),
    "tcp-export-name": b"\1" + flags() + opt(EXPORT_NAME, b"e"),
    "starttls-with-data": b"\0" + flags() + opt(STARTTLS, b"x") + opt(ABORT),
    # Sent at once (mode bit 1): plaintext after STARTTLS, refused.
    "starttls-plaintext-after": b"\2" + flags() + opt(STARTTLS) + opt(LIST),
    "starttls-then-garbage": b"\0" + flags() + opt(STARTTLS) + opt(LIST),
}

# Transmission: a negotiation byte (fuzz-nbd-transmission.c), requests.
STRUCT, BASE, DIRTY, RO, EXPNAME, NOZ = 1, 2, 4, 8, 16, 32
TRANSMISSION = {
    "structured-all-commands": bytes([STRUCT | BASE | DIRTY])
    + req(WRITE, 0, 4096, FUA) + req(READ, 0, 8192) + req(READ, 60000, 9000, DF)
    + req(BLOCK_STATUS, 0, 1 << 20) + req(BLOCK_STATUS, 4096, 65536, REQ_ONE)
    + req(TRIM, 65536, 65536) + req(ZERO, 131072, 8192, NO_HOLE)
    + req(ZERO, 200000, 4096, FAST_ZERO) + req(ZERO, 300000, 100)
    + req(FLUSH, 0, 0) + req(CACHE, 0, 4096) + req(READ, 500000, 40000)
    + req(DISC, 0, 0),
    "simple-replies": bytes([0]) + req(WRITE, 1000, 3000) + req(READ, 0, 5000)
    + req(FLUSH, 0, 0) + req(BLOCK_STATUS, 0, 4096) + req(READ, 0, 512, DF)
    + req(DISC, 0, 0),
    "read-only-odd-size": bytes([RO | STRUCT | BASE]) + req(WRITE, 0, 2048)
    + req(READ, (1 << 20) - 1024, 1536) + req(READ, 1 << 20, 1024)
    + req(BLOCK_STATUS, 0, (1 << 20) + 512) + req(TRIM, 0, 4096)
    + req(ZERO, 0, 4096) + req(DISC, 0, 0),
    "bad-requests": bytes([EXPNAME | NOZ]) + req(99, 0, 512) + req(READ, 0, 0)
    + req(WRITE, (1 << 20) - 100, 200) + req(READ, 0, 33 << 20)
    + req(WRITE, 0, 8, 0x40) + req(ZERO, 0, 4096, FAST_ZERO)
    + req(READ, 1 << 63, 512) + struct.pack(">I", 0x12345678) + bytes(24),
    "pipelined-reads": bytes([STRUCT | BASE])
    + b"".join(req(READ, i * 24576, 24576) for i in range(40)),
    "dirty-bitmap-status": bytes([STRUCT | DIRTY])
    + req(WRITE, 70000, 100) + req(ZERO, 400000, 70000)
    + req(BLOCK_STATUS, 0, 1 << 20) + req(BLOCK_STATUS, 65536, 500000, REQ_ONE)
    + req(DISC, 0, 0),
    "export-name-zeroes": bytes([EXPNAME]) + req(READ, 4096, 4096)
    + req(WRITE, 8192, 4096) + req(FLUSH, 1, 1) + req(DISC, 0, 0),
    "write-cut-short": bytes([STRUCT]) + req(WRITE, 0, 65536)[:4000],
}


def write(d, seeds):
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
write(os.path.join(here, "corpus-nbd-handshake"), HANDSHAKE)
write(os.path.join(here, "corpus-nbd-transmission"), TRANSMISSION)
