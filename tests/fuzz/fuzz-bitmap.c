/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the persistent dirty-bitmap file
 * (bitmap/store.c, docs/bitmap-format.md).
 *
 * An input is a bitmap file followed by CONTROL_LEN control bytes:
 *   byte 0   bits 0-2: the geometry the store is opened with — one of
 *            GEOMS, or (5-7) the image size and granularity the file's
 *            first header slot claims, when sane; bit 3: strict mode;
 *            bit 4: abandon the writes; bit 5: no file (the store
 *            creates one)
 *   1-6      three writes (offset, length) through begin/end_write
 *   7        a clear from that 256th of the disk to the end (0: none)
 * The file is written to a private tmpfs directory and opened.
 *
 * What must hold, whatever the file holds:
 *   - a non-strict open never fails; a strict one fails exactly when
 *     the file is not wholly valid (below);
 *   - never silently clean: without a valid header for this geometry,
 *     every granule is dirty after opening; with one, every granule of
 *     a data block that is missing (the file is short), all zeroes, or
 *     fails its crc or index is dirty, and every bit a valid block
 *     holds is dirty;
 *   - a file the store creates reads all clean;
 *   - each write's range is dirty after it ends;
 *   - close succeeds and leaves a whole file (header, every block
 *     valid, none missing), which opens in strict mode with exactly the
 *     bits the store had (the clean-close round trip).
 * A failure aborts.  The harness judges the file itself (magic,
 * version, crc, geometry, each block), independently of store.c.
 */
#include <config.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "bitmap/format.h"
#include "bitmap/hbitmap.h"
#include "bitmap/store.h"
#include "common/bufpool.h"
#include "common/error.h"
#include "common/ioq.h"
#include "common/log.h"
#include "common/loop.h"
#include "fuzz.h"

#define CONTROL_LEN 8
#define MAX_FILE (1u << 20)
#define MAX_BITS (1u << 20)     /* bounds the work per input */
#define NR_WRITES 3

static const struct geom {
  uint64_t size;
  uint32_t granularity;
} GEOMS[] = {
  { 1u << 20, 4096 },                   /* 256 bits: one block, mostly unused */
  { 1ull << 30, 65536 },                /* 16384 bits */
  { 3ull << 30, 65536 },                /* 49152 bits: the 2nd block partial */
  { (100u << 20) + 512, 65536 },        /* the last granule partial */
  { 1ull << 30, 32768 },                /* 32768 bits: 64 in the 2nd block */
};
#define NR_GEOMS (sizeof GEOMS / sizeof GEOMS[0])

static struct loop *loop;
static struct ioq *ioq;
static char dir[64], path[96], tmp_path[112];
static unsigned opened, refused, trusted;

static void
fail (const char *what)
{
  fprintf (stderr, "fuzz-bitmap: %s (%s)\n", what, error_get ());
  abort ();
}

static void
cleanup (void)
{
  unlink (path);
  unlink (tmp_path);            /* a creation that failed half-way */
  rmdir (dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  log_init ("fuzz-bitmap", false, FUZZ_LOG_VERBOSITY);
  snprintf (dir, sizeof dir, "%s/mirrord-fuzz-bitmap-XXXXXX",
            access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
  if (mkdtemp (dir) == NULL) {
    perror (dir);
    abort ();
  }
  snprintf (path, sizeof path, "%s/e.bitmap", dir);
  snprintf (tmp_path, sizeof tmp_path, "%s.new", path);
  atexit (cleanup);
  loop = loop_new ();
  ioq = loop ? ioq_new (loop, 16, 1) : NULL;
  if (ioq == NULL)
    fail ("setup");
  return 0;
}

/* ceil (A / B), which cannot wrap: a header may claim any size, and
 * (size + g - 1) / g of a size near 2^64 is tiny — the harness then
 * took a geometry the store rightly refuses (EFBIG) for a sane one. */
static uint64_t
div_round_up (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

static bool
sane (uint64_t size, uint32_t g)
{
  return size > 0 && g >= 4096 && g <= (64u << 20) && (g & (g - 1)) == 0
    && div_round_up (size, g) <= MAX_BITS;
}

static struct geom
pick_geometry (const uint8_t *file, size_t len, uint8_t c)
{
  const struct bitmap_header_disk *hd = (const void *) file;
  unsigned k = c & 7;

  if (k >= NR_GEOMS && len >= sizeof *hd
      && sane (be64_get (hd->image_size), be32_get (hd->granularity)))
    return (struct geom) { be64_get (hd->image_size), be32_get (hd->granularity) };
  return GEOMS[k % NR_GEOMS];
}

/* The valid header slot with the higher sequence (docs/bitmap-format.md),
 * or NULL. */
static const struct bitmap_header_disk *
best_header (const uint8_t *file, size_t len)
{
  const struct bitmap_header_disk *best = NULL;

  for (unsigned i = 0; i < BITMAP_HEADER_SLOTS; i++) {
    const struct bitmap_header_disk *hd = (const void *) (file + i * BITMAP_BLOCK);
    if (len < (i + 1) * BITMAP_BLOCK || memcmp (hd->magic, BITMAP_MAGIC, 8) != 0
        || (be32_get (hd->version) != BITMAP_VERSION
            && be32_get (hd->version) != BITMAP_VERSION_SPARSE)
        || be32_get (hd->crc) != (uint32_t) crc32 (0, (const void *) hd, BITMAP_BLOCK - 4))
      continue;
    if (best == NULL || be64_get (hd->sequence) > be64_get (best->sequence))
      best = hd;
  }
  return best;
}

static uint64_t
geom_bits (struct geom g)
{
  return div_round_up (g.size, g.granularity);
}

static uint32_t
geom_blocks (struct geom g)
{
  uint64_t blocks = div_round_up (geom_bits (g), BITMAP_BITS_PER_BLOCK);
  return blocks ? (uint32_t) blocks : 1;
}

static bool
header_fits (const struct bitmap_header_disk *hd, struct geom g)
{
  return hd && be64_get (hd->image_size) == g.size
    && be32_get (hd->granularity) == g.granularity
    && be64_get (hd->nr_bits) == geom_bits (g)
    && be32_get (hd->nr_blocks) == geom_blocks (g)
    && be32_get (hd->words_per_block) == BITMAP_WORDS_PER_BLOCK;
}

/* Data block B of FILE, if the file holds all of it. */
static const uint8_t *
file_block (const uint8_t *file, size_t len, uint32_t b)
{
  size_t off = (BITMAP_HEADER_SLOTS + (size_t) b) * BITMAP_BLOCK;

  return len >= off + BITMAP_BLOCK ? file + off : NULL;
}

/* The format's rule for a data block: present, not all zeroes (never
 * valid, whatever the crc field says), its own index, its crc. */
static bool
block_valid (const uint8_t *blk, uint32_t b)
{
  struct bitmap_block_disk d;
  bool zero = true;

  if (blk == NULL)
    return false;
  for (size_t i = 0; i < BITMAP_BLOCK && zero; i++)
    zero = blk[i] == 0;
  memcpy (&d, blk, sizeof d);
  return !zero && be32_get (d.index) == b
    && be32_get (d.crc) == (uint32_t) crc32 (0, blk, BITMAP_BLOCK - 4);
}

/* Is FILE wholly valid for G: a fitting header and every block valid? */
static bool
file_valid (const uint8_t *file, size_t len, struct geom g)
{
  if (!header_fits (best_header (file, len), g))
    return false;
  for (uint32_t b = 0; b < geom_blocks (g); b++)
    if (!block_valid (file_block (file, len, b), b))
      return false;
  return true;
}

static struct bitmap_store *
open_store (struct geom g, bool strict)
{
  struct bitmap_store_opts o = {
    .path = path, .image_path = "/fuzz/disk.img", .size = g.size,
    .granularity = g.granularity, .strict = strict,
  };
  return bitmap_store_open (&o, ioq);
}

static void
write_file (const uint8_t *data, size_t len)
{
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

  if (fd == -1 || (len && write (fd, data, len) != (ssize_t) len)) {
    perror (path);
    abort ();
  }
  close (fd);
}

/* ---- What an open must give ---- */

/* The bits of word W that lie inside a bitmap of NBITS bits. */
static uint64_t
word_mask (uint64_t w, uint64_t nbits)
{
  uint64_t first = w * 64;

  if (first >= nbits)
    return 0;
  return nbits - first >= 64 ? UINT64_MAX : (UINT64_C (1) << (nbits - first)) - 1;
}

/* Never silently clean, block by block: an untrusted block's granules
 * are all dirty, a valid block's bits are all kept. */
static void
check_blocks (const uint8_t *file, size_t len, struct geom g,
              const uint64_t *live, uint64_t nbits)
{
  for (uint32_t b = 0; b < geom_blocks (g); b++) {
    const uint8_t *blk = file_block (file, len, b);
    bool valid = block_valid (blk, b);
    for (uint32_t i = 0; i < BITMAP_WORDS_PER_BLOCK; i++) {
      uint64_t w = (uint64_t) b * BITMAP_WORDS_PER_BLOCK + i, fw;
      uint64_t mask = word_mask (w, nbits);
      if (mask == 0)
        break;
      if (!valid) {
        if ((live[w] & mask) != mask)
          fail ("an untrusted data block (missing, zero or corrupt) left clean bits");
        continue;
      }
      memcpy (&fw, blk + 8 * i, 8);
      if (le64toh (fw) & mask & ~live[w])
        fail ("a bit set in a valid data block was dropped");
    }
  }
}

static uint64_t *snapshot (struct bitmap_store *s, uint64_t *nwords);

static void
check_open (struct bitmap_store *s, const uint8_t *file, size_t len,
            struct geom g, bool created)
{
  struct hbitmap *hb = dirty_bitmap_bits (bitmap_store_live (s));
  uint64_t n, *live;

  if (created) {
    if (hbitmap_count (hb) != 0)
      fail ("a new file is not clean");
    return;
  }
  if (!header_fits (best_header (file, len), g)) {
    if (hbitmap_count (hb) != hbitmap_size (hb))
      fail ("a file without a fitting header left clean bits");
    return;
  }
  trusted++;
  live = snapshot (s, &n);
  check_blocks (file, len, g, live, hbitmap_size (hb));
  free (live);
}

/* ---- Writes through the store ---- */

struct write {
  struct bitmap_intent in;
  uint64_t offset, length;
  bool ready;
  int err;
};

static unsigned waiting;

static void
on_ready (struct bitmap_intent *in, int err)
{
  struct write *w = in->opaque;

  w->ready = true;
  w->err = err;
  if (--waiting == 0)
    loop_stop (loop);
}

/* Three writes in flight together, as the export layer has them, each
 * ended once the file records it; odd ones end clean (mirrored). */
static void
do_writes (struct bitmap_store *s, struct geom g, const uint8_t *c, bool abandon)
{
  struct write w[NR_WRITES];
  struct dirty_bitmap *live = bitmap_store_live (s);

  memset (w, 0, sizeof w);
  for (int i = 0; i < NR_WRITES; i++) {
    w[i].offset = g.size / 256 * c[2 * i];
    w[i].length = (uint64_t) (c[2 * i + 1] + 1) * (g.granularity / 2);
    if (w[i].length > g.size - w[i].offset)
      w[i].length = g.size - w[i].offset;
    w[i].in.ready = on_ready;
    w[i].in.opaque = &w[i];
    waiting++;
    if (bitmap_store_begin_write (s, &w[i].in, w[i].offset, w[i].length) == 1) {
      w[i].ready = true;
      waiting--;
    }
  }
  if (waiting && !abandon && loop_run (loop) == -1)
    fail ("loop");
  waiting = 0;
  for (int i = 0; i < NR_WRITES; i++) {
    if (!abandon && (!w[i].ready || w[i].err))
      fail ("a write intent was not recorded");
    if (i % 2)
      bitmap_store_end_write_clean (s, &w[i].in);
    else {
      bitmap_store_end_write (s, &w[i].in);
      if (w[i].length && !dirty_bitmap_is_dirty (live, w[i].offset, w[i].length))
        fail ("a written range is clean");
    }
  }
}

/* Runs what the loop has deferred (a queued flush, say) and stops:
 * whatever the store left behind runs within this input. */
static void
stop_loop (void *opaque)
{
  loop_stop (loop);
}

static void
settle (void)
{
  struct loop_deferred d = { 0 };

  loop_defer (loop, &d, stop_loop, NULL);
  if (loop_run (loop) == -1)
    fail ("loop");
}

/* ---- The round trip ---- */

static uint64_t *
snapshot (struct bitmap_store *s, uint64_t *nwords)
{
  struct hbitmap *hb = dirty_bitmap_bits (bitmap_store_live (s));
  uint64_t *w;

  *nwords = hbitmap_word_count (hb);
  w = calloc (*nwords ? *nwords : 1, sizeof *w);
  if (w == NULL)
    abort ();
  hbitmap_serialize (hb, 0, *nwords, w);
  return w;
}

/* What close wrote is whole: a fitting header and every block. */
static void
check_closed_file (struct geom g)
{
  static uint8_t buf[MAX_FILE];
  uint64_t want = (BITMAP_HEADER_SLOTS + (uint64_t) geom_blocks (g)) * BITMAP_BLOCK;
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  ssize_t n;

  if (fd == -1 || want > sizeof buf)
    fail ("reading the closed file");
  n = pread (fd, buf, sizeof buf, 0);
  close (fd);
  if (n != (ssize_t) want)
    fail ("close left a file of the wrong length");
  if (!file_valid (buf, (size_t) n, g))
    fail ("close left a file that is not wholly valid");
}

static void
close_reopen (struct bitmap_store *s, struct geom g)
{
  uint64_t n1, n2, *before = snapshot (s, &n1), *after;

  if (bitmap_store_close (s) == -1)
    fail ("close failed");
  settle ();
  check_closed_file (g);
  s = open_store (g, true);
  if (s == NULL)
    fail ("the file close wrote is refused in strict mode");
  after = snapshot (s, &n2);
  if (n1 != n2 || memcmp (before, after, n1 * sizeof *before) != 0)
    fail ("the bits changed across a clean close");
  if (bitmap_store_close (s) == -1)
    fail ("second close failed");
  settle ();
  free (before);
  free (after);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t c[CONTROL_LEN] = { 0 };
  size_t flen = size > CONTROL_LEN ? size - CONTROL_LEN : 0;
  struct bitmap_store *s;
  struct geom g;
  bool strict, created;

  if (flen > MAX_FILE)
    return -1;
  memcpy (c, data + flen, size - flen);
  g = pick_geometry (data, flen, c[0]);
  strict = c[0] & 8;
  created = c[0] & 32;
  if (created)
    unlink (path);
  else
    write_file (data, flen);
  s = open_store (g, strict);
  if (s == NULL) {
    if (!strict)
      fail ("a non-strict open failed");
    if (created || file_valid (data, flen, g))
      fail ("strict mode refused a valid file");
    refused++;
    return 0;
  }
  if (strict && !created && !file_valid (data, flen, g))
    fail ("strict mode accepted a file that is not wholly valid");
  opened++;
  check_open (s, data, flen, g, created);
  do_writes (s, g, c + 1, c[0] & 16);
  if (c[7])
    bitmap_store_clear (s, g.size / 256 * c[7], 0);
  close_reopen (s, g);
  return 0;
}

int
fuzz_replay_finish (unsigned inputs)
{
  ioq_free (ioq);
  loop_free (loop);
  bufpool_drain ();
  printf ("replayed %u inputs: %u opened (%u with a fitting header), %u refused\n",
          inputs, opened, trusted, refused);
  return 0;
}
