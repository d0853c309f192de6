/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_BITMAP_TRACKER_H
#define MIRRORD_BITMAP_TRACKER_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmap/store.h"
#include "image/block.h"

/* The write-intent tracker: the layer of an export's stack (block.h)
 * that owns its dirty bits.
 *
 * A write, trim or zero inside the disk is marked in the bitmap file
 * (bitmap_store_begin_write: on disk, or the write fails with the
 * store's error) before it goes down; when it comes back up, the live
 * bitmap learns of it — unless the layer below says (req->forwarded ==
 * 0) that the mirror's target has it as well, so nothing is left to
 * copy.  Everything else passes untouched.
 *
 * The tracker's API is the one door for everyone else who reads or
 * changes dirty bits: the NBD qemu:dirty-bitmap context
 * (tracker_dirty_extents), the mirror and the HA resync (tracker_mark,
 * tracker_clear, tracker_dirty_bytes).  bitmap_store_* is the tracker's
 * back end; new callers use the tracker.
 */

struct tracker {
  struct blk blk;
  struct bitmap_store *store;
  const char *name;             /* for logs: the export's */
};

void tracker_init (struct tracker *t, struct blk *lower,
                   struct bitmap_store *store, const char *name);

/* The live bitmap over [OFFSET, OFFSET+COUNT) as extents with flag 1 =
 * dirty; NULL T: all clean.  -1 on out of memory; a full list ends
 * early. */
int tracker_dirty_extents (struct tracker *t, uint64_t offset, uint64_t count,
                           struct image_extents *out);
/* Marks a region to copy although no local write made it dirty (on
 * disk with the store's next flush: see bitmap_store_mark()). */
void tracker_mark (struct tracker *t, uint64_t offset, uint64_t length);
/* The region's data is safe elsewhere (LENGTH 0: to the end). */
void tracker_clear (struct tracker *t, uint64_t offset, uint64_t length);
uint64_t tracker_dirty_bytes (const struct tracker *t);

/* For the mirror job, which keeps regions recorded beyond a guest
 * write's life (mirror.c still calls bitmap_store_* directly; these
 * are where it moves to).  As bitmap_store_begin_write(),
 * end_write()/end_write_clean() (CLEAN), share_intent(), and the live
 * bitmap its passes freeze. */
int tracker_begin (struct tracker *t, struct bitmap_intent *in,
                   uint64_t offset, uint64_t length);
void tracker_end (struct tracker *t, struct bitmap_intent *in, bool clean);
void tracker_share (struct tracker *t, struct bitmap_intent *dst,
                    const struct bitmap_intent *src);
struct dirty_bitmap *tracker_live (struct tracker *t);

#endif
