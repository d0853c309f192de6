#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# A hypervisor stand-in that stays connected between a test's steps:
# connects to URI, then runs one command per line of its input and
# answers each with one line on stdout (flushed):
#   ro                     "ro True" / "ro False" (the export's flag)
#   write OFF LEN BYTE     LEN bytes of BYTE at OFF: "ok" or "err ERRNO"
#   check OFF LEN BYTE     read back: "ok", "bad" or "err ERRNO"
#   flush                  "ok" or "err ERRNO"
#   quit                   disconnect (NBD_CMD_DISC), exit
# So a test can hold a client open across a migration, as QEMU does.
import errno
import sys

import nbd

h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("connected", flush=True)


def err_name(e):
    return errno.errorcode.get(e.errno or 0, str(e.errno))


for line in iter(sys.stdin.readline, ""):
    w = line.split()
    if not w:
        continue
    try:
        if w[0] == "ro":
            out = "ro %s" % bool(h.is_read_only())
        elif w[0] == "write":
            off, n, b = int(w[1]), int(w[2]), int(w[3])
            h.pwrite(bytes([b]) * n, off)
            out = "ok"
        elif w[0] == "check":
            off, n, b = int(w[1]), int(w[2]), int(w[3])
            out = "ok" if h.pread(n, off) == bytes([b]) * n else "bad"
        elif w[0] == "flush":
            h.flush()
            out = "ok"
        elif w[0] == "quit":
            h.shutdown()
            print("bye", flush=True)
            break
        else:
            out = "unknown command"
    except nbd.Error as e:
        out = "err %s" % err_name(e)
    print(out, flush=True)
