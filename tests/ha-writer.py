#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Writes distinct 4 KiB blocks with FUA through URI, in a loop, and logs
# each block number to LOG only once the write was acknowledged; then
# (verify mode) checks that every logged block reads back with its
# pattern.  Used to count acknowledged writes lost across a failover.
#   ha-writer.py write URI LOG [AREA_BYTES]
#   ha-writer.py verify URI LOG
import nbd, os, sys

B = 4096

def block(n, gen):
    head = b"mirrord-ha block %d gen %d\n" % (n, gen)
    return head + bytes([n % 251 + 1]) * (B - len(head))

def write(uri, log, area):
    h = nbd.NBD()
    h.connect_uri(uri)
    nblocks = (area or h.get_size()) // B
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    n = 0
    while True:
        # An odd stride visits every block of the area, out of order (a
        # guest's random writes, not a sequential stream).
        blk = (n * 7919) % nblocks
        h.pwrite(block(blk, n), blk * B, nbd.CMD_FLAG_FUA)
        os.write(fd, b"%d %d\n" % (blk, n))     # after the ack only
        n += 1

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
    write(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
else:
    sys.exit(verify(sys.argv[2], sys.argv[3]))
