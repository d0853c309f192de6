# SPDX-License-Identifier: MIT
"""Helpers for the qcow2 tests (run with /usr/bin/python3).

  qcow2util.py map URI IMAGE [FORMAT]
      base:allocation of the export URI (nbdinfo --map) agrees with
      qemu-img map of IMAGE about what is data and what reads as zero:
        qemu data            -> NBD data (type 0)
        qemu zero, present   -> NBD zero (type 2, or 3)
        qemu not present     -> NBD hole+zero (type 3)
      (present = allocated somewhere in the backing chain).  Exits 1
      and prints the first disagreements otherwise.

  qcow2util.py incompat IMAGE BIT    set incompatible feature BIT
  qcow2util.py crypt IMAGE METHOD    set the header's crypt_method
  qcow2util.py header IMAGE          print header fields, one "name value"
                                     a line

For tests that corrupt images on purpose (run as a module: "import
qcow2util"), Image(PATH) reads and patches the metadata in place:
  .cs, .l1_offset, .l1_size, .reftable_offset, .reftable_clusters
  .l1()                 the L1 entries
  .l2_offset(GUEST)     the L2 table mapping guest offset GUEST (or 0)
  .l2_entry(GUEST), .set_l2_entry(GUEST, VALUE)
  .reftable(), .set_reftable(I, VALUE)
  .refcount(CLUSTER), .set_refcount(CLUSTER, VALUE)
  .set_field(NAME, VALUE)   a header field by its name in HEADER
  .read(OFF, LEN)
and the L2 entry flags COPIED, COMPRESSED, ZERO and OFFSET_MASK.
"""
import json
import struct
import subprocess
import sys


def qemu_map(image, fmt):
    out = subprocess.run(["qemu-img", "map", "-U", "--output=json", "-f", fmt, image],
                         check=True, capture_output=True, text=True).stdout
    res = []
    for e in json.loads(out):
        if e["data"]:
            want = "data"
        elif e["present"]:
            want = "zero"
        else:
            want = "hole"
        res.append((e["start"], e["length"], want))
    return res


def nbd_map(uri):
    out = subprocess.run(["nbdinfo", "--json", "--map", uri],
                         check=True, capture_output=True, text=True).stdout
    return [(e["offset"], e["length"], e["type"]) for e in json.loads(out)]


ALLOWED = {"data": {0}, "zero": {2, 3}, "hole": {3}}


def check_map(uri, image, fmt="qcow2"):
    q = qemu_map(image, fmt)
    n = nbd_map(uri)
    qend = q[-1][0] + q[-1][1] if q else 0
    nend = n[-1][0] + n[-1][1] if n else 0
    errors = []
    if qend != nend:
        errors.append("map ends differ: qemu-img %d, nbd %d" % (qend, nend))
    for lst, name in ((q, "qemu-img"), (n, "nbd")):
        pos = 0
        for off, length, _ in lst:
            if off != pos:
                errors.append("%s map not contiguous at %d" % (name, off))
            pos = off + length
    # Walk both lists together, piece by piece.
    i = j = 0
    while i < len(q) and j < len(n):
        qs, ql, want = q[i]
        ns, nl, typ = n[j]
        lo = max(qs, ns)
        hi = min(qs + ql, ns + nl)
        if lo < hi and typ not in ALLOWED[want]:
            errors.append("[%d, %d): qemu-img says %s, nbd says type %d"
                          % (lo, hi, want, typ))
        if qs + ql <= ns + nl:
            i += 1
        else:
            j += 1
    if errors:
        print("base:allocation of %s disagrees with qemu-img map of %s:"
              % (uri, image), file=sys.stderr)
        for e in errors[:20]:
            print("  " + e, file=sys.stderr)
        print("qemu-img map: %s" % q[:40], file=sys.stderr)
        print("nbd map: %s" % n[:40], file=sys.stderr)
        return 1
    return 0


def set_incompat(image, bit):
    with open(image, "r+b") as f:
        f.seek(4)
        version, = struct.unpack(">I", f.read(4))
        assert version == 3, "incompatible_features needs a v3 header"
        f.seek(72)
        v, = struct.unpack(">Q", f.read(8))
        f.seek(72)
        f.write(struct.pack(">Q", v | (1 << bit)))


def set_crypt(image, method):
    with open(image, "r+b") as f:
        f.seek(32)
        f.write(struct.pack(">I", method))


HEADER = [("magic", ">I"), ("version", ">I"), ("backing_file_offset", ">Q"),
          ("backing_file_size", ">I"), ("cluster_bits", ">I"), ("size", ">Q"),
          ("crypt_method", ">I"), ("l1_size", ">I"), ("l1_table_offset", ">Q"),
          ("refcount_table_offset", ">Q"), ("refcount_table_clusters", ">I"),
          ("nb_snapshots", ">I"), ("snapshots_offset", ">Q"),
          ("incompatible_features", ">Q"), ("compatible_features", ">Q"),
          ("autoclear_features", ">Q"), ("refcount_order", ">I"),
          ("header_length", ">I")]


def header(image):
    with open(image, "rb") as f:
        raw = f.read(104)
    res, pos = {}, 0
    for name, fmt in HEADER:
        n = struct.calcsize(fmt)
        if pos + n > len(raw):
            break
        res[name], = struct.unpack(fmt, raw[pos:pos + n])
        pos += n
    if res.get("version") == 2:
        for k in list(res)[list(res).index("incompatible_features"):]:
            del res[k]
    return res


COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
OFFSET_MASK = 0x00fffffffffffe00          # L1 and L2 entries
REFT_OFFSET_MASK = 0xfffffffffffffe00     # refcount table entries


class Image:
    """A qcow2 file's metadata, read and patched in place (no checks:
    the point is to make broken images)."""

    def __init__(self, path):
        self.path = path
        h = header(path)
        self.h = h
        self.cs = 1 << h["cluster_bits"]
        self.l1_offset = h["l1_table_offset"]
        self.l1_size = h["l1_size"]
        self.reftable_offset = h["refcount_table_offset"]
        self.reftable_clusters = h["refcount_table_clusters"]
        self.refcount_bits = 1 << h.get("refcount_order", 4)

    def read(self, off, length):
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(length)

    def _u64(self, off):
        return struct.unpack(">Q", self.read(off, 8))[0]

    def _put_u64(self, off, value):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(struct.pack(">Q", value))

    def l1(self):
        raw = self.read(self.l1_offset, self.l1_size * 8)
        return list(struct.unpack(">%dQ" % self.l1_size, raw))

    def l2_offset(self, guest):
        return self.l1()[guest // (self.cs * (self.cs // 8))] & OFFSET_MASK

    def _l2_slot(self, guest):
        l2 = self.l2_offset(guest)
        assert l2, "guest offset %#x has no L2 table" % guest
        return l2 + (guest // self.cs % (self.cs // 8)) * 8

    def l2_entry(self, guest):
        return self._u64(self._l2_slot(guest))

    def set_l2_entry(self, guest, value):
        self._put_u64(self._l2_slot(guest), value)

    def reftable(self):
        n = self.reftable_clusters * self.cs // 8
        return list(struct.unpack(">%dQ" % n, self.read(self.reftable_offset, n * 8)))

    def set_reftable(self, i, value):
        self._put_u64(self.reftable_offset + i * 8, value)

    def _refcount_slot(self, cluster):
        per_block = self.cs * 8 // self.refcount_bits
        block = self.reftable()[cluster // per_block] & REFT_OFFSET_MASK
        assert block, "cluster %d has no refcount block" % cluster
        assert self.refcount_bits >= 8, "sub-byte refcounts not supported here"
        width = self.refcount_bits // 8
        return block + cluster % per_block * width, width

    def refcount(self, cluster):
        off, width = self._refcount_slot(cluster)
        return int.from_bytes(self.read(off, width), "big")

    def set_refcount(self, cluster, value):
        off, width = self._refcount_slot(cluster)
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(value.to_bytes(width, "big"))

    def set_field(self, name, value):
        pos = 0
        for n, fmt in HEADER:
            if n == name:
                with open(self.path, "r+b") as f:
                    f.seek(pos)
                    f.write(struct.pack(fmt, value))
                return
            pos += struct.calcsize(fmt)
        raise KeyError(name)


def main(argv):
    if argv[1] == "header":
        for k, v in header(argv[2]).items():
            print(k, v)
        return 0
    if argv[1] == "map":
        return check_map(*argv[2:])
    if argv[1] == "incompat":
        set_incompat(argv[2], int(argv[3]))
        return 0
    if argv[1] == "crypt":
        set_crypt(argv[2], int(argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
