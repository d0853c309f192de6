/* SPDX-License-Identifier: MIT */
/* libFuzzer target: writes through the qcow2 driver into a mutated
 * image, and checks that no guest data is lost or changed behind the
 * guest's back.  Its replay driver (FUZZ_REPLAY) runs the corpus in
 * every make check.
 *
 * An input is OPS_BYTES of requests (NR_OPS records of 8 bytes: kind,
 * a 24-bit offset, a 16-bit length, a fill byte, a flag byte), then a
 * qcow2 file.  The seeds are tiny images (tests/fuzz/make-corpus-
 * qcow2-write.sh), so most mutations land in metadata.  For each:
 *
 *  1. The file is checked here, independently of the driver, the way
 *     qemu-img check does (check_image): every cluster's references
 *     against its refcount, metadata shared with anything, COPIED
 *     flags.  A file without any such error, and without the features
 *     the driver treats specially (backing file, compression,
 *     snapshots, feature bits), is "clean".
 *  2. It is opened writable (from a memfd).  The first SPAN bytes of
 *     the guest disk are read, in CHUNK pieces: that is the model of
 *     what the guest sees (pieces that fail are unknown).
 *  3. The requests run one by one.  The model follows: a write or a
 *     zero that succeeded sets its bytes; a TRIM must leave each byte
 *     as it was or zero (read back at once); a FAST_ZERO refused with
 *     ENOTSUP must change nothing; any other failure makes its range
 *     unknown.  A flush, then close.
 *  4. The file is opened again read-only and read: every known byte
 *     must be what the model says (a write in place into a cluster
 *     that another guest cluster shares, or over metadata, shows up
 *     here), and every piece that read before must read again.
 *  5. For a clean file: no request may have failed, the corrupt bit
 *     must be clear, and check_image must find the result clean too
 *     (leaked clusters allowed).
 * Any broken rule aborts: a crash for libFuzzer.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "image/image.h"
#include "fuzz.h"
#include "qcow2-harness.h"

#define NR_OPS 8
#define OPS_BYTES (NR_OPS * 8)
#define MAX_FILE (1u << 20)
#define SPAN (256u << 10)
#define CHUNK 4096u
#define MAX_LEN (64u << 10)

/* The checks here are the oracle, not code under test: their branches
 * would only distract libFuzzer (and their comparisons, traced, cost
 * more than the driver). */
#ifdef __clang__
#define ORACLE __attribute__ ((no_sanitize ("coverage")))
#else
#define ORACLE
#endif

static uint8_t *model, *known, *buf;
static bool readable[SPAN / CHUNK];
static unsigned opened, clean_inputs;

/* ---- An independent qemu-img check ---- */

ORACLE static uint64_t
be64 (const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

ORACLE static uint32_t
be32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

#define L_OFFSET 0x00fffffffffffe00ull  /* L1 and L2 entries */
#define R_OFFSET 0xfffffffffffffe00ull  /* refcount table entries */
#define F_COPIED (1ull << 63)
#define F_COMPRESSED (1ull << 62)

struct chk {
  const uint8_t *f;
  size_t len;
  uint64_t cs, n;               /* cluster size; clusters in the file */
  uint32_t *refs;               /* references per cluster */
  uint8_t *meta, *copied;       /* referenced as metadata; by a COPIED entry */
  bool special;                 /* features the driver treats specially */
  bool bad;                     /* an error qemu-img check would report */
};

/* One reference to [OFF, OFF+LEN) (LEN > 0), as metadata or not. */
ORACLE static void
ref (struct chk *c, uint64_t off, uint64_t len, bool meta, bool copied)
{
  if (off / c->cs >= c->n || len > c->n * c->cs - off) {
    c->bad = true;              /* past the end of the file */
    return;
  }
  for (uint64_t i = off / c->cs; i <= (off + len - 1) / c->cs; i++) {
    c->refs[i]++;
    c->meta[i] |= meta;
    c->copied[i] |= copied;
  }
}

/* Is OFF a cluster-aligned offset of a whole cluster in the file? */
ORACLE static bool
table_ok (const struct chk *c, uint64_t off)
{
  return off % c->cs == 0 && off / c->cs < c->n;
}

ORACLE static const uint8_t *
at (const struct chk *c, uint64_t off)
{
  static uint8_t part[8];

  if (off + 8 <= c->len)
    return c->f + off;
  /* Past the end of the file reads as zero (as the driver reads it). */
  memset (part, 0, sizeof part);
  if (off < c->len)
    memcpy (part, c->f + off, c->len - off);
  return part;
}

ORACLE static void
check_l2 (struct chk *c, uint64_t l2, unsigned cluster_bits, bool v3)
{
  for (uint64_t j = 0; j < c->cs / 8; j++) {
    uint64_t e = be64 (at (c, l2 + j * 8)), host = e & L_OFFSET;
    if (e & F_COMPRESSED) {
      unsigned x = 62 - (cluster_bits - 8);
      uint64_t coff = e & ((1ull << x) - 1);
      uint64_t nsec = ((e & ((1ull << 62) - 1)) >> x) + 1;
      c->special = true;
      ref (c, coff, (coff & ~511ull) + nsec * 512 - coff, false, false);
      continue;
    }
    if (!v3 && (e & 1))
      c->special = true;        /* a version 2 reserved bit */
    if (host == 0)
      continue;
    if (!table_ok (c, host))
      c->bad = true;
    else
      ref (c, host, c->cs, false, e & F_COPIED);
  }
}

ORACLE static uint64_t
refcount (const struct chk *c, uint64_t rt, uint64_t rt_entries,
          unsigned order, uint64_t i)
{
  uint64_t per = c->cs * 8 >> order, b = i / per, blk, k = i % per;
  unsigned bits = 1u << order;
  const uint8_t *p;
  uint64_t v = 0;

  if (b >= rt_entries || (blk = be64 (at (c, rt + b * 8)) & R_OFFSET) == 0
      || !table_ok (c, blk))
    return 0;
  if (bits < 8) {
    p = at (c, blk + k * bits / 8);
    return (p[0] >> (k * bits % 8)) & ((1u << bits) - 1);
  }
  p = at (c, blk + k * (bits / 8));
  for (unsigned j = 0; j < bits / 8; j++)
    v = v << 8 | p[j];
  return v;
}

/* Returns -1 if F is no qcow2 file it can check, else 0 with *CLEAN. */
ORACLE static int
check_image (const uint8_t *f, size_t len, bool *clean)
{
  struct chk c = { .f = f, .len = len };
  uint32_t version, cluster_bits, l1_size, rt_clusters, order = 4;
  uint64_t l1, rt, rt_entries;

  if (len < 104 || memcmp (f, "QFI\xfb", 4) != 0)
    return -1;
  version = be32 (f + 4);
  cluster_bits = be32 (f + 20);
  l1_size = be32 (f + 36);
  l1 = be64 (f + 40);
  rt = be64 (f + 48);
  rt_clusters = be32 (f + 56);
  if ((version != 2 && version != 3) || cluster_bits < 9 || cluster_bits > 21)
    return -1;
  if (version == 3)
    order = be32 (f + 96);
  c.cs = 1ull << cluster_bits;
  c.n = (len + c.cs - 1) / c.cs;
  if (order > 6 || l1_size > c.n * c.cs / 8 || rt_clusters > c.n
      || l1 % c.cs || rt % c.cs || rt == 0)
    return -1;
  c.special = be64 (f + 8) != 0 || be32 (f + 32) != 0 || be32 (f + 60) != 0
    || (version == 3 && (be64 (f + 72) || be64 (f + 88)));
  c.refs = calloc (c.n, sizeof *c.refs);
  c.meta = calloc (c.n, 1);
  c.copied = calloc (c.n, 1);
  if (c.refs == NULL || c.meta == NULL || c.copied == NULL)
    abort ();
  rt_entries = rt_clusters * c.cs / 8;
  ref (&c, 0, c.cs, true, false);
  if (l1_size)
    ref (&c, l1, (uint64_t) l1_size * 8, true, false);
  ref (&c, rt, rt_clusters * c.cs, true, false);
  for (uint64_t i = 0; i < rt_entries && !c.bad; i++) {
    uint64_t b = be64 (at (&c, rt + i * 8)) & R_OFFSET;
    if (b && !table_ok (&c, b))
      c.bad = true;
    else if (b)
      ref (&c, b, c.cs, true, false);
  }
  for (uint64_t i = 0; i < l1_size && !c.bad; i++) {
    uint64_t e = be64 (at (&c, l1 + i * 8)), l2 = e & L_OFFSET;
    if (l2 == 0)
      continue;
    if (!table_ok (&c, l2)) {
      c.bad = true;
      break;
    }
    ref (&c, l2, c.cs, true, e & F_COPIED);
    check_l2 (&c, l2, cluster_bits, version == 3);
  }
  for (uint64_t i = 0; i < c.n && !c.bad; i++) {
    uint64_t rc = refcount (&c, rt, rt_entries, order, i);
    if (c.refs[i] > rc || (c.meta[i] && c.refs[i] > 1)
        || (c.copied[i] && rc != 1))
      c.bad = true;
  }
  *clean = !c.bad && !c.special;
  free (c.refs);
  free (c.meta);
  free (c.copied);
  return 0;
}

/* ---- The guest's view ---- */

ORACLE static bool
is_known (uint64_t off, uint64_t len)
{
  return memchr (known + off, 1, len) != NULL;
}

/* Step 2: reads the span into the model. */
static void
read_model (struct image *img, uint64_t span)
{
  for (uint64_t off = 0; off < span; off += CHUNK) {
    uint64_t n = span - off < CHUNK ? span - off : CHUNK;
    readable[off / CHUNK] =
      qcow2_harness_run (img, IMAGE_READ, 0, off, n, model + off, NULL) == 0;
    memset (known + off, readable[off / CHUNK], n);
  }
}

/* Step 4: the model against what a fresh read-only open reads. */
ORACLE static void
compare_model (struct image *img, uint64_t span)
{
  for (uint64_t off = 0; off < span; off += CHUNK) {
    uint64_t n = span - off < CHUNK ? span - off : CHUNK;
    if (qcow2_harness_run (img, IMAGE_READ, 0, off, n, buf, NULL) != 0) {
      if (readable[off / CHUNK] && is_known (off, n))
        abort ();               /* it read before, and nothing broke it */
      continue;
    }
    if (memcmp (buf, model + off, n) == 0)
      continue;
    for (uint64_t i = 0; i < n; i++)
      if (known[off + i] && buf[i] != model[off + i])
        abort ();               /* a guest byte changed behind its back */
  }
}

/* A TRIM leaves each byte as it was or zero: read back at once. */
ORACLE static void
after_trim (struct image *img, uint64_t off, uint64_t len)
{
  if (qcow2_harness_run (img, IMAGE_READ, 0, off, len, buf, NULL) != 0) {
    memset (known + off, 0, len);
    return;
  }
  for (uint64_t i = 0; i < len; i++)
    if (known[off + i] && buf[i] != model[off + i] && buf[i] != 0)
      abort ();
  memcpy (model + off, buf, len);
  memset (known + off, 1, len);
}

/* Step 3: one request; returns its error. */
static int
one_op (struct image *img, const uint8_t *op, uint64_t span)
{
  uint64_t off = ((uint64_t) op[1] << 16 | (uint64_t) op[2] << 8 | op[3]) % span;
  uint64_t len = ((uint64_t) op[4] << 8 | op[5]) % MAX_LEN + 1;
  int err;

  if (op[7] & 1)
    off &= ~511ull;             /* sector aligned, as most guests write */
  if (len > span - off)
    len = span - off;
  memset (buf, op[6], len);
  switch (op[0] % 8) {
  case 0: case 1:
    err = qcow2_harness_run (img, IMAGE_WRITE, 0, off, len, buf, NULL);
    break;
  case 2:
    err = qcow2_harness_run (img, IMAGE_WRITE, IMAGE_FUA, off, len, buf, NULL);
    break;
  case 3: case 4: case 6:
    memset (buf, 0, len);
    err = qcow2_harness_run (img, IMAGE_ZERO, op[0] % 8 == 4 ? IMAGE_MAY_TRIM
                             : op[0] % 8 == 6 ? IMAGE_FAST_ZERO : 0,
                             off, len, NULL, NULL);
    if (err == ENOTSUP && op[0] % 8 == 6)
      return 0;                 /* refused before anything changed */
    break;
  case 5:
    err = qcow2_harness_run (img, IMAGE_TRIM, 0, off, len, NULL, NULL);
    if (err == 0)
      after_trim (img, off, len);
    else
      memset (known + off, 0, len);
    return err;
  default:
    return qcow2_harness_run (img, IMAGE_FLUSH, 0, 0, 0, NULL, NULL);
  }
  if (err == 0) {
    memcpy (model + off, buf, len);
    memset (known + off, 1, len);
  }
  else
    memset (known + off, 0, len);
  return err;
}

/* Step 5: what the driver left is clean, and not marked corrupt. */
ORACLE static bool
still_clean (int fd)
{
  struct stat st;
  uint8_t *f;
  bool clean = false;

  if (fstat (fd, &st) == -1 || (f = malloc ((size_t) st.st_size + 1)) == NULL)
    abort ();
  if (pread (fd, f, (size_t) st.st_size, 0) != st.st_size)
    abort ();
  if (check_image (f, (size_t) st.st_size, &clean) == -1
      || (be32 (f + 4) >= 3 && (be64 (f + 72) & 2)))
    clean = false;
  free (f);
  return clean;
}

static struct image *
open_fd (const char *path, bool readonly)
{
  return image_open (path, IMAGE_FORMAT_QCOW2, readonly,
                     IMAGE_CACHE_WRITEBACK, qcow2_harness_ioq ());
}

/* Steps 2-3: returns how many requests failed, or -1 if the open did. */
static int
write_session (const char *path, const uint8_t *ops, uint64_t *span)
{
  struct image *img = open_fd (path, false);
  int failed = 0;

  if (img == NULL)
    return -1;
  *span = img->size < SPAN ? img->size : SPAN;
  read_model (img, *span);
  for (unsigned i = 0; i < NR_OPS && *span; i++)
    failed += one_op (img, ops + i * 8, *span) != 0;
  failed += qcow2_harness_run (img, IMAGE_FLUSH, 0, 0, 0, NULL, NULL) != 0;
  for (uint64_t c = 0; c < *span / CHUNK; c++)
    failed += !readable[c];
  image_close (img);
  return failed;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc;
  (void) argv;
  qcow2_harness_init ("fuzz-qcow2-write");
  model = malloc (SPAN);
  known = malloc (SPAN);
  buf = aligned_alloc (BUFPOOL_ALIGN, SPAN > MAX_LEN ? SPAN : MAX_LEN);
  if (model == NULL || known == NULL || buf == NULL)
    abort ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const uint8_t *f = data + OPS_BYTES;
  size_t flen = size - OPS_BYTES;
  bool clean = false;
  uint64_t span = 0;
  char path[64];
  struct image *img;
  int fd, failed;

  if (size <= OPS_BYTES || flen > MAX_FILE)
    return -1;
  if (check_image (f, flen, &clean) == -1)
    clean = false;
  clean_inputs += clean;
  fd = qcow2_harness_memfd (f, flen, path, sizeof path);
  failed = write_session (path, data, &span);
#ifdef FUZZ_REPLAY
  if (failed >= 0)
    printf ("  %s; %d requests failed\n", clean ? "clean" : "not clean", failed);
  else
    printf ("  not opened: %s\n", error_get ());
#endif
  if (failed >= 0) {
    opened++;
    if ((img = open_fd (path, true)) == NULL)
      abort ();                 /* the writes broke the file */
    compare_model (img, span);
    image_close (img);
    if (clean && (failed || !still_clean (fd)))
      abort ();                 /* a clean image failed or came out unclean */
  }
  close (fd);
  return 0;
}

#ifdef FUZZ_REPLAY
int
fuzz_replay_finish (unsigned inputs)
{
  qcow2_harness_finish ();
  free (model);
  free (known);
  free (buf);
  printf ("replayed %u inputs, %u opened, %u clean\n", inputs, opened,
          clean_inputs);
  return 0;
}
#endif
