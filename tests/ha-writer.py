#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Writes distinct 4 KiB blocks with FUA through URI, in a loop, and logs
# each block number to LOG only once the write was acknowledged; then
# (verify mode) checks that every logged block reads back with its
# pattern.  Used to count acknowledged writes lost across a failover.
#   ha-writer.py write URI LOG [AREA_BYTES [OFFSET [SECONDS [GEN0]]]]
#   ha-writer.py verify URI LOG
# With SECONDS (the fault campaign, tests/soak.sh), the writer keeps
# going through failed writes for that long: each failure is logged as
# "E BLOCK GEN ERRNO" (which verify skips: a failed write may or may
# not have reached the disk), a dropped connection is made again, and
# the counts are printed at the end.  Block numbers in LOG are absolute;
# write numbers start at GEN0, so runs over the same blocks can be told
# apart (verify accepts data newer than what was logged).
import nbd, os, sys, time

B = 4096

def block(n, gen):
    head = b"mirrord-ha block %d gen %d\n" % (n, gen)
    return head + bytes([n % 251 + 1]) * (B - len(head))

def write(uri, log, area=0, offset=0, seconds=0, gen0=0):
    h = nbd.NBD()
    h.connect_uri(uri)
    nblocks = (area or h.get_size() - offset) // B
    first = offset // B
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    deadline = time.monotonic() + seconds
    n, acked, failed = gen0, 0, 0
    while not seconds or time.monotonic() < deadline:
        # An odd stride visits every block of the area, out of order (a
        # guest's random writes, not a sequential stream).
        blk = first + (n * 7919) % nblocks
        try:
            h.pwrite(block(blk, n), blk * B, nbd.CMD_FLAG_FUA)
            os.write(fd, b"%d %d\n" % (blk, n))     # after the ack only
            acked += 1
        except nbd.Error as e:
            if not seconds:
                raise
            failed += 1
            os.write(fd, b"E %d %d %s\n" % (blk, n, (e.errno or "-").encode()))
            if not h.aio_is_ready():
                h = nbd.NBD()
                h.connect_uri(uri)
        n += 1
    print("written %d, acknowledged %d, failed %d" % (n - gen0, acked, failed))

def verify(uri, log):
    h = nbd.NBD()
    h.connect_uri(uri)
    latest = {}
    for line in open(log):
        parts = line.split()
        if len(parts) == 2:                       # a torn last line: not acked
            latest[int(parts[0])] = int(parts[1])
    lost = []
    for blk, gen in latest.items():
        data = h.pread(B, blk * B)
        # A later write to the block, sent but not yet logged when the
        # writer stopped, may have replaced the logged one: newer is fine.
        try:
            newer = int(data.split(b"\n")[0].split()[-1])
        except (ValueError, IndexError):
            newer = -1
        if data != block(blk, gen) and not (newer > gen and data == block(blk, newer)):
            lost.append((gen, blk, h.pread(64, blk * B).split(b"\n")[0].decode(errors="replace")))
    print("acknowledged %d, lost %d" % (len(latest), len(lost)))
    for gen, blk, got in sorted(lost)[:10]:
        print("  lost write %d to block %d; it reads: %s" % (gen, blk, got))
    return 1 if lost else 0

if sys.argv[1] == "write":
    write(sys.argv[2], sys.argv[3], *[int(a) for a in sys.argv[4:8]])
else:
    sys.exit(verify(sys.argv[2], sys.argv[3]))
