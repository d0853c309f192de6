#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Regenerates the seed corpus of fuzz-bitmap (corpus-bitmap/): bitmap
# files written from docs/bitmap-format.md (not by store.c, so the
# seeds also check the two agree), each followed by the target's eight
# control bytes (fuzz-bitmap.c).
#   tests/fuzz/make-corpus-bitmap.py [DIR]
import os
import struct
import sys
import zlib

BLOCK, WORDS = 4096, 511
BITS = 64 * WORDS
CLEAN = 1


def sealed(body):
    body = body.ljust(BLOCK - 4, b"\0")
    return body + struct.pack(">I", zlib.crc32(body))


def header(seq, size, gran, flags=0, path=b"/img/disk.img", version=2):
    bits = (size + gran - 1) // gran
    blocks = max(1, (bits + BITS - 1) // BITS)
    h = b"MRDBITMP" + struct.pack(">IIQQIIQII", version, BLOCK, seq, size, gran,
                                  flags, bits, blocks & 0xffffffff, WORDS)
    h += struct.pack(">QQ4QII", 7, 7, 0, 0, 0, 0, 0, 0)
    h += struct.pack(">I", len(path)) + path.ljust(1024, b"\0")
    return sealed(h)


def block(index, set_bits=(), crc_ok=True, stated_index=None):
    words = [0] * WORDS
    for b in set_bits:
        words[b // 64] |= 1 << (b % 64)
    body = struct.pack("<%dQ" % WORDS, *words)
    body += struct.pack(">I", index if stated_index is None else stated_index)
    blk = sealed(body)
    return blk if crc_ok else blk[:-1] + bytes([blk[-1] ^ 0xff])


def control(geom, strict=False, writes=(0, 0, 128, 3, 255, 255), clear=0,
            no_file=False):
    return bytes([geom | (8 if strict else 0) | (32 if no_file else 0), *writes,
                  clear])


MiB, GiB = 1 << 20, 1 << 30
SEEDS = {
    # geometry 0: 1 MiB at 4 KiB, closed cleanly, both slots valid.
    "clean-1m": header(1, MiB, 4096, CLEAN) + header(2, MiB, 4096, CLEAN)
    + block(0, (0, 1, 2, 200)) + control(0),
    # geometry 1: 1 GiB at 64 KiB, not closed cleanly.
    "unclean-1g": header(5, GiB, 65536) + bytes(BLOCK) + block(0, range(100, 300))
    + control(1, clear=128),
    # geometry 2: two data blocks, the second partial.
    "two-blocks-3g": header(2, 3 * GiB, 65536, CLEAN) + bytes(BLOCK)
    + block(0, (5,)) + block(1, (40000 - BITS, 49151 - BITS)) + control(2),
    # geometry 3: an odd image size.
    "odd-size": header(1, 100 * MiB + 512, 65536, CLEAN) + bytes(BLOCK)
    + block(0, (0, 1600)) + control(3, writes=(255, 255, 0, 0, 10, 1)),
    # geometry from the header (5): 256 MiB at 4 KiB, a corrupt block.
    "header-geometry-corrupt-block": header(3, 256 * MiB, 4096) + bytes(BLOCK)
    + block(0, (1,)) + block(1, (2,), crc_ok=False) + block(2, (3,)) + control(5),
    # A block whose index says it belongs elsewhere.
    "misplaced-block": header(1, GiB, 65536) + bytes(BLOCK)
    + block(0, (9,), stated_index=1) + control(1),
    # Made for another geometry: the whole disk must come back dirty.
    "mismatched-geometry": header(1, GiB, 65536, CLEAN) + bytes(BLOCK)
    + block(0) + control(0),
    # A torn header write: slot 1 is newer but its crc fails.
    "torn-header": header(4, MiB, 4096, CLEAN)
    + header(5, MiB, 4096, CLEAN)[:-2] + b"\0\0" + block(0, (7,)) + control(0),
    # Strict mode: a good file opens, a bad one is refused.
    "strict-good": header(1, GiB, 32768, CLEAN) + bytes(BLOCK)
    + block(0, (1, 32703)) + block(1, (63,)) + control(4, strict=True),
    "strict-corrupt": header(1, MiB, 4096) + bytes(BLOCK)
    + block(0, (1,), crc_ok=False) + control(0, strict=True),
    "empty-file": control(1),
    "not-a-bitmap": bytes(range(256)) * 40 + control(0),
    # No file: the store creates one (whole, every block written).
    "new-file": control(2, no_file=True),
    "new-file-strict": control(4, strict=True, no_file=True),
    # Damage that must never read clean (geometry 2: 3 GiB, two blocks).
    # Truncated to 8 KiB: both headers, no data block.
    "truncated-8k": header(6, 3 * GiB, 65536) + header(7, 3 * GiB, 65536)
    + control(2),
    "truncated-8k-strict": header(6, 3 * GiB, 65536, CLEAN) + control(2, strict=True),
    # Cut inside the second block.
    "truncated-in-block": header(2, 3 * GiB, 65536, CLEAN) + bytes(BLOCK)
    + block(0, (3, 4)) + block(1, (1,))[:1000] + control(2),
    # One block zeroed: all zeroes is never a valid empty block.
    "zeroed-block": header(2, 3 * GiB, 65536, CLEAN) + bytes(BLOCK)
    + block(0, (5, 6)) + bytes(BLOCK) + control(2),
    "zeroed-block-strict": header(2, 3 * GiB, 65536, CLEAN) + bytes(BLOCK)
    + bytes(BLOCK) + block(1, (7,)) + control(2, strict=True),
    # A broken crc in the last block.
    "bad-crc-last-block": header(2, 3 * GiB, 65536) + bytes(BLOCK)
    + block(0, (9,)) + block(1, (BITS + 1 - BITS,), crc_ok=False) + control(2),
    # Longer than it should be: the rest is ignored (and cut off).
    "longer-file": header(3, GiB, 65536, CLEAN) + bytes(BLOCK) + block(0, (11,))
    + bytes(range(256)) * 16 + control(1, strict=True),
    # Version 1 (sparse: an all-zero block was empty) is converted: its
    # valid blocks are kept, its zero blocks are dirty.
    "version-1-sparse": header(4, 3 * GiB, 65536, CLEAN, version=1) + bytes(BLOCK)
    + block(0, (12,)) + bytes(BLOCK) + control(2),
    "version-1-truncated": header(6, 3 * GiB, 65536, version=1)
    + header(7, 3 * GiB, 65536, version=1) + control(2),
    "version-1-whole-strict": header(4, 3 * GiB, 65536, CLEAN, version=1)
    + bytes(BLOCK) + block(0, (13,)) + block(1, (14,)) + control(2, strict=True),
    # The harness once took a size near 2^64 for a sane geometry (its
    # own round-up wrapped) and counted the store's refusal as a crash.
    "crash-harness-size-near-2-64": header(1, (1 << 64) - 1, 65536) + control(5),
}


here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
d = os.path.join(here, "corpus-bitmap")
os.makedirs(d, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
