#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# A minimal QMP client for the benchmarks (stdlib only).
#
#   qmp.py SOCKET COMMAND [JSON-ARGS]      run one command, print its return
#   qmp.py SOCKET --wait-job-ready JOB [TIMEOUT_S]
#                                          poll query-block-jobs until JOB
#                                          is ready (exit 1 on timeout or
#                                          if the job is gone)
import json
import socket
import sys
import time


class QMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.rd = self.sock.makefile("r")
        self._read()                      # the greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.rd.readline()
        if not line:
            raise EOFError("QMP monitor closed")
        return json.loads(line)

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError("%s: %s" % (name, r["error"]["desc"]))
            return r.get("return")


def main():
    q = QMP(sys.argv[1])
    if sys.argv[2] == "--wait-job-ready":
        job = sys.argv[3]
        deadline = time.monotonic() + float(sys.argv[4] if len(sys.argv) > 4 else 60)
        while time.monotonic() < deadline:
            jobs = {j["device"]: j for j in q.cmd("query-block-jobs")}
            if job not in jobs:
                sys.exit("job %s is gone" % job)
            if jobs[job].get("ready"):
                return
            time.sleep(0.01)
        sys.exit("job %s not ready in time" % job)
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(q.cmd(sys.argv[2], args)))


if __name__ == "__main__":
    main()
