/* SPDX-License-Identifier: MIT */
/* Hierarchical bitmap: the in-memory form of every dirty bitmap.
 *
 * Levels.  Level 0 holds the bits themselves, 64 to a word.  Level k+1
 * holds one bit per word of level k, set when that word is non-zero.
 * Levels are added until one holds a single word: a bitmap of n bits
 * has ceil(log64 n) + 1 levels, 7 for the largest (2^40 bits).
 *
 *   level 2           [1.......]            one word
 *   level 1           [1..1....] [........] ...
 *   level 0  [0 0 ...][0 4 ...]  ...        the bits
 *
 * Invariants, kept by every function that writes a word:
 *   I1  bit j of level k+1  ==  (word j of level k != 0);
 *   I2  bits past the end of a level (level 0: bit >= nbits) are 0;
 *   I3  count  ==  number of set bits in level 0.
 *
 * Costs, for n bits:
 *   get, count                   O(1)
 *   set/reset of k bits          O(k/64 + log64 n); the climb stops at the
 *                                first level that does not change, so
 *                                marking a dirty region again is O(k/64)
 *   next_set                     O(log64 n): climb until a word has a set
 *                                bit to the right, descend with ctz
 *   next_zero                    a scan of level 0, O(distance/64): there
 *                                is no "all ones" summary (it would double
 *                                the memory); runs are bounded by max_len
 *   merge, copy, count_union     O(non-zero words of the source x levels):
 *                                level 1 leads straight to them
 *   reset_all                    one madvise() over the touched pages
 *
 * Memory.  All levels live in one private anonymous mapping made with
 * MAP_NORESERVE: n/8 * 64/63 bytes of address space, but a page is only
 * committed once a bit in it is set (reading a clean page maps the shared
 * zero page).  A sparse bitmap of 2^40 bits reserves 130 GiB and costs
 * what its dirty pages cost.  reset_all() gives the pages back.  (With
 * vm.overcommit_memory=2 the kernel commits the whole mapping.)
 */
#include <config.h>

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "bitmap/hbitmap.h"
#include "common/error.h"

/* 2^40 bits need 7 levels. */
#define HB_LEVELS_MAX 8
#define HB_ONES (~UINT64_C (0))

struct hbitmap {
  uint64_t nbits;
  uint64_t count;               /* I3 */
  unsigned levels;
  uint64_t nwords[HB_LEVELS_MAX];
  uint64_t *level[HB_LEVELS_MAX];
  void *map;                    /* all levels, level 0 first */
  size_t map_len;
};

static inline unsigned
popcount (uint64_t x)
{
  return (unsigned) __builtin_popcountll (x);
}

static inline uint64_t
ctz (uint64_t x)
{
  return (uint64_t) __builtin_ctzll (x);
}

static inline bool
hb_valid_range (const struct hbitmap *hb, uint64_t start, uint64_t count)
{
  return start <= hb->nbits && count <= hb->nbits - start;
}

/* The bits of word W that lie in FIRST..LAST (inclusive). */
static inline uint64_t
hb_word_mask (uint64_t w, uint64_t first, uint64_t last)
{
  uint64_t mask = HB_ONES;

  if (w == first >> 6)
    mask &= HB_ONES << (first & 63);
  if (w == last >> 6)
    mask &= HB_ONES >> (63 - (last & 63));
  return mask;
}

/* The valid bits of the last word of level 0 (I2). */
static uint64_t
hb_tail_mask (const struct hbitmap *hb)
{
  unsigned rem = hb->nbits & 63;

  if (hb->nbits == 0)
    return 0;
  return rem ? (UINT64_C (1) << rem) - 1 : HB_ONES;
}

/* Fill in levels and nwords; return the words of all levels. */
static uint64_t
hb_layout (struct hbitmap *hb)
{
  uint64_t words = hb->nbits ? (hb->nbits + 63) / 64 : 1;
  uint64_t total = 0;
  unsigned lvl = 0;

  for (;;) {
    assert (lvl < HB_LEVELS_MAX);
    hb->nwords[lvl++] = words;
    total += words;
    if (words == 1)
      break;
    words = (words + 63) / 64;
  }
  hb->levels = lvl;
  return total;
}

struct hbitmap *
hbitmap_new (uint64_t nbits)
{
  struct hbitmap *hb;
  uint64_t offset = 0;

  if (nbits > HBITMAP_MAX_BITS) {
    error_set (EINVAL, "bitmap of %" PRIu64 " bits: more than 2^40", nbits);
    return NULL;
  }
  hb = calloc (1, sizeof *hb);
  if (hb == NULL) {
    error_set (errno, "bitmap of %" PRIu64 " bits", nbits);
    return NULL;
  }
  hb->nbits = nbits;
  hb->map_len = hb_layout (hb) * sizeof (uint64_t);
  hb->map = mmap (NULL, hb->map_len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (hb->map == MAP_FAILED) {
    error_set (errno, "bitmap of %" PRIu64 " bits: reserving %zu bytes",
               nbits, hb->map_len);
    free (hb);
    return NULL;
  }
  for (unsigned lvl = 0; lvl < hb->levels; lvl++) {
    hb->level[lvl] = (uint64_t *) hb->map + offset;
    offset += hb->nwords[lvl];
  }
  return hb;
}

void
hbitmap_free (struct hbitmap *hb)
{
  if (hb == NULL)
    return;
  munmap (hb->map, hb->map_len);
  free (hb);
}

uint64_t
hbitmap_size (const struct hbitmap *hb)
{
  return hb->nbits;
}

uint64_t
hbitmap_count (const struct hbitmap *hb)
{
  return hb->count;
}

bool
hbitmap_get (const struct hbitmap *hb, uint64_t bit)
{
  assert (bit < hb->nbits);
  return (hb->level[0][bit >> 6] >> (bit & 63)) & 1;
}

/* Set bits FIRST..LAST of level LVL; return how many were clear.
 * *WOKE tells whether a word went from zero to non-zero. */
static uint64_t
hb_set_level (struct hbitmap *hb, unsigned lvl,
              uint64_t first, uint64_t last, bool *woke)
{
  uint64_t *words = hb->level[lvl];
  uint64_t added = 0;

  *woke = false;
  for (uint64_t w = first >> 6; w <= last >> 6; w++) {
    uint64_t fresh = hb_word_mask (w, first, last) & ~words[w];

    if (fresh == 0)
      continue;                 /* don't dirty a page for nothing */
    *woke |= words[w] == 0;
    added += popcount (fresh);
    words[w] |= fresh;
  }
  return added;
}

uint64_t
hbitmap_set (struct hbitmap *hb, uint64_t start, uint64_t count)
{
  uint64_t first = start, last = start + count - 1, added;
  bool woke;

  assert (hb_valid_range (hb, start, count));
  if (count == 0)
    return 0;
  added = hb_set_level (hb, 0, first, last, &woke);
  hb->count += added;
  /* Every word of FIRST..LAST is now non-zero: so are their parent bits. */
  for (unsigned lvl = 1; woke && lvl < hb->levels; lvl++) {
    first >>= 6;
    last >>= 6;
    hb_set_level (hb, lvl, first, last, &woke);
  }
  return added;
}

/* Clear bits FIRST..LAST of level LVL; return how many were set. */
static uint64_t
hb_reset_level (struct hbitmap *hb, unsigned lvl, uint64_t first, uint64_t last)
{
  uint64_t *words = hb->level[lvl];
  uint64_t removed = 0;

  for (uint64_t w = first >> 6; w <= last >> 6; w++) {
    uint64_t gone = hb_word_mask (w, first, last) & words[w];

    if (gone == 0)
      continue;
    removed += popcount (gone);
    words[w] &= ~gone;
  }
  return removed;
}

/* After FIRST..LAST of level LVL were cleared, narrow them to the words
 * of LVL that are now zero: the inner words always, the two edge words
 * only if emptied.  False if there are none. */
static bool
hb_emptied_words (const struct hbitmap *hb, unsigned lvl,
                  uint64_t *first, uint64_t *last)
{
  const uint64_t *words = hb->level[lvl];
  uint64_t fw = *first >> 6, lw = *last >> 6;

  if (words[lw] != 0) {
    if (lw == 0)
      return false;
    lw--;
  }
  if (words[fw] != 0)
    fw++;
  *first = fw;
  *last = lw;
  return fw <= lw;
}

uint64_t
hbitmap_reset (struct hbitmap *hb, uint64_t start, uint64_t count)
{
  uint64_t first = start, last = start + count - 1, removed, changed;

  assert (hb_valid_range (hb, start, count));
  if (count == 0)
    return 0;
  removed = changed = hb_reset_level (hb, 0, first, last);
  hb->count -= removed;
  for (unsigned lvl = 0; changed && lvl + 1 < hb->levels; lvl++) {
    if (!hb_emptied_words (hb, lvl, &first, &last))
      break;
    changed = hb_reset_level (hb, lvl + 1, first, last);
  }
  return removed;
}

/* Word W of level 0 went from zero to non-zero or back: flip its bit in
 * level 1 and climb while parent words change the same way (I1). */
static void
hb_update_parents (struct hbitmap *hb, uint64_t w)
{
  for (unsigned lvl = 1; lvl < hb->levels; lvl++, w >>= 6) {
    uint64_t *parent = &hb->level[lvl][w >> 6];
    uint64_t bit = UINT64_C (1) << (w & 63);
    uint64_t old = *parent;

    if (hb->level[lvl - 1][w] != 0)
      *parent |= bit;
    else
      *parent &= ~bit;
    if ((old != 0) == (*parent != 0))
      return;
  }
}

/* Replace word W of level 0, keeping I1 and I3. */
static void
hb_store_word (struct hbitmap *hb, uint64_t w, uint64_t value)
{
  uint64_t old = hb->level[0][w];

  if (old == value)
    return;
  hb->count = hb->count - popcount (old) + popcount (value);
  hb->level[0][w] = value;
  if ((old == 0) != (value == 0))
    hb_update_parents (hb, w);
}

/* The first set bit >= POS of level LVL, or -1: if POS's word has none,
 * level LVL+1 names the next non-zero word, whose lowest bit it is. */
static int64_t
hb_find (const struct hbitmap *hb, unsigned lvl, uint64_t pos)
{
  uint64_t w = pos >> 6, word;
  int64_t next;

  if (w >= hb->nwords[lvl])
    return -1;
  word = hb->level[lvl][w] & (HB_ONES << (pos & 63));
  if (word == 0) {
    if (lvl + 1 == hb->levels)
      return -1;
    next = hb_find (hb, lvl + 1, w + 1);
    if (next < 0)
      return -1;
    w = (uint64_t) next;
    word = hb->level[lvl][w];
  }
  return (int64_t) (w << 6 | ctz (word));
}

/* The first non-zero word of level 0 at or after W, or -1. */
static int64_t
hb_next_word (const struct hbitmap *hb, uint64_t w)
{
  if (hb->levels == 1)
    return w == 0 && hb->level[0][0] != 0 ? 0 : -1;
  return hb_find (hb, 1, w);
}

int64_t
hbitmap_next_set (const struct hbitmap *hb, uint64_t from)
{
  if (from >= hb->nbits)
    return -1;
  return hb_find (hb, 0, from);
}

/* The first clear bit in [FROM, END), or END.  FROM < END <= nbits. */
static uint64_t
hb_scan_zero (const struct hbitmap *hb, uint64_t from, uint64_t end)
{
  const uint64_t *words = hb->level[0];
  uint64_t w = from >> 6, last = (end - 1) >> 6;
  uint64_t word = ~words[w] & (HB_ONES << (from & 63));
  uint64_t bit;

  while (word == 0 && w < last)
    word = ~words[++w];
  if (word == 0)
    return end;
  bit = w << 6 | ctz (word);
  return bit < end ? bit : end;
}

int64_t
hbitmap_next_zero (const struct hbitmap *hb, uint64_t from)
{
  uint64_t bit;

  if (from >= hb->nbits)
    return -1;
  bit = hb_scan_zero (hb, from, hb->nbits);
  return bit < hb->nbits ? (int64_t) bit : -1;
}

bool
hbitmap_next_dirty_area (const struct hbitmap *hb, uint64_t from,
                         uint64_t max_len, uint64_t *start, uint64_t *len)
{
  uint64_t end;
  int64_t found;

  if (from >= hb->nbits || max_len == 0)
    return false;
  end = max_len < hb->nbits - from ? from + max_len : hb->nbits;
  found = hb_find (hb, 0, from);
  if (found < 0 || (uint64_t) found >= end)
    return false;
  *start = (uint64_t) found;
  *len = hb_scan_zero (hb, *start, end) - *start;
  return true;
}

uint64_t
hbitmap_count_union (const struct hbitmap *a, const struct hbitmap *b)
{
  uint64_t count = a->count;

  assert (a->nbits == b->nbits);
  for (int64_t w = hb_next_word (b, 0); w >= 0;
       w = hb_next_word (b, (uint64_t) w + 1))
    count += popcount (b->level[0][w] & ~a->level[0][w]);
  return count;
}

void
hbitmap_merge (struct hbitmap *dst, const struct hbitmap *src)
{
  assert (dst->nbits == src->nbits);
  for (int64_t w = hb_next_word (src, 0); w >= 0;
       w = hb_next_word (src, (uint64_t) w + 1))
    hb_store_word (dst, (uint64_t) w, dst->level[0][w] | src->level[0][w]);
}

void
hbitmap_copy (struct hbitmap *dst, const struct hbitmap *src)
{
  assert (dst->nbits == src->nbits);
  if (dst == src)
    return;
  hbitmap_reset_all (dst);
  hbitmap_merge (dst, src);
}

void
hbitmap_reset_all (struct hbitmap *hb)
{
  /* Anonymous private pages read back as zero after MADV_DONTNEED. */
  if (madvise (hb->map, hb->map_len, MADV_DONTNEED) == 0) {
    hb->count = 0;
    return;
  }
  for (int64_t w = hb_next_word (hb, 0); w >= 0;
       w = hb_next_word (hb, (uint64_t) w + 1))
    hb_store_word (hb, (uint64_t) w, 0);
}

uint64_t
hbitmap_word_count (const struct hbitmap *hb)
{
  return hb->nwords[0];
}

void
hbitmap_serialize (const struct hbitmap *hb, uint64_t first_word,
                   uint64_t nr_words, uint64_t *out_le)
{
  assert (first_word <= hb->nwords[0]);
  assert (nr_words <= hb->nwords[0] - first_word);
  for (uint64_t i = 0; i < nr_words; i++)
    out_le[i] = htole64 (hb->level[0][first_word + i]);
}

void
hbitmap_deserialize_words (struct hbitmap *hb, uint64_t first_word,
                           uint64_t nr_words, const uint64_t *in_le)
{
  uint64_t last = hb->nwords[0] - 1;

  assert (first_word <= hb->nwords[0]);
  assert (nr_words <= hb->nwords[0] - first_word);
  for (uint64_t i = 0; i < nr_words; i++) {
    uint64_t w = first_word + i, value = le64toh (in_le[i]);

    if (w == last)
      value &= hb_tail_mask (hb);       /* I2 */
    hb_store_word (hb, w, value);
  }
}
