/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_BITMAP_DIRTY_BITMAP_H
#define MIRRORD_BITMAP_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmap/hbitmap.h"

/* The dirty bitmap of an image: which bytes may differ from their copy.
 *
 * One bit per GRANULARITY bytes (a "granule"); the image's last granule
 * may be partial.  Offsets and lengths are in bytes and must lie inside
 * the image (asserted).  Not thread-safe: the main loop owns it.
 *
 * Rounding, always towards "dirty":
 *   mark      outward: every granule the range touches becomes dirty.
 *   clear     inward: only granules wholly inside the range are cleared;
 *             the partial last granule counts as wholly inside when the
 *             range reaches the end of the image.
 *   is_dirty  true if any granule the range touches is dirty.
 *
 * Sync passes (QEMU's freeze/successor protocol).  freeze() turns the
 * current bits into the pass's to-do list (the "parent") and starts an
 * empty "successor".  While frozen:
 *   mark, mark_all, merge into it    go to the successor only;
 *   clear, clear_all                 apply to the parent only (the pass
 *                                    clears what it has copied; marks
 *                                    made during the pass stay);
 *   is_dirty, next_dirty, dirty_bytes  see parent | successor: every
 *                                    byte not yet safely copied;
 *   next_pending                     sees the parent only: what the
 *                                    pass still has to copy.
 * The pass ends with abdicate() (success) or reclaim() (failure).  Both
 * unfreeze and leave exactly parent | successor, so nothing marked is
 * ever lost; they differ in cost only.  abdicate() folds what the pass
 * left in the parent (little, after a successful pass) into the
 * successor, which becomes the bitmap; reclaim() folds the successor
 * back into the parent.  A pass that clears a granule before copying it
 * must mark it again if that copy fails (the mark lands in the
 * successor and survives either ending).
 */

struct dirty_bitmap;

#define DIRTY_BITMAP_MIN_GRANULARITY (UINT32_C (4) << 10)
#define DIRTY_BITMAP_MAX_GRANULARITY (UINT32_C (64) << 20)
#define DIRTY_BITMAP_DEFAULT_GRANULARITY (UINT32_C (64) << 10)

/* A clean bitmap.  NULL (error set) if GRANULARITY is not a power of two
 * in 4 KiB..64 MiB, if SIZE > INT64_MAX, or if SIZE needs more than
 * 2^40 granules. */
struct dirty_bitmap *dirty_bitmap_new (uint64_t size, uint32_t granularity);
/* Frees the successor too. */
void dirty_bitmap_free (struct dirty_bitmap *bm);

uint64_t dirty_bitmap_size (const struct dirty_bitmap *bm);
uint32_t dirty_bitmap_granularity (const struct dirty_bitmap *bm);
bool dirty_bitmap_is_frozen (const struct dirty_bitmap *bm);

void dirty_bitmap_mark (struct dirty_bitmap *bm, uint64_t offset, uint64_t length);
void dirty_bitmap_clear (struct dirty_bitmap *bm, uint64_t offset, uint64_t length);
void dirty_bitmap_mark_all (struct dirty_bitmap *bm);
void dirty_bitmap_clear_all (struct dirty_bitmap *bm);
/* False for LENGTH 0. */
bool dirty_bitmap_is_dirty (const struct dirty_bitmap *bm,
                            uint64_t offset, uint64_t length);

/* Dirty bytes: dirty granules times the granularity, the partial last
 * granule counted for its real size.  O(1) unless frozen; while frozen
 * the exact size of parent | successor, O(non-zero 64-granule words of
 * the successor). */
uint64_t dirty_bitmap_dirty_bytes (const struct dirty_bitmap *bm);

/* The first dirty run at or after OFFSET, in bytes, clipped to
 * [OFFSET, OFFSET + MAX_LEN) and to the image: *START >= OFFSET, and
 * the run may begin or end inside a granule only at those limits.
 * Returns 0 and fills *START, *LEN if found, 1 if the window is clean.
 * next_dirty sees parent | successor; next_pending the parent only
 * (the same bits when not frozen). */
int dirty_bitmap_next_dirty (const struct dirty_bitmap *bm, uint64_t offset,
                             uint64_t max_len, uint64_t *start, uint64_t *len);
int dirty_bitmap_next_pending (const struct dirty_bitmap *bm, uint64_t offset,
                               uint64_t max_len, uint64_t *start, uint64_t *len);

/* Marks in DST every granule dirty in SRC (parent | successor), as
 * mark() would.  -1 (error set, EINVAL) unless size and granularity
 * match. */
int dirty_bitmap_merge (struct dirty_bitmap *dst, const struct dirty_bitmap *src);

/* -1 (error set, EBUSY) if already frozen; -1 if out of memory. */
int dirty_bitmap_freeze (struct dirty_bitmap *bm);
/* Both require a frozen bitmap (asserted) and cannot fail. */
void dirty_bitmap_abdicate (struct dirty_bitmap *bm);
void dirty_bitmap_reclaim (struct dirty_bitmap *bm);

/* The granule bits, for the persistence layer: the bitmap, or while
 * frozen the parent; the successor, or NULL when not frozen.  Writing
 * through them bypasses the rules above. */
struct hbitmap *dirty_bitmap_bits (struct dirty_bitmap *bm);
struct hbitmap *dirty_bitmap_successor_bits (struct dirty_bitmap *bm);

#endif
