# SPDX-License-Identifier: MIT
"""Crash-consistency writer and checker for the qcow2 crash test.

  qcow2crash.py write URI LOG CYCLE SEED
      Until the connection dies: batches of 4 KiB writes to distinct
      random blocks (32 in flight), each block's content naming
      (cycle, seq, block); 1 in 8 with FUA, 1 in 16 a zero write; then
      a FLUSH.  LOG gets "W cycle seq block" or "Z cycle seq block"
      before a request is sent, "A cycle seq" when a FUA write is
      acknowledged, and "F cycle seq" when a FLUSH covering every
      request up to seq is acknowledged.

  qcow2crash.py verify URI INITIAL LOG...
      Every block whose last durable (flushed or FUA) version is known
      holds that version or one written after it; no block holds
      anything else (INITIAL: the raw content before the first cycle).
      Prints how many durable blocks were checked.
"""
import collections
import os
import random
import struct
import sys

import nbd

BS = 4096


def content(cycle, seq, block):
    return struct.pack("<QQQQ", 0x51c0_2c4a_5400_0000, cycle, seq, block) * (BS // 32)


def write(uri, log, cycle, seed):
    rnd = random.Random(seed)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(s):
        os.write(fd, (s + "\n").encode())

    h = nbd.NBD()
    h.connect_uri(uri)
    nblocks = h.get_size() // BS
    seq = 0
    try:
        while True:
            blocks = rnd.sample(range(nblocks), 32)
            pending = []
            for b in blocks:
                seq += 1
                kind = rnd.random()
                if kind < 1 / 16:
                    note("Z %d %d %d" % (cycle, seq, b))
                    cookie = h.aio_zero(BS, b * BS)
                    pending.append((cookie, seq, False))
                else:
                    fua = kind < 1 / 16 + 1 / 8
                    note("W %d %d %d" % (cycle, seq, b))
                    buf = nbd.Buffer.from_bytearray(bytearray(content(cycle, seq, b)))
                    cookie = h.aio_pwrite(buf, b * BS,
                                          flags=nbd.CMD_FLAG_FUA if fua else 0)
                    pending.append((cookie, seq, fua))
            for cookie, s, fua in pending:
                while not h.aio_command_completed(cookie):
                    h.poll(-1)
                if fua:
                    note("A %d %d" % (cycle, s))
            h.flush()
            note("F %d %d" % (cycle, seq))
    except nbd.Error:
        pass                          # the server was killed
    os.close(fd)


def verify(uri, initial, logs):
    # versions[block] = [(cycle, seq, kind)] in the order written
    versions = collections.defaultdict(list)
    flushed = {}                      # cycle -> seq
    fua = set()                       # (cycle, seq)
    for log in logs:
        for line in open(log):
            f = line.split()
            if not f:
                continue
            if f[0] in "WZ" and len(f) == 4:
                versions[int(f[3])].append((int(f[1]), int(f[2]), f[0]))
            elif f[0] == "F" and len(f) == 3:
                flushed[int(f[1])] = max(flushed.get(int(f[1]), 0), int(f[2]))
            elif f[0] == "A" and len(f) == 3:
                fua.add((int(f[1]), int(f[2])))

    def durable(v):
        return v[1] <= flushed.get(v[0], 0) or (v[0], v[1]) in fua

    h = nbd.NBD()
    h.connect_uri(uri)
    init = open(initial, "rb")
    checked = 0
    errors = []
    for b in sorted(versions):
        vs = versions[b]
        last = max((i for i, v in enumerate(vs) if durable(v)), default=-1)
        if last >= 0:
            checked += 1
            ok = []
        else:
            init.seek(b * BS)
            ok = [init.read(BS)]
        for c, s, kind in vs[max(last, 0):]:
            ok.append(bytes(BS) if kind == "Z" else content(c, s, b))
        got = h.pread(BS, b * BS)
        if got not in ok:
            if got[:8] == content(0, 0, 0)[:8]:
                what = "version cycle %d seq %d block %d" % struct.unpack("<QQQ", got[8:32])
            elif got == bytes(BS):
                what = "zeroes"
            else:
                what = "other data %r" % got[:16]
            errors.append("block %d (offset %d): holds %s; last durable %s, later %s"
                          % (b, b * BS, what, vs[last] if last >= 0 else None,
                             vs[last + 1:][:4]))
    # Blocks never written still hold their initial content.
    nblocks = h.get_size() // BS
    rnd = random.Random(0)
    for b in rnd.sample(range(nblocks), min(512, nblocks)):
        if b in versions:
            continue
        init.seek(b * BS)
        if h.pread(BS, b * BS) != init.read(BS):
            errors.append("block %d (offset %d): never written, but changed" % (b, b * BS))
    h.shutdown()
    total = sum(len(v) for v in versions.values())
    print("%s: %d requests logged, %d blocks with a durable version checked, %d errors"
          % (uri, total, checked, len(errors)))
    for e in errors[:20]:
        print("  " + e, file=sys.stderr)
    if errors:
        return 1
    if checked == 0:
        print("no durable write to check", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    a = sys.argv
    if a[1] == "write":
        write(a[2], a[3], int(a[4]), int(a[5]))
    elif a[1] == "verify":
        sys.exit(verify(a[2], a[3], a[4:]))
    else:
        sys.exit(__doc__)
