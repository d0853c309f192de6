/* SPDX-License-Identifier: MIT */
/* hbitmap and dirty_bitmap: edges, levels, a naive model, persistence
 * words, byte rounding, and the freeze/successor protocol. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "bitmap/dirty-bitmap.h"
#include "bitmap/hbitmap.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
/* Bits covered by one word of level 1 and of level 2. */
#define L1_SPAN (UINT64_C (64) * 64)
#define L2_SPAN (UINT64_C (64) * 64 * 64)

/* xorshift64*, fixed seed: every run sees the same operations. */
static uint64_t rng_state;

static void
rng_seed (uint64_t seed)
{
  rng_state = seed;
}

static uint64_t
rnd (void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * UINT64_C (2685821657736338717);
}

static uint64_t
rnd_below (uint64_t n)
{
  return rnd () % n;
}

/* ---- The model: one bool per bit. ---- */

static int64_t
model_next (const bool *m, uint64_t n, uint64_t from, bool value)
{
  for (uint64_t i = from; i < n; i++)
    if (m[i] == value)
      return (int64_t) i;
  return -1;
}

static uint64_t
model_count (const bool *m, uint64_t n)
{
  uint64_t count = 0;

  for (uint64_t i = 0; i < n; i++)
    count += m[i];
  return count;
}

/* Compare every observable of HB with M. */
static void
check_model (const struct hbitmap *hb, const bool *m, uint64_t n)
{
  int64_t bit = -1;

  assert_int_equal (hbitmap_count (hb), model_count (m, n));
  for (uint64_t i = 0; i < n; i++)
    assert_int_equal (hbitmap_get (hb, i), m[i]);
  do {
    int64_t want = model_next (m, n, (uint64_t) (bit + 1), true);
    bit = hbitmap_next_set (hb, (uint64_t) (bit + 1));
    assert_int_equal (bit, want);
  } while (bit >= 0);
  bit = -1;
  do {
    int64_t want = model_next (m, n, (uint64_t) (bit + 1), false);
    bit = hbitmap_next_zero (hb, (uint64_t) (bit + 1));
    assert_int_equal (bit, want);
  } while (bit >= 0 && (uint64_t) bit < n - 1);
}

/* A random range of N bits: mostly short, sometimes long. */
static void
random_range (uint64_t n, uint64_t *start, uint64_t *count)
{
  uint64_t max = rnd_below (4) == 0 ? 3000 : 130;

  *count = rnd_below (max < n ? max : n) + 1;
  *start = rnd_below (n - *count + 1);
}

static void
random_fill (struct hbitmap *hb, bool *m, uint64_t n, unsigned ops)
{
  for (unsigned i = 0; i < ops; i++) {
    uint64_t start, count;

    random_range (n, &start, &count);
    hbitmap_set (hb, start, count);
    for (uint64_t b = start; b < start + count; b++)
      m[b] = true;
  }
}

/* ---- hbitmap ---- */

static void
test_hb_small_edges (void **state)
{
  const uint64_t n = 1000;      /* not a multiple of 64 */
  struct hbitmap *hb = hbitmap_new (n);

  assert_non_null (hb);
  assert_int_equal (hbitmap_word_count (hb), 16);
  assert_int_equal (hbitmap_next_set (hb, 0), -1);
  assert_int_equal (hbitmap_next_zero (hb, 999), 999);
  assert_int_equal (hbitmap_set (hb, 0, 1), 1);
  assert_int_equal (hbitmap_set (hb, 0, 1), 0);         /* already set */
  assert_int_equal (hbitmap_set (hb, n - 1, 1), 1);
  assert_true (hbitmap_get (hb, 0));
  assert_true (hbitmap_get (hb, n - 1));
  assert_false (hbitmap_get (hb, n - 2));
  assert_int_equal (hbitmap_count (hb), 2);
  assert_int_equal (hbitmap_next_set (hb, 0), 0);
  assert_int_equal (hbitmap_next_set (hb, 1), n - 1);
  assert_int_equal (hbitmap_next_set (hb, n), -1);
  assert_int_equal (hbitmap_next_set (hb, UINT64_MAX), -1);
  assert_int_equal (hbitmap_next_zero (hb, 0), 1);
  /* Bits past the end are not "zero bits" of the bitmap. */
  assert_int_equal (hbitmap_next_zero (hb, n - 1), -1);
  assert_int_equal (hbitmap_set (hb, 0, n), n - 2);
  assert_int_equal (hbitmap_count (hb), n);
  assert_int_equal (hbitmap_next_zero (hb, 0), -1);
  assert_int_equal (hbitmap_reset (hb, 1, n - 2), n - 2);
  assert_int_equal (hbitmap_reset (hb, 1, n - 2), 0);
  assert_int_equal (hbitmap_set (hb, 5, 0), 0);
  assert_int_equal (hbitmap_count (hb), 2);
  assert_int_equal (hbitmap_next_set (hb, 1), n - 1);
  hbitmap_reset_all (hb);
  assert_int_equal (hbitmap_count (hb), 0);
  assert_int_equal (hbitmap_next_set (hb, 0), -1);
  hbitmap_free (hb);
}

static void
test_hb_tiny_sizes (void **state)
{
  static const uint64_t sizes[] = { 0, 1, 63, 64, 65, 4096, 4097 };

  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint64_t n = sizes[i], start, len;
    struct hbitmap *hb = hbitmap_new (n);

    assert_non_null (hb);
    assert_int_equal (hbitmap_size (hb), n);
    assert_int_equal (hbitmap_next_set (hb, 0), -1);
    assert_false (hbitmap_next_dirty_area (hb, 0, UINT64_MAX, &start, &len));
    if (n > 0) {
      hbitmap_set (hb, n - 1, 1);
      assert_int_equal (hbitmap_next_set (hb, 0), n - 1);
      assert_true (hbitmap_next_dirty_area (hb, 0, UINT64_MAX, &start, &len));
      assert_int_equal (start, n - 1);
      assert_int_equal (len, 1);
      hbitmap_reset (hb, 0, n);
      assert_int_equal (hbitmap_next_set (hb, 0), -1);
    }
    hbitmap_free (hb);
  }
}

/* Ranges that cross word, level-1 and level-2 boundaries, set and
 * cleared piecewise: the upper levels must follow exactly. */
static void
test_hb_level_boundaries (void **state)
{
  const uint64_t n = 2 * L2_SPAN + 77;  /* four levels */
  struct hbitmap *hb = hbitmap_new (n);
  uint64_t start, len;

  assert_non_null (hb);
  assert_int_equal (hbitmap_set (hb, L2_SPAN - 5, 10), 10);
  assert_int_equal (hbitmap_next_set (hb, 0), L2_SPAN - 5);
  assert_int_equal (hbitmap_next_zero (hb, L2_SPAN - 5), L2_SPAN + 5);
  assert_int_equal (hbitmap_reset (hb, L2_SPAN - 5, 5), 5);
  assert_int_equal (hbitmap_next_set (hb, 0), L2_SPAN);
  assert_int_equal (hbitmap_reset (hb, L2_SPAN, 5), 5);
  assert_int_equal (hbitmap_next_set (hb, 0), -1);
  assert_int_equal (hbitmap_count (hb), 0);

  /* A set bit past a cleared region is still found: no stale parent. */
  hbitmap_set (hb, n - 1, 1);
  assert_int_equal (hbitmap_next_set (hb, 0), n - 1);
  assert_int_equal (hbitmap_next_set (hb, L1_SPAN), n - 1);

  /* One range over many level-1 words, then a hole in its middle. */
  hbitmap_set (hb, L1_SPAN - 1, 3 * L1_SPAN + 2);
  assert_int_equal (hbitmap_count (hb), 3 * L1_SPAN + 3);
  hbitmap_reset (hb, L1_SPAN + 1, 2 * L1_SPAN - 2);
  assert_true (hbitmap_next_dirty_area (hb, 0, n, &start, &len));
  assert_int_equal (start, L1_SPAN - 1);
  assert_int_equal (len, 2);
  assert_true (hbitmap_next_dirty_area (hb, start + len, n, &start, &len));
  assert_int_equal (start, 3 * L1_SPAN - 1);
  assert_int_equal (len, L1_SPAN + 2);
  /* Clipped by max_len, and a window that ends before the next run. */
  assert_true (hbitmap_next_dirty_area (hb, start + 1, 10, &start, &len));
  assert_int_equal (start, 3 * L1_SPAN);
  assert_int_equal (len, 10);
  assert_false (hbitmap_next_dirty_area (hb, L1_SPAN + 1, L1_SPAN, &start, &len));
  assert_true (hbitmap_next_dirty_area (hb, 4 * L1_SPAN + 1, n, &start, &len));
  assert_int_equal (start, n - 1);
  assert_int_equal (len, 1);
  hbitmap_free (hb);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 2^33 bits (1 GiB of level 0): only touched pages are committed, and
 * next_set over the clean gigabyte is a handful of word reads. */
static void
test_hb_huge_sparse (void **state)
{
  const uint64_t n = UINT64_C (1) << 33;
  static const uint64_t bits[] = {
    12345, UINT64_C (1) << 32, (UINT64_C (1) << 32) + 64, (UINT64_C (1) << 33) - 1,
  };
  struct hbitmap *hb = hbitmap_new (n);
  double t0;
  int64_t bit;

  assert_non_null (hb);
  for (size_t i = 0; i < 4; i++)
    hbitmap_set (hb, bits[i], 1);
  assert_int_equal (hbitmap_count (hb), 4);
  t0 = now ();
  for (int round = 0; round < 1000; round++) {
    bit = hbitmap_next_set (hb, 0);
    for (size_t i = 0; i < 4; i++) {
      assert_int_equal (bit, bits[i]);
      bit = hbitmap_next_set (hb, (uint64_t) bit + 1);
    }
    assert_int_equal (bit, -1);
  }
  /* A linear scan would read 5 TB here; allow valgrind's slowdown. */
  assert_true (now () - t0 < 5.0);
  hbitmap_set (hb, n - 100, 100);
  assert_int_equal (hbitmap_count (hb), 103);
  hbitmap_reset (hb, 0, n);
  assert_int_equal (hbitmap_count (hb), 0);
  assert_int_equal (hbitmap_next_set (hb, 0), -1);
  hbitmap_free (hb);

  assert_null (hbitmap_new (HBITMAP_MAX_BITS + 1));
  assert_int_equal (errno, EINVAL);
}

static void
random_run (uint64_t n, unsigned ops)
{
  struct hbitmap *hb = hbitmap_new (n);
  bool *m = calloc (n, sizeof *m);

  assert_non_null (hb);
  assert_non_null (m);
  for (unsigned i = 0; i < ops; i++) {
    uint64_t start, count, from = rnd_below (n), want = 0;
    bool set = rnd_below (10) < 6;

    random_range (n, &start, &count);
    for (uint64_t b = start; b < start + count; b++) {
      want += m[b] != set;
      m[b] = set;
    }
    if (set)
      assert_int_equal (hbitmap_set (hb, start, count), want);
    else
      assert_int_equal (hbitmap_reset (hb, start, count), want);
    assert_int_equal (hbitmap_count (hb), model_count (m, n));
    assert_int_equal (hbitmap_next_set (hb, from), model_next (m, n, from, true));
    assert_int_equal (hbitmap_next_zero (hb, from), model_next (m, n, from, false));
    if (i % 500 == 0)
      check_model (hb, m, n);
  }
  check_model (hb, m, n);
  free (m);
  hbitmap_free (hb);
}

static void
test_hb_random_model (void **state)
{
  rng_seed (UINT64_C (0x6d6972726f7264));
  random_run (70001, 5000);             /* three levels */
  random_run (2 * L2_SPAN + 13, 2000);  /* four levels */
}

static void
test_hb_merge_copy (void **state)
{
  const uint64_t n = 100003;
  struct hbitmap *a = hbitmap_new (n), *b = hbitmap_new (n);
  bool *ma = calloc (n, sizeof (bool)), *mb = calloc (n, sizeof (bool));
  uint64_t both = 0;

  rng_seed (42);
  random_fill (a, ma, n, 100);
  random_fill (b, mb, n, 100);
  for (uint64_t i = 0; i < n; i++)
    both += ma[i] || mb[i];
  assert_int_equal (hbitmap_count_union (a, b), both);
  assert_int_equal (hbitmap_count_union (b, a), both);
  assert_int_equal (hbitmap_count_union (a, a), hbitmap_count (a));

  hbitmap_merge (a, b);
  for (uint64_t i = 0; i < n; i++)
    ma[i] = ma[i] || mb[i];
  check_model (a, ma, n);
  check_model (b, mb, n);

  hbitmap_copy (a, b);          /* a was a superset: bits must go */
  check_model (a, mb, n);
  hbitmap_reset_all (b);
  memset (mb, 0, n);
  check_model (b, mb, n);
  hbitmap_copy (a, b);
  check_model (a, mb, n);
  /* Still usable after reset_all gave its pages back. */
  memset (ma, 0, n);
  random_fill (a, ma, n, 10);
  check_model (a, ma, n);
  hbitmap_reset_all (a);
  memset (ma, 0, n);
  check_model (a, ma, n);
  random_fill (a, ma, n, 10);
  check_model (a, ma, n);
  free (ma);
  free (mb);
  hbitmap_free (a);
  hbitmap_free (b);
}

static void
test_hb_serialize (void **state)
{
  const uint64_t n = 64 * 70 + 10;      /* 71 words, the last partial */
  struct hbitmap *a = hbitmap_new (n), *b = hbitmap_new (n);
  bool *m = calloc (n, sizeof (bool));
  uint64_t words[71], one[2];
  const unsigned char *bytes = (const unsigned char *) words;

  assert_int_equal (hbitmap_word_count (a), 71);
  rng_seed (7);
  random_fill (a, m, n, 30);
  hbitmap_reset (a, 0, 16);
  hbitmap_set (a, 0, 1);
  hbitmap_set (a, 9, 1);
  memset (m, 0, 16);
  m[0] = m[9] = true;
  hbitmap_serialize (a, 0, 71, words);
  /* Little-endian whatever the host: bit 0 -> byte 0, bit 9 -> byte 1. */
  assert_int_equal (bytes[0], 0x01);
  assert_int_equal (bytes[1], 0x02);
  hbitmap_deserialize_words (b, 0, 71, words);
  check_model (b, m, n);

  /* Partial loads replace just their words, count and levels included;
   * bits past the end are dropped. */
  memset (one, 0, sizeof one);
  hbitmap_deserialize_words (b, 3, 1, one);
  memset (m + 3 * 64, 0, 64);
  check_model (b, m, n);
  memset (one, 0xff, sizeof one);
  hbitmap_deserialize_words (b, 69, 2, one);
  for (uint64_t i = 69 * 64; i < n; i++)
    m[i] = true;
  check_model (b, m, n);
  assert_int_equal (hbitmap_next_zero (b, 69 * 64), -1);
  memset (words, 0, sizeof words);
  hbitmap_deserialize_words (b, 0, 71, words);
  assert_int_equal (hbitmap_count (b), 0);
  assert_int_equal (hbitmap_next_set (b, 0), -1);
  hbitmap_deserialize_words (b, 71, 0, words);  /* empty range at the end */
  free (m);
  hbitmap_free (a);
  hbitmap_free (b);
}

/* ---- dirty_bitmap ---- */

#define G (4 * KiB)
/* Eleven granules, the last one 100 bytes long. */
#define IMG (10 * G + 100)

static void
test_db_geometry (void **state)
{
  static const uint32_t bad[] = { 0, 512, 4095, 3 * 4096, 128 << 20 };
  struct dirty_bitmap *bm;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_null (dirty_bitmap_new (MiB, bad[i]));
    assert_int_equal (errno, EINVAL);
  }
  assert_null (dirty_bitmap_new ((HBITMAP_MAX_BITS << 12) + 1, 4096));
  assert_int_equal (errno, EFBIG);
  assert_null (dirty_bitmap_new (UINT64_MAX, 64 << 20));
  assert_int_equal (errno, EFBIG);

  bm = dirty_bitmap_new (0, DIRTY_BITMAP_DEFAULT_GRANULARITY);
  assert_non_null (bm);
  dirty_bitmap_mark_all (bm);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 0);
  dirty_bitmap_free (bm);

  bm = dirty_bitmap_new (MiB, 64 << 20);        /* one partial granule */
  assert_non_null (bm);
  assert_int_equal (dirty_bitmap_granularity (bm), 64 << 20);
  dirty_bitmap_mark (bm, 5, 1);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), MiB);
  dirty_bitmap_clear (bm, 1, MiB - 1);          /* misses byte 0 */
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), MiB);
  dirty_bitmap_clear (bm, 0, MiB);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 0);
  dirty_bitmap_free (bm);
}

static void
test_db_rounding (void **state)
{
  struct dirty_bitmap *bm = dirty_bitmap_new (IMG, G);

  assert_non_null (bm);
  assert_int_equal (dirty_bitmap_size (bm), IMG);
  /* Outward: two bytes straddling a boundary dirty two granules. */
  dirty_bitmap_mark (bm, G - 1, 2);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 2 * G);
  assert_true (dirty_bitmap_is_dirty (bm, 0, 1));
  assert_true (dirty_bitmap_is_dirty (bm, 2 * G - 1, 1));
  assert_false (dirty_bitmap_is_dirty (bm, 2 * G, G));
  assert_false (dirty_bitmap_is_dirty (bm, 0, 0));
  dirty_bitmap_mark (bm, 5 * G, 0);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 2 * G);

  /* Inward: a range short of whole granules clears nothing. */
  dirty_bitmap_clear (bm, 1, 2 * G - 2);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 2 * G);
  dirty_bitmap_clear (bm, 0, 2 * G - 1);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), G);
  assert_false (dirty_bitmap_is_dirty (bm, 0, G));
  assert_true (dirty_bitmap_is_dirty (bm, G - 1, 2));

  /* The partial last granule counts for its 100 bytes ... */
  dirty_bitmap_mark (bm, IMG - 1, 1);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), G + 100);
  /* ... is not cleared by a range that misses its first byte ... */
  dirty_bitmap_clear (bm, IMG - 50, 50);
  assert_true (dirty_bitmap_is_dirty (bm, IMG - 1, 1));
  /* ... nor by one that stops short of the end ... */
  dirty_bitmap_clear (bm, 10 * G, 99);
  assert_true (dirty_bitmap_is_dirty (bm, IMG - 1, 1));
  /* ... and is cleared by one that reaches the end. */
  dirty_bitmap_clear (bm, 10 * G - 7, 107);
  assert_false (dirty_bitmap_is_dirty (bm, 10 * G, 100));
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), G);

  dirty_bitmap_mark_all (bm);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), IMG);
  dirty_bitmap_clear (bm, 0, IMG);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 0);
  dirty_bitmap_mark_all (bm);
  dirty_bitmap_clear_all (bm);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 0);
  dirty_bitmap_free (bm);
}

static void
expect_run (const struct dirty_bitmap *bm, uint64_t offset, uint64_t max_len,
            uint64_t want_start, uint64_t want_len)
{
  uint64_t start = 0, len = 0;

  assert_int_equal (dirty_bitmap_next_dirty (bm, offset, max_len, &start, &len), 0);
  assert_int_equal (start, want_start);
  assert_int_equal (len, want_len);
}

static void
test_db_next_dirty (void **state)
{
  struct dirty_bitmap *bm = dirty_bitmap_new (IMG, G);
  uint64_t start, len;

  assert_int_equal (dirty_bitmap_next_dirty (bm, 0, IMG, &start, &len), 1);
  dirty_bitmap_mark (bm, G + 10, 1);            /* granule 1 */
  dirty_bitmap_mark (bm, 3 * G, 2 * G);         /* granules 3, 4 */
  dirty_bitmap_mark (bm, IMG - 1, 1);           /* granule 10, partial */
  expect_run (bm, 0, UINT64_MAX, G, G);
  expect_run (bm, G + 100, UINT64_MAX, G + 100, G - 100);  /* from offset */
  expect_run (bm, 2 * G, UINT64_MAX, 3 * G, 2 * G);
  expect_run (bm, 2 * G, G + 5, 3 * G, 5);                 /* max_len */
  expect_run (bm, 5 * G, UINT64_MAX, 10 * G, 100);         /* image end */
  expect_run (bm, IMG - 1, 1, IMG - 1, 1);
  assert_int_equal (dirty_bitmap_next_dirty (bm, 5 * G, 5 * G, &start, &len), 1);
  assert_int_equal (dirty_bitmap_next_dirty (bm, IMG, 1, &start, &len), 1);
  assert_int_equal (dirty_bitmap_next_dirty (bm, 0, 0, &start, &len), 1);
  /* Adjacent marks make one run. */
  dirty_bitmap_mark (bm, 2 * G, 1);
  expect_run (bm, 0, UINT64_MAX, G, 4 * G);
  assert_int_equal (dirty_bitmap_next_pending (bm, 0, UINT64_MAX, &start, &len), 0);
  assert_int_equal (start, G);
  assert_int_equal (len, 4 * G);
  dirty_bitmap_free (bm);
}

static void
test_db_freeze_abdicate (void **state)
{
  struct dirty_bitmap *bm = dirty_bitmap_new (IMG, G);
  uint64_t start, len;

  dirty_bitmap_mark (bm, 0, 2 * G);             /* granules 0, 1 */
  assert_int_equal (dirty_bitmap_freeze (bm), 0);
  assert_true (dirty_bitmap_is_frozen (bm));
  assert_int_equal (dirty_bitmap_freeze (bm), -1);
  assert_int_equal (errno, EBUSY);
  assert_non_null (dirty_bitmap_successor_bits (bm));

  /* Writes during the pass: one on a granule the pass will copy, one
   * elsewhere.  They land in the successor only. */
  dirty_bitmap_mark (bm, G, 1);
  dirty_bitmap_mark (bm, 5 * G, 1);
  assert_int_equal (hbitmap_count (dirty_bitmap_bits (bm)), 2);
  assert_int_equal (hbitmap_count (dirty_bitmap_successor_bits (bm)), 2);
  /* Union, not sum: granule 1 is in both. */
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 3 * G);
  assert_true (dirty_bitmap_is_dirty (bm, 5 * G, 1));
  expect_run (bm, 2 * G, UINT64_MAX, 5 * G, G);
  assert_int_equal (dirty_bitmap_next_pending (bm, 2 * G, UINT64_MAX, &start, &len), 1);

  /* The pass copies its to-do list, clearing as it goes. */
  while (dirty_bitmap_next_pending (bm, 0, UINT64_MAX, &start, &len) == 0)
    dirty_bitmap_clear (bm, start, len);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 2 * G);
  dirty_bitmap_abdicate (bm);
  assert_false (dirty_bitmap_is_frozen (bm));
  assert_null (dirty_bitmap_successor_bits (bm));
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 2 * G);
  assert_true (dirty_bitmap_is_dirty (bm, G, 1));
  assert_true (dirty_bitmap_is_dirty (bm, 5 * G, 1));
  assert_false (dirty_bitmap_is_dirty (bm, 0, G));
  /* Marks go to the bitmap itself again. */
  dirty_bitmap_mark (bm, 7 * G, 1);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 3 * G);

  /* A pass that stops half-way and still abdicates keeps the rest. */
  assert_int_equal (dirty_bitmap_freeze (bm), 0);
  dirty_bitmap_clear (bm, G, G);
  dirty_bitmap_abdicate (bm);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 2 * G);
  expect_run (bm, 0, UINT64_MAX, 5 * G, G);
  dirty_bitmap_free (bm);
}

static void
test_db_freeze_reclaim (void **state)
{
  struct dirty_bitmap *bm = dirty_bitmap_new (IMG, G);
  uint64_t start, len;

  dirty_bitmap_mark (bm, 0, 4 * G);             /* granules 0..3 */
  assert_int_equal (dirty_bitmap_freeze (bm), 0);
  /* The pass clears granule 0 and copies it; clears granule 1 before
   * its copy, which fails, so it marks it again. */
  dirty_bitmap_clear (bm, 0, G);
  dirty_bitmap_clear (bm, G, G);
  dirty_bitmap_mark (bm, G, G);
  /* A guest write to a copied granule, and to the image tail. */
  dirty_bitmap_mark (bm, 0, 1);
  dirty_bitmap_mark (bm, IMG - 1, 1);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 4 * G + 100);
  assert_int_equal (dirty_bitmap_next_pending (bm, 0, UINT64_MAX, &start, &len), 0);
  assert_int_equal (start, 2 * G);
  expect_run (bm, 0, UINT64_MAX, 0, 4 * G);
  dirty_bitmap_reclaim (bm);                    /* the pass failed */
  assert_false (dirty_bitmap_is_frozen (bm));
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 4 * G + 100);
  expect_run (bm, 0, UINT64_MAX, 0, 4 * G);
  expect_run (bm, 4 * G, UINT64_MAX, 10 * G, 100);

  /* Merge into a frozen bitmap counts as marks: successor only. */
  struct dirty_bitmap *other = dirty_bitmap_new (IMG, G);
  struct dirty_bitmap *wrong = dirty_bitmap_new (IMG, 2 * G);
  dirty_bitmap_mark (other, 8 * G, 1);
  assert_int_equal (dirty_bitmap_freeze (bm), 0);
  assert_int_equal (dirty_bitmap_merge (bm, other), 0);
  assert_int_equal (dirty_bitmap_merge (bm, wrong), -1);
  assert_int_equal (errno, EINVAL);
  assert_true (hbitmap_get (dirty_bitmap_successor_bits (bm), 8));
  assert_false (hbitmap_get (dirty_bitmap_bits (bm), 8));
  dirty_bitmap_clear_all (bm);                  /* the parent only */
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), G);
  dirty_bitmap_reclaim (bm);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), G);
  /* A source that is frozen gives parent | successor. */
  assert_int_equal (dirty_bitmap_freeze (other), 0);
  dirty_bitmap_mark (other, 0, 1);
  dirty_bitmap_clear_all (bm);
  assert_int_equal (dirty_bitmap_merge (bm, other), 0);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 2 * G);
  dirty_bitmap_free (other);                    /* frees its successor */
  dirty_bitmap_free (wrong);
  dirty_bitmap_free (bm);
}

/* The first run of granules at or after byte OFF in A (| B), as bytes. */
static bool
model_run (const bool *a, const bool *b, int ng, uint64_t size, uint64_t off,
           uint64_t *start, uint64_t *len)
{
  int g = (int) (off / G), e;

  while (g < ng && !(a[g] || (b && b[g])))
    g++;
  if (off >= size || g == ng)
    return false;
  for (e = g; e < ng && (a[e] || (b && b[e])); e++)
    ;
  *start = (uint64_t) g * G > off ? (uint64_t) g * G : off;
  *len = ((uint64_t) e * G < size ? (uint64_t) e * G : size) - *start;
  return true;
}

static void
check_runs (const struct dirty_bitmap *bm, uint64_t off,
            const bool *parent, const bool *succ, int ng, uint64_t size)
{
  uint64_t start = 0, len = 0, want_start = 0, want_len = 0;
  bool found;

  found = model_run (parent, succ, ng, size, off, &want_start, &want_len);
  assert_int_equal (dirty_bitmap_next_dirty (bm, off, UINT64_MAX, &start, &len),
                    found ? 0 : 1);
  if (found) {
    assert_int_equal (start, want_start);
    assert_int_equal (len, want_len);
  }
  found = model_run (parent, NULL, ng, size, off, &want_start, &want_len);
  assert_int_equal (dirty_bitmap_next_pending (bm, off, UINT64_MAX, &start, &len),
                    found ? 0 : 1);
  if (found) {
    assert_int_equal (start, want_start);
    assert_int_equal (len, want_len);
  }
}

/* Random marks, clears and passes against a model of parent and
 * successor: every observable matches, so no mark is ever lost. */
static void
test_db_random_passes (void **state)
{
  enum { NG = 37 };
  const uint64_t size = (NG - 1) * G + 1234;
  struct dirty_bitmap *bm = dirty_bitmap_new (size, G);
  bool parent[NG] = { false }, succ[NG] = { false };

  rng_seed (1234567);
  for (int i = 0; i < 5000; i++) {
    uint64_t off = rnd_below (size + 1), len = rnd_below (size - off + 1);
    uint64_t end = off + len, first, stop, bytes = 0;
    bool frozen = dirty_bitmap_is_frozen (bm);

    switch (rnd_below (8)) {
    case 0: case 1: case 2:
      dirty_bitmap_mark (bm, off, len);
      for (uint64_t g = off / G; len && g <= (end - 1) / G; g++)
        (frozen ? succ : parent)[g] = true;
      break;
    case 3: case 4:
      dirty_bitmap_clear (bm, off, len);
      first = (off + G - 1) / G;
      stop = end == size ? NG : end / G;
      for (uint64_t g = first; g < stop; g++)
        parent[g] = false;
      break;
    case 5:
      if (!frozen)
        assert_int_equal (dirty_bitmap_freeze (bm), 0);
      break;
    case 6: case 7:
      if (!frozen)
        break;
      if (rnd_below (2))
        dirty_bitmap_abdicate (bm);
      else
        dirty_bitmap_reclaim (bm);
      for (int g = 0; g < NG; g++) {
        parent[g] = parent[g] || succ[g];
        succ[g] = false;
      }
      break;
    }
    for (int g = 0; g < NG; g++) {
      bool dirty = parent[g] || succ[g];
      uint64_t glen = g == NG - 1 ? 1234 : G;

      assert_int_equal (dirty_bitmap_is_dirty (bm, g * G, glen), dirty);
      bytes += dirty ? glen : 0;
    }
    assert_int_equal (dirty_bitmap_dirty_bytes (bm), bytes);
    check_runs (bm, off, parent, succ, NG, size);
  }
  dirty_bitmap_free (bm);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_hb_small_edges),
    cmocka_unit_test (test_hb_tiny_sizes),
    cmocka_unit_test (test_hb_level_boundaries),
    cmocka_unit_test (test_hb_huge_sparse),
    cmocka_unit_test (test_hb_random_model),
    cmocka_unit_test (test_hb_merge_copy),
    cmocka_unit_test (test_hb_serialize),
    cmocka_unit_test (test_db_geometry),
    cmocka_unit_test (test_db_rounding),
    cmocka_unit_test (test_db_next_dirty),
    cmocka_unit_test (test_db_freeze_abdicate),
    cmocka_unit_test (test_db_freeze_reclaim),
    cmocka_unit_test (test_db_random_passes),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
