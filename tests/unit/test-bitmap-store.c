/* SPDX-License-Identifier: MIT */
/* The persistent store: write intent, persistence round trip, clean and
 * unclean files, corruption (short files, zeroed blocks, bad checksums,
 * version 1 files) and mismatches. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "bitmap/format.h"
#include "bitmap/store.h"
#include "common/error.h"
#include "common/log.h"

#define SIZE (UINT64_C (1) << 30)
#define G 65536u

static struct loop *loop;
static struct ioq *ioq;
static char dir[] = "/tmp/mirrord-test-store-XXXXXX";
static char path[128];

static int
setup (void **state)
{
  log_init ("test", false, 0);
  assert_non_null (mkdtemp (dir));
  snprintf (path, sizeof path, "%s/vm1.bitmap", dir);
  loop = loop_new ();
  ioq = ioq_new (loop, 64, 2);
  assert_non_null (ioq);
  return 0;
}

static int
teardown (void **state)
{
  ioq_free (ioq);
  loop_free (loop);
  unlink (path);
  rmdir (dir);
  return 0;
}

static uint64_t extent;         /* opts.extent of the next open_store() */

static struct bitmap_store *
open_store (uint64_t size, uint32_t gran, bool strict)
{
  struct bitmap_store_opts o = {
    .path = path, .image_path = "/img", .size = size, .granularity = gran,
    .strict = strict, .extent = extent,
  };
  return bitmap_store_open (&o, ioq);
}

static int ready_err = -1;

static void
on_ready (struct bitmap_intent *in, int err)
{
  ready_err = err;
  loop_stop (loop);
}

/* A whole write: intent, (wait), done.  Returns begin_write()'s answer. */
static int
write_range (struct bitmap_store *s, uint64_t off, uint64_t len)
{
  struct bitmap_intent in = { .ready = on_ready };
  int r = bitmap_store_begin_write (s, &in, off, len);

  if (r == 0) {
    ready_err = -1;
    loop_run (loop);
    assert_int_equal (ready_err, 0);
  }
  bitmap_store_end_write (s, &in);
  return r;
}

static void
test_intent_and_round_trip (void **state)
{
  struct bitmap_store *s;

  unlink (path);
  s = open_store (SIZE, G, false);
  assert_non_null (s);
  assert_int_equal (bitmap_store_dirty_bytes (s), 0);
  /* A new region waits for a flush; a marked one does not. */
  assert_int_equal (write_range (s, 0, 4096), 0);
  assert_int_equal (write_range (s, 100, 200), 1);
  /* Writes that continue each other (a stream, four in a row) get
   * 64 MiB ahead marked, so the next granules need no flush. */
  assert_int_equal (write_range (s, G - 1, 2), 0);
  assert_int_equal (write_range (s, 2 * G, G), 0);
  assert_int_equal (write_range (s, 3 * G, G), 0);
  assert_int_equal (write_range (s, 4 * G, G), 0);          /* 4th: marks ahead */
  assert_int_equal (write_range (s, 5 * G, G), 1);
  assert_int_equal (write_range (s, 40 * G, 1), 1);
  assert_int_equal (write_range (s, 2000 * G, 1), 0);        /* past the 64 MiB */
  assert_int_equal (write_range (s, SIZE - 1, 1), 0);       /* the last byte */
  assert_int_equal (bitmap_store_dirty_bytes (s), 9 * G);   /* live: exact */
  assert_int_equal (bitmap_store_flushes (s), 7);
  assert_int_equal (bitmap_store_close (s), 0);

  s = open_store (SIZE, G, false);
  assert_non_null (s);
  assert_int_equal (bitmap_store_dirty_bytes (s), 9 * G);   /* a clean close is exact */
  assert_true (dirty_bitmap_is_dirty (bitmap_store_live (s), SIZE - 1, 1));
  assert_false (dirty_bitmap_is_dirty (bitmap_store_live (s), 6 * G, G));
  /* Cleared and stored. */
  bitmap_store_clear (s, 0, 2 * G);
  assert_int_equal (bitmap_store_dirty_bytes (s), 7 * G);
  assert_int_equal (bitmap_store_close (s), 0);
  s = open_store (SIZE, G, false);
  assert_int_equal (bitmap_store_dirty_bytes (s), 7 * G);
  assert_int_equal (bitmap_store_close (s), 0);
}

static void
corrupt (off_t where)
{
  int fd = open (path, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, "garbage!", 8, where), 8);
  close (fd);
}

static void
test_corrupt_header (void **state)
{
  struct bitmap_store *s;

  unlink (path);
  s = open_store (SIZE, G, false);
  write_range (s, 5 * G, 1);
  assert_int_equal (bitmap_store_close (s), 0);
  /* One slot torn: the other still holds a valid header. */
  corrupt (0);
  corrupt (BITMAP_BLOCK);
  assert_null (open_store (SIZE, G, true));               /* strict refuses */
  assert_non_null (strstr (error_get (), "strict"));
  s = open_store (SIZE, G, false);                        /* otherwise: all dirty */
  assert_non_null (s);
  assert_int_equal (bitmap_store_dirty_bytes (s), SIZE);
  assert_int_equal (bitmap_store_close (s), 0);
}

static void
test_one_torn_slot (void **state)
{
  struct bitmap_store *s;

  unlink (path);
  s = open_store (SIZE, G, false);
  write_range (s, 7 * G, 1);
  assert_int_equal (bitmap_store_close (s), 0);
  /* The newest slot is lost; the older one (written at open, not
   * clean) is used: the data blocks still hold the bits. */
  s = open_store (SIZE, G, false);
  assert_int_equal (bitmap_store_close (s), 0);
  corrupt (0);
  s = open_store (SIZE, G, false);
  assert_non_null (s);
  assert_true (dirty_bitmap_is_dirty (bitmap_store_live (s), 7 * G, 1));
  assert_int_equal (bitmap_store_dirty_bytes (s), G);
  assert_int_equal (bitmap_store_close (s), 0);
}

static void
test_corrupt_block (void **state)
{
  struct bitmap_store *s;
  uint64_t per_block = (uint64_t) BITMAP_BITS_PER_BLOCK * G;

  unlink (path);
  s = open_store (SIZE * 8, G, false);                    /* 8 GiB: 4 blocks */
  write_range (s, 3 * per_block + 10, 1);                 /* in block 3 */
  write_range (s, 0, 1);                                  /* in block 0 */
  assert_int_equal (bitmap_store_close (s), 0);
  corrupt (2 * BITMAP_BLOCK + 3 * BITMAP_BLOCK + 16);     /* block 3 */
  assert_null (open_store (SIZE * 8, G, true));           /* strict refuses */
  s = open_store (SIZE * 8, G, false);
  assert_non_null (s);
  /* Block 3's range is all dirty, block 0 exactly as stored. */
  assert_true (dirty_bitmap_is_dirty (bitmap_store_live (s), 0, 1));
  assert_false (dirty_bitmap_is_dirty (bitmap_store_live (s), G, per_block - G));
  assert_int_equal (bitmap_store_dirty_bytes (s), G + per_block);  /* block 4 is intact */
  assert_int_equal (bitmap_store_close (s), 0);
}

static void
test_mismatch (void **state)
{
  struct bitmap_store *s;

  unlink (path);
  s = open_store (SIZE, G, false);
  assert_int_equal (bitmap_store_close (s), 0);
  s = open_store (SIZE, 2 * G, false);                    /* other granularity */
  assert_int_equal (bitmap_store_dirty_bytes (s), SIZE);
  assert_int_equal (bitmap_store_close (s), 0);
  s = open_store (SIZE / 2, 2 * G, false);                /* other size */
  assert_int_equal (bitmap_store_dirty_bytes (s), SIZE / 2);
  assert_int_equal (bitmap_store_close (s), 0);
  assert_null (open_store (SIZE, 2 * G, true));
}

/* ---- Damage that must never read clean ---- */

#define PER_BLOCK ((uint64_t) BITMAP_BITS_PER_BLOCK * G)
#define BIG (SIZE * 8)            /* 8 GiB: 5 data blocks, the last one short */

static void
file_truncate (off_t len)
{
  assert_int_equal (truncate (path, len), 0);
}

static void
zero_block (uint32_t b)
{
  static const uint8_t zero[BITMAP_BLOCK];
  int fd = open (path, O_WRONLY);

  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, zero, sizeof zero, (off_t) (2 + b) * BITMAP_BLOCK),
                    (ssize_t) sizeof zero);
  close (fd);
}

/* Writes into blocks 0, 1 and 3 of BIG, closed cleanly. */
static void
make_big (void)
{
  struct bitmap_store *s;

  unlink (path);
  s = open_store (BIG, G, false);
  assert_non_null (s);
  write_range (s, 0, 1);
  write_range (s, PER_BLOCK + 5 * G, 1);
  write_range (s, 3 * PER_BLOCK + 10, 1);
  assert_int_equal (bitmap_store_close (s), 0);
}

static bool
all_dirty (const struct dirty_bitmap *live, uint64_t off, uint64_t len)
{
  uint64_t start, n;

  return dirty_bitmap_next_dirty (live, off, len, &start, &n) == 0
    && start == off && n == len;
}

/* Opened non-strict: the three writes are dirty, and so is every
 * granule of the blocks in BAD (a bit mask), nothing else. */
static void
expect_damage (unsigned bad)
{
  struct bitmap_store *s = open_store (BIG, G, false);
  struct dirty_bitmap *live;
  uint64_t want = 0;

  assert_non_null (s);
  live = bitmap_store_live (s);
  assert_true (dirty_bitmap_is_dirty (live, 0, 1));
  assert_true (dirty_bitmap_is_dirty (live, PER_BLOCK + 5 * G, 1));
  assert_true (dirty_bitmap_is_dirty (live, 3 * PER_BLOCK + 10, 1));
  for (unsigned b = 0; b < 5; b++) {
    uint64_t len = b == 4 ? BIG - 4 * PER_BLOCK : PER_BLOCK;
    if (bad & (1u << b)) {
      want += len;
      assert_true (all_dirty (live, b * PER_BLOCK, len));
    }
    else
      want += (b == 0 || b == 1 || b == 3) ? G : 0;
  }
  assert_int_equal (bitmap_store_dirty_bytes (s), want);
  assert_int_equal (bitmap_store_close (s), 0);
  /* Repaired: a strict open takes what that close wrote. */
  s = open_store (BIG, G, true);
  assert_non_null (s);
  assert_int_equal (bitmap_store_dirty_bytes (s), want);
  assert_int_equal (bitmap_store_close (s), 0);
}

static void
expect_strict_refusal (const char *why)
{
  assert_null (open_store (BIG, G, true));
  assert_non_null (strstr (error_get (), "strict"));
  assert_non_null (strstr (error_get (), why));
}

/* A file shorter than its header says: the missing blocks are dirty,
 * whether it ends before the first data block or inside one. */
static void
test_short_file (void **state)
{
  struct stat st;

  make_big ();
  file_truncate (2 * BITMAP_BLOCK);               /* 8 KiB: headers only */
  expect_strict_refusal ("past the end of the file");
  expect_damage (0x1f);
  assert_int_equal (stat (path, &st), 0);         /* whole again */
  assert_int_equal (st.st_size, 7 * BITMAP_BLOCK);

  make_big ();
  file_truncate (4 * BITMAP_BLOCK + 1000);        /* inside block 2 */
  expect_strict_refusal ("past the end of the file");
  expect_damage (0x1c);
}

/* An all-zero block is never a valid empty one. */
static void
test_zero_block (void **state)
{
  make_big ();
  zero_block (1);
  expect_strict_refusal ("all zeroes");
  expect_damage (0x02);
  make_big ();
  zero_block (2);                                 /* no write in it */
  expect_damage (0x04);
}

static void
test_bad_checksum (void **state)
{
  make_big ();
  corrupt (2 * BITMAP_BLOCK + 4 * BITMAP_BLOCK + BITMAP_BLOCK - 8);   /* block 4 */
  expect_strict_refusal ("bad checksum");
  expect_damage (0x10);
}

/* Rewrites every valid header slot as version 1. */
static void
make_version_1 (void)
{
  struct bitmap_header_disk h;
  int fd = open (path, O_RDWR);

  assert_true (fd >= 0);
  for (unsigned i = 0; i < BITMAP_HEADER_SLOTS; i++) {
    assert_int_equal (pread (fd, &h, sizeof h, i * BITMAP_BLOCK), (ssize_t) sizeof h);
    if (be32_get (h.crc) != (uint32_t) crc32 (0, (const void *) &h, BITMAP_BLOCK - 4))
      continue;
    h.version = be32_put (BITMAP_VERSION_SPARSE);
    h.crc = be32_put ((uint32_t) crc32 (0, (const void *) &h, BITMAP_BLOCK - 4));
    assert_int_equal (pwrite (fd, &h, sizeof h, i * BITMAP_BLOCK), (ssize_t) sizeof h);
  }
  close (fd);
}

static uint32_t
file_version (void)
{
  struct bitmap_header_disk h[2];
  int fd = open (path, O_RDONLY);
  unsigned best;

  assert_true (fd >= 0);
  assert_int_equal (pread (fd, h, sizeof h, 0), (ssize_t) sizeof h);
  close (fd);
  best = be64_get (h[1].sequence) > be64_get (h[0].sequence);
  return be32_get (h[best].version);
}

/* Version 1 is converted: its valid blocks are kept, its zero blocks
 * (version 1's empty ones, or damage: no telling) are dirty. */
static void
test_version_1 (void **state)
{
  make_big ();
  make_version_1 ();
  zero_block (2);
  expect_strict_refusal ("version 1");
  expect_damage (0x04);
  assert_int_equal (file_version (), BITMAP_VERSION);
  /* Without zero blocks, even strict mode converts it. */
  make_big ();
  make_version_1 ();
  struct bitmap_store *s = open_store (BIG, G, true);
  assert_non_null (s);
  assert_int_equal (bitmap_store_dirty_bytes (s), 3 * G);
  assert_int_equal (bitmap_store_close (s), 0);
  assert_int_equal (file_version (), BITMAP_VERSION);
}

/* A new file is written whole (no hole reads as a valid block) and
 * appears under its name only then. */
static void
test_new_file_whole (void **state)
{
  char tmp[160];
  struct stat st;
  struct bitmap_store *s;

  unlink (path);
  s = open_store (BIG, G, false);
  assert_non_null (s);
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (st.st_size, 7 * BITMAP_BLOCK);
  assert_true ((uint64_t) st.st_blocks * 512 >= 7 * BITMAP_BLOCK);
  snprintf (tmp, sizeof tmp, "%s.new", path);
  assert_int_equal (access (tmp, F_OK), -1);
  assert_int_equal (bitmap_store_close (s), 0);
  s = open_store (BIG, G, true);
  assert_non_null (s);
  assert_int_equal (bitmap_store_dirty_bytes (s), 0);
  assert_int_equal (bitmap_store_close (s), 0);
}

static void
stop_loop (void *opaque)
{
  loop_stop (loop);
}

/* Bit BIT of the file's first data block. */
static bool
file_bit (unsigned bit)
{
  struct bitmap_block_disk blk;
  int fd = open (path, O_RDONLY);

  assert_true (fd >= 0);
  assert_int_equal (pread (fd, &blk, sizeof blk, 2 * BITMAP_BLOCK), (ssize_t) sizeof blk);
  close (fd);
  return (le64toh (blk.words_le[bit / 64]) >> (bit % 64)) & 1;
}

static void
test_lazy_clear_keeps_inflight (void **state)
{
  struct bitmap_store *s;
  struct bitmap_intent in = { .ready = on_ready };
  struct loop_source *t;

  unlink (path);
  s = open_store (SIZE, G, false);
  write_range (s, 0, 1);
  write_range (s, 2 * G, 1);
  assert_true (file_bit (0) && file_bit (2));
  /* A write in flight on granule 0 while 0..3 are cleared: the file
   * drops granule 2 but keeps 0 until that write is done. */
  assert_int_equal (bitmap_store_begin_write (s, &in, 0, 1), 1);
  bitmap_store_clear (s, 0, 4 * G);
  assert_int_equal (bitmap_store_dirty_bytes (s), 0);
  t = loop_add_timer (loop, 1500, 0, stop_loop, NULL);   /* past the 1 s lazy delay */
  loop_run (loop);
  loop_source_remove (t);
  assert_true (file_bit (0));
  assert_false (file_bit (2));
  bitmap_store_end_write (s, &in);
  assert_int_equal (bitmap_store_dirty_bytes (s), G);
  assert_int_equal (bitmap_store_close (s), 0);
}

/* With extents of 16 granules, a write needing new bits marks its whole
 * extent on disk (one flush), the live bitmap stays exact, the extent's
 * other granules need no flush, and a clean close stores only the live
 * bits. */
static void
test_extent (void **state)
{
  struct bitmap_store *s;

  unlink (path);
  extent = 16 * G;
  s = open_store (SIZE, G, false);
  extent = 0;
  assert_non_null (s);
  assert_int_equal (write_range (s, 5 * G, 1), 0);          /* new: a flush */
  for (unsigned b = 0; b < 16; b++)
    assert_true (file_bit (b));
  assert_false (file_bit (16));
  assert_int_equal (bitmap_store_flushes (s), 1);
  assert_int_equal (write_range (s, 9 * G, 1), 1);          /* same extent */
  assert_int_equal (write_range (s, 0, G), 1);
  assert_int_equal (write_range (s, 20 * G, 1), 0);         /* the next one */
  assert_true (file_bit (31));
  assert_int_equal (bitmap_store_flushes (s), 2);
  assert_int_equal (bitmap_store_dirty_bytes (s), 4 * G);   /* live: exact */
  assert_int_equal (bitmap_store_close (s), 0);
  assert_true (file_bit (5) && file_bit (9) && file_bit (0) && file_bit (20));
  assert_false (file_bit (1) || file_bit (15) || file_bit (21));
}

/* A write ended clean (the mirror target has it too). */
static void
write_clean (struct bitmap_store *s, uint64_t off, uint64_t len)
{
  struct bitmap_intent in = { .ready = on_ready };

  if (bitmap_store_begin_write (s, &in, off, len) == 0) {
    loop_run (loop);
    assert_int_equal (ready_err, 0);
  }
  bitmap_store_end_write_clean (s, &in);
}

static void
run_past_clear_delay (void)
{
  struct loop_source *t = loop_add_timer (loop, 1500, 0, stop_loop, NULL);

  loop_run (loop);
  loop_source_remove (t);
}

/* Granules written clean stay on disk while hot, so writing them again
 * costs no flush; the set is bounded (1 GiB per generation: with 64 MiB
 * granules, 16 of them), and a clean close stores the exact bitmap. */
static void
test_activity_set (void **state)
{
  const uint64_t g = 64u << 20;
  struct bitmap_store *s;
  uint64_t flushes;

  unlink (path);
  s = open_store (40 * g, (uint32_t) g, false);
  assert_non_null (s);
  write_clean (s, 3 * g, 4096);
  run_past_clear_delay ();
  assert_int_equal (bitmap_store_dirty_bytes (s), 0);
  assert_true (file_bit (3));
  flushes = bitmap_store_flushes (s);
  write_clean (s, 3 * g + 8192, 4096);
  assert_int_equal (bitmap_store_flushes (s), flushes);      /* no flush */
  /* 32 more: two generations fill (3..18, then 19..34): the older one,
   * granule 3's, leaves the file. */
  for (unsigned i = 4; i < 36; i++)
    write_clean (s, i * g, 1);
  run_past_clear_delay ();
  assert_false (file_bit (3));
  assert_false (file_bit (18));
  assert_true (file_bit (19) && file_bit (35));
  assert_int_equal (bitmap_store_dirty_bytes (s), 0);
  assert_int_equal (bitmap_store_close (s), 0);
  s = open_store (40 * g, (uint32_t) g, false);
  assert_int_equal (bitmap_store_dirty_bytes (s), 0);
  assert_false (file_bit (35));                             /* exact on close */
  assert_int_equal (bitmap_store_close (s), 0);
}

/* Marks without a write reach the file before the barrier is ready;
 * a barrier with nothing pending is ready at once. */
static void
test_mark_barrier (void **state)
{
  struct bitmap_intent in = { .ready = on_ready };
  struct bitmap_store *s;

  unlink (path);
  s = open_store (SIZE, G, false);
  assert_non_null (s);
  assert_int_equal (bitmap_store_barrier (s, &in), 1);
  bitmap_store_mark (s, 7 * G + 1, 10);
  bitmap_store_mark (s, 100 * G, 3 * G);
  bitmap_store_mark (s, SIZE - 1, 1000);                    /* clipped */
  assert_int_equal (bitmap_store_dirty_bytes (s), 5 * G);   /* live at once */
  assert_false (file_bit (7));
  ready_err = -1;
  assert_int_equal (bitmap_store_barrier (s, &in), 0);
  loop_run (loop);
  assert_int_equal (ready_err, 0);
  assert_true (file_bit (7) && file_bit (100) && file_bit (102));
  assert_true (file_bit (SIZE / G - 1));
  assert_false (file_bit (103));
  /* Marked already: nothing to wait for. */
  bitmap_store_mark (s, 100 * G, G);
  assert_int_equal (bitmap_store_barrier (s, &in), 1);
  /* A barrier withdrawn before it is ready is never called. */
  bitmap_store_mark (s, 500 * G, G);
  ready_err = -1;
  assert_int_equal (bitmap_store_barrier (s, &in), 0);
  bitmap_store_barrier_cancel (s, &in);
  run_past_clear_delay ();
  assert_int_equal (ready_err, -1);
  assert_true (file_bit (500));
  assert_int_equal (bitmap_store_close (s), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_intent_and_round_trip),
    cmocka_unit_test (test_corrupt_header),
    cmocka_unit_test (test_one_torn_slot),
    cmocka_unit_test (test_corrupt_block),
    cmocka_unit_test (test_mismatch),
    cmocka_unit_test (test_short_file),
    cmocka_unit_test (test_zero_block),
    cmocka_unit_test (test_bad_checksum),
    cmocka_unit_test (test_version_1),
    cmocka_unit_test (test_new_file_whole),
    cmocka_unit_test (test_lazy_clear_keeps_inflight),
    cmocka_unit_test (test_activity_set),
    cmocka_unit_test (test_mark_barrier),
    cmocka_unit_test (test_extent),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
