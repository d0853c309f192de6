# SPDX-License-Identifier: MIT
"""A random exerciser for one export, checked against a model of the disk.

    exerciser.py URI IMAGE [options]

IMAGE holds what the export holds at the start; it becomes the model,
which every operation updates with what the export must now hold.  Then:

 1. OPS synchronous operations at random offsets, unaligned, each up to
    one of --max-lengths bytes: writes (some with FUA), write-zeroes
    (plain, NO_HOLE, FAST_ZERO; FAST_ZERO may fail with ENOTSUP), trims
    and reads, in the proportions of --mix; a flush every --flush-every.
 2. Pipelined unaligned writes that share blocks but never overlap: none
    may undo another (read-modify-write of shared blocks is serialised).
 3. The last bytes of the disk.
 4. Block status over the whole disk: whatever is reported as zero must
    read as zero (and with --allocated, nothing may be reported a hole).
 5. A flush and a read of the whole disk.

Every read is compared with the model.  After TRIM (--trim): "zero", the
trimmed bytes read as zero; "any", each reads as zero or as before (TRIM
is advisory).  With --trim-unit U only whole U-byte units may change:
partial units at the edges keep their data.

Prints "ok" if all held; any difference ends it with an error.
"""

import argparse
import random
import sys

import nbd


def sizes(text):
    return [int(x, 0) for x in text.split(",")]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="exerciser.py")
    p.add_argument("uri")
    p.add_argument("image", help="what the export holds at the start")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ops", type=int, default=1000)
    p.add_argument("--mix", default="wwwwzztr",
                   help="one letter an operation, drawn uniformly: "
                        "w write, z write-zeroes, t trim, r read")
    p.add_argument("--max-lengths", type=sizes, default=[512, 8192, 300000])
    p.add_argument("--fua", type=float, default=0.2,
                   help="share of writes sent with FUA")
    p.add_argument("--flush-every", type=int, default=50)
    p.add_argument("--trim", choices=("zero", "any"), default="any")
    p.add_argument("--trim-unit", type=int, default=1)
    p.add_argument("--pipeline-bytes", type=int, default=4 << 20)
    p.add_argument("--pipeline-max-write", type=int, default=9000)
    p.add_argument("--allocated", action="store_true",
                   help="block status must report everything allocated")
    p.add_argument("--model-out", help="write the final model here")
    p.add_argument("--verify-image", action="store_true",
                   help="after disconnecting, IMAGE must hold the model")
    return p.parse_args(argv)


class Exerciser:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.h = nbd.NBD()
        self.h.add_meta_context("base:allocation")
        self.h.connect_uri(args.uri)
        self.size = self.h.get_size()
        with open(args.image, "rb") as f:
            self.model = bytearray(f.read())    # what the disk must hold
        assert len(self.model) == self.size, \
            "export is %d bytes, image %d" % (self.size, len(self.model))

    def check(self, off, n, what):
        got = self.h.pread(n, off)
        if got != self.model[off:off + n]:
            bad = next(i for i in range(n) if got[i] != self.model[off + i])
            sys.exit("%s: byte %d differs (got %d, want %d)"
                     % (what, off + bad, got[bad], self.model[off + bad]))

    def write(self, off, data, flags=0):
        self.h.pwrite(data, off, flags)
        self.model[off:off + len(data)] = data

    def zero(self, off, n):
        flags = self.rng.choice((0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FAST_ZERO))
        try:
            self.h.zero(n, off, flags)
        except nbd.Error as e:
            assert flags == nbd.CMD_FLAG_FAST_ZERO and e.errno == "ENOTSUP", e
            return
        self.model[off:off + n] = bytes(n)

    def trim(self, off, n):
        old = bytes(self.model[off:off + n])
        self.h.trim(n, off)
        got = self.h.pread(n, off)
        where = "trim at %d, %d bytes" % (off, n)
        unit = self.args.trim_unit
        lo = -off % unit                # [lo, hi): the whole units
        hi = n - (off + n) % unit
        if hi <= lo:
            assert got == old, where + ": changed a partial unit"
        else:
            assert got[:lo] == old[:lo] and got[hi:] == old[hi:], \
                where + ": changed a partial unit"
            if self.args.trim == "zero":
                assert got[lo:hi] == bytes(hi - lo), where + ": not zeroed"
            elif got[lo:hi] not in (old[lo:hi], bytes(hi - lo)):
                assert all(g == 0 or g == o for g, o in zip(got[lo:hi], old[lo:hi])), \
                    where + ": wrote garbage"
        self.model[off:off + n] = got

    def random_ops(self):
        rng, a = self.rng, self.args
        for i in range(a.ops):
            op = rng.choice(a.mix)
            n = rng.randint(1, rng.choice(a.max_lengths))
            off = rng.randint(0, self.size - n)
            if op == "w":
                self.write(off, rng.randbytes(n),
                           nbd.CMD_FLAG_FUA if rng.random() < a.fua else 0)
            elif op == "z":
                self.zero(off, n)
            elif op == "t":
                self.trim(off, n)
            elif op == "r":
                self.check(off, n, "read")
            else:
                sys.exit("unknown operation %r in --mix" % op)
            if i % a.flush_every == 0:
                self.h.flush()

    def pipelined_writes(self):
        # Pipelined writes that share blocks but never overlap: none may
        # undo another (read-modify-write of shared blocks must be
        # serialised).
        h, rng = self.h, self.rng
        end = min(self.size, self.args.pipeline_bytes)
        pos = rng.randint(0, 4096)
        cookies = []
        while pos < end:
            n = min(rng.randint(1, self.args.pipeline_max_write), self.size - pos)
            data = rng.randbytes(n)
            cookies.append(h.aio_pwrite(data, pos))
            self.model[pos:pos + n] = data
            pos += n
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for c in cookies:
            assert h.aio_command_completed(c)

    def block_status(self):
        # Whatever is reported as zero reads as zero.
        def extent_cb(meta, offset, entries, err):
            for i in range(0, len(entries), 2):
                length, flags = entries[i], entries[i + 1]
                assert length > 0, "empty extent at %d" % offset
                if self.args.allocated:
                    assert not flags & nbd.STATE_HOLE, \
                        "extent at %d reported a hole" % offset
                if flags & nbd.STATE_ZERO:
                    assert self.model[offset:offset + length] == bytes(length), \
                        "extent at %d reported zero but is not" % offset
                offset += length
        off = 0
        while off < self.size:
            n = min(self.size - off, 1 << 30)
            self.h.block_status(n, off, extent_cb)
            off += n

    def run(self):
        self.random_ops()
        self.pipelined_writes()
        self.write(self.size - 5, b"\xee" * 5)    # the last bytes
        self.check(max(0, self.size - 4096), min(self.size, 4096), "end")
        self.block_status()
        self.h.flush()
        for off in range(0, self.size, 1 << 20):
            self.check(off, min(1 << 20, self.size - off), "final read")
        self.h.shutdown()


def main(argv=None):
    args = parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    print("exerciser: seed %d" % args.seed, file=sys.stderr)
    ex = Exerciser(args)
    ex.run()
    if args.model_out:
        with open(args.model_out, "wb") as f:
            f.write(ex.model)
    if args.verify_image:
        with open(args.image, "rb") as f:
            assert f.read() == ex.model, "the image does not hold what was acknowledged"
    print("ok")


if __name__ == "__main__":
    main()
