/* SPDX-License-Identifier: MIT */
/* Byte-addressed dirty bitmap over an hbitmap of granules.
 *
 * State: BITS, one bit per granule, and while a sync pass runs a
 * SUCCESSOR of the same size (frozen <=> successor != NULL).  The rules
 * for which of the two each call reads or writes are in dirty-bitmap.h;
 * in short, writers of "may differ" (mark) go to the successor, the
 * pass's clears go to the parent, readers see the union.
 *
 * Invariants:
 *   - hbitmap_size (bits) == nbits == ceil (size / granularity), and the
 *     successor has the same size;
 *   - a byte the caller marked stays dirty in bits | successor until a
 *     clear() covering its whole granule (or the image tail) — freeze,
 *     abdicate and reclaim never drop one.
 *
 * Byte-to-granule conversions are the only arithmetic here; they rely
 * on size <= INT64_MAX so that rounding up never overflows.
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "bitmap/dirty-bitmap.h"
#include "common/error.h"

struct dirty_bitmap {
  uint64_t size;
  uint64_t nbits;
  uint32_t granularity;
  unsigned shift;               /* granularity == 1 << shift */
  struct hbitmap *bits;         /* the parent, while frozen */
  struct hbitmap *successor;    /* non-NULL while frozen */
};

static bool
db_valid_range (const struct dirty_bitmap *bm, uint64_t offset, uint64_t length)
{
  return offset <= bm->size && length <= bm->size - offset;
}

static int
db_check_geometry (uint64_t size, uint32_t granularity)
{
  if (granularity < DIRTY_BITMAP_MIN_GRANULARITY
      || granularity > DIRTY_BITMAP_MAX_GRANULARITY
      || (granularity & (granularity - 1)) != 0)
    return error_set (EINVAL, "bitmap granularity %" PRIu32 ": not a power "
                      "of two between 4 KiB and 64 MiB", granularity);
  if (size > INT64_MAX)
    return error_set (EFBIG, "bitmap of %" PRIu64 " bytes: too large", size);
  if (size / granularity + (size % granularity != 0) > HBITMAP_MAX_BITS)
    return error_set (EFBIG, "bitmap of %" PRIu64 " bytes: more than 2^40 "
                      "granules of %" PRIu32 " bytes", size, granularity);
  return 0;
}

struct dirty_bitmap *
dirty_bitmap_new (uint64_t size, uint32_t granularity)
{
  struct dirty_bitmap *bm;

  if (db_check_geometry (size, granularity) == -1)
    return NULL;
  bm = calloc (1, sizeof *bm);
  if (bm == NULL) {
    error_set (errno, "dirty bitmap");
    return NULL;
  }
  bm->size = size;
  bm->granularity = granularity;
  bm->shift = (unsigned) __builtin_ctz (granularity);
  bm->nbits = (size + granularity - 1) >> bm->shift;
  bm->bits = hbitmap_new (bm->nbits);
  if (bm->bits == NULL) {
    free (bm);
    return NULL;
  }
  return bm;
}

void
dirty_bitmap_free (struct dirty_bitmap *bm)
{
  if (bm == NULL)
    return;
  hbitmap_free (bm->bits);
  hbitmap_free (bm->successor);
  free (bm);
}

uint64_t
dirty_bitmap_size (const struct dirty_bitmap *bm)
{
  return bm->size;
}

uint32_t
dirty_bitmap_granularity (const struct dirty_bitmap *bm)
{
  return bm->granularity;
}

bool
dirty_bitmap_is_frozen (const struct dirty_bitmap *bm)
{
  return bm->successor != NULL;
}

/* Where marks go. */
static struct hbitmap *
db_mark_target (struct dirty_bitmap *bm)
{
  return bm->successor ? bm->successor : bm->bits;
}

void
dirty_bitmap_mark (struct dirty_bitmap *bm, uint64_t offset, uint64_t length)
{
  uint64_t first, last;

  assert (db_valid_range (bm, offset, length));
  if (length == 0)
    return;
  first = offset >> bm->shift;
  last = (offset + length - 1) >> bm->shift;
  hbitmap_set (db_mark_target (bm), first, last - first + 1);
}

void
dirty_bitmap_clear (struct dirty_bitmap *bm, uint64_t offset, uint64_t length)
{
  uint64_t end = offset + length, first, stop;

  assert (db_valid_range (bm, offset, length));
  first = (offset + bm->granularity - 1) >> bm->shift;
  stop = end == bm->size ? bm->nbits : end >> bm->shift;
  if (first < stop)
    hbitmap_reset (bm->bits, first, stop - first);
}

void
dirty_bitmap_mark_all (struct dirty_bitmap *bm)
{
  dirty_bitmap_mark (bm, 0, bm->size);
}

void
dirty_bitmap_clear_all (struct dirty_bitmap *bm)
{
  hbitmap_reset_all (bm->bits);
}

/* Is any of granules FIRST..LAST set in HB? */
static bool
db_any_set (const struct hbitmap *hb, uint64_t first, uint64_t last)
{
  int64_t found = hbitmap_next_set (hb, first);

  return found >= 0 && (uint64_t) found <= last;
}

bool
dirty_bitmap_is_dirty (const struct dirty_bitmap *bm,
                       uint64_t offset, uint64_t length)
{
  uint64_t first, last;

  assert (db_valid_range (bm, offset, length));
  if (length == 0)
    return false;
  first = offset >> bm->shift;
  last = (offset + length - 1) >> bm->shift;
  return db_any_set (bm->bits, first, last)
    || (bm->successor && db_any_set (bm->successor, first, last));
}

uint64_t
dirty_bitmap_dirty_bytes (const struct dirty_bitmap *bm)
{
  uint64_t tail = bm->size & (bm->granularity - 1), last = bm->nbits - 1;
  uint64_t granules, bytes;

  if (bm->successor)
    granules = hbitmap_count_union (bm->bits, bm->successor);
  else
    granules = hbitmap_count (bm->bits);
  bytes = granules << bm->shift;
  /* The partial last granule holds only TAIL bytes. */
  if (tail != 0 && (hbitmap_get (bm->bits, last)
                    || (bm->successor && hbitmap_get (bm->successor, last))))
    bytes -= bm->granularity - tail;
  return bytes;
}

/* The end of the run of set bits of HB starting at POS (POS if clear),
 * at most END. */
static uint64_t
db_run_end (const struct hbitmap *hb, uint64_t pos, uint64_t end)
{
  uint64_t start, len;

  if (pos >= end || !hbitmap_get (hb, pos))
    return pos;
  hbitmap_next_dirty_area (hb, pos, end - pos, &start, &len);
  return start + len;
}

/* The first run of granules in [FIRST, END) set in A | B (B may be
 * NULL), as [*START, *STOP). */
static bool
db_next_run (const struct hbitmap *a, const struct hbitmap *b,
             uint64_t first, uint64_t end, uint64_t *start, uint64_t *stop)
{
  uint64_t sa = end, sb = end, len, pos, next;

  if (!hbitmap_next_dirty_area (a, first, end - first, &sa, &len))
    sa = end;
  if (b && !hbitmap_next_dirty_area (b, first, end - first, &sb, &len))
    sb = end;
  *start = sa < sb ? sa : sb;
  if (*start == end)
    return false;
  /* Alternate between A and B until neither extends the run. */
  for (pos = *start;; pos = next) {
    next = db_run_end (a, pos, end);
    if (b)
      next = db_run_end (b, next, end);
    if (next == pos)
      break;
  }
  *stop = pos;
  return true;
}

/* next_dirty over A | B, in bytes (see the header). */
static int
db_next (const struct dirty_bitmap *bm, const struct hbitmap *a,
         const struct hbitmap *b, uint64_t offset, uint64_t max_len,
         uint64_t *start, uint64_t *len)
{
  uint64_t end, first, gstart, gstop, s, e;

  assert (offset <= bm->size);
  end = max_len < bm->size - offset ? offset + max_len : bm->size;
  if (offset == end)
    return 1;
  first = offset >> bm->shift;
  if (!db_next_run (a, b, first, ((end - 1) >> bm->shift) + 1, &gstart, &gstop))
    return 1;
  s = gstart << bm->shift;
  e = gstop << bm->shift;
  *start = s > offset ? s : offset;
  *len = (e < end ? e : end) - *start;
  return 0;
}

int
dirty_bitmap_next_dirty (const struct dirty_bitmap *bm, uint64_t offset,
                         uint64_t max_len, uint64_t *start, uint64_t *len)
{
  return db_next (bm, bm->bits, bm->successor, offset, max_len, start, len);
}

int
dirty_bitmap_next_pending (const struct dirty_bitmap *bm, uint64_t offset,
                           uint64_t max_len, uint64_t *start, uint64_t *len)
{
  return db_next (bm, bm->bits, NULL, offset, max_len, start, len);
}

int
dirty_bitmap_merge (struct dirty_bitmap *dst, const struct dirty_bitmap *src)
{
  struct hbitmap *target = db_mark_target (dst);

  if (dst->size != src->size || dst->granularity != src->granularity)
    return error_set (EINVAL, "merging dirty bitmaps: %" PRIu64 " bytes at %"
                      PRIu32 " into %" PRIu64 " bytes at %" PRIu32,
                      src->size, src->granularity, dst->size, dst->granularity);
  if (dst == src)
    return 0;
  hbitmap_merge (target, src->bits);
  if (src->successor)
    hbitmap_merge (target, src->successor);
  return 0;
}

int
dirty_bitmap_freeze (struct dirty_bitmap *bm)
{
  if (bm->successor)
    return error_set (EBUSY, "dirty bitmap: already frozen by a sync pass");
  bm->successor = hbitmap_new (bm->nbits);
  if (bm->successor == NULL)
    return error_prefix ("freezing dirty bitmap");
  return 0;
}

void
dirty_bitmap_abdicate (struct dirty_bitmap *bm)
{
  assert (bm->successor);
  hbitmap_merge (bm->successor, bm->bits);
  hbitmap_free (bm->bits);
  bm->bits = bm->successor;
  bm->successor = NULL;
}

void
dirty_bitmap_reclaim (struct dirty_bitmap *bm)
{
  assert (bm->successor);
  hbitmap_merge (bm->bits, bm->successor);
  hbitmap_free (bm->successor);
  bm->successor = NULL;
}

struct hbitmap *
dirty_bitmap_bits (struct dirty_bitmap *bm)
{
  return bm->bits;
}

struct hbitmap *
dirty_bitmap_successor_bits (struct dirty_bitmap *bm)
{
  return bm->successor;
}
