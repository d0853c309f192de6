/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_BITMAP_STORE_H
#define MIRRORD_BITMAP_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmap/dirty-bitmap.h"
#include "common/ioq.h"
#include "common/list.h"

/* A persistent, write-intent dirty bitmap: one per export, in a file in
 * the state directory (format in bitmap/format.h).
 *
 * Two bitmaps are kept.  The live bitmap (dirty-bitmap.h) says which
 * granules may differ from their copy; writes mark it when they
 * complete, and the mirror (or an admin) clears it.  The on-disk
 * bitmap is what the file holds (or is being written): always a
 * superset of the live bitmap and of every write in flight.
 *
 * Write intent, as DRBD's activity log does it.  Before a write is
 * submitted, begin_write() makes sure its granules are set on disk.
 * If they already are, it costs nothing.  Otherwise the bits are set
 * in the on-disk copy and the block holding them joins the next
 * metadata flush; all marks made during one loop iteration share one
 * flush (pwrite of the changed blocks, one fdatasync on a worker
 * thread), and the writes waiting on it are released together.  So a
 * crash at any moment leaves every region that may have been written
 * marked in the file, and only those: the resync never copies the
 * whole disk.
 *
 * Clearing is lazy: the live bitmap is cleared at once, the file a
 * second later in one batch, and never below the writes in flight.
 * Granules that writes ended clean in (end_write_clean) stay set on
 * disk while they are hot — an activity set of bounded size, as DRBD's
 * activity log — so that writing them again costs no metadata flush.
 * close() stores the exact bitmap and marks the file clean.
 *
 * A file that is corrupt or made for another image size or granularity
 * never yields a clean bitmap: the whole disk is marked dirty (or, in
 * strict mode, open fails).  A data block that is missing (the file is
 * short), all zeroes, or fails its checksum or index marks its own
 * range dirty (strict: open fails).  The file is judged before anything
 * extends or rewrites it, and a new file is written whole, so a hole
 * never reads as an empty block.  All of this is logged.
 *
 * Loop thread only.
 */

struct bitmap_store;

struct bitmap_intent {
  /* Set by begin_write(); READY is the caller's. */
  void (*ready) (struct bitmap_intent *in, int err);
  void *opaque;
  /* Private. */
  struct list node;             /* the store's in-flight list */
  struct list wait_node;        /* the store's waiting list */
  uint64_t first, count;        /* granules */
  uint64_t wait_seq;
  bool waiting;
};

struct bitmap_store_opts {
  const char *path;             /* the bitmap file */
  const char *image_path;       /* recorded in the header, for humans */
  uint64_t size;                /* image size in bytes */
  uint32_t granularity;
  bool strict;                  /* refuse a bad file instead of all-dirty */
  uint64_t extent;              /* a write needing new bits marks its
                                   aligned extent of this many bytes (a
                                   multiple of granularity); 0 or the
                                   granularity: only its own granules */
};

/* Opens PATH, creating it if missing.  NULL with error_set() on I/O
 * errors, or in strict mode on a corrupt or mismatched file. */
struct bitmap_store *bitmap_store_open (const struct bitmap_store_opts *o,
                                        struct ioq *ioq);
/* Stores the exact bitmap, marks the file clean, frees.  No write may
 * be in flight.  -1 with error_set() if the file could not be written
 * (it then still holds a superset). */
int bitmap_store_close (struct bitmap_store *s);

struct dirty_bitmap *bitmap_store_live (struct bitmap_store *s);
uint64_t bitmap_store_dirty_bytes (const struct bitmap_store *s);
/* Bytes the file marks (or is being written to mark): what a resync
 * after a crash now would copy. */
uint64_t bitmap_store_ondisk_bytes (const struct bitmap_store *s);
/* Metadata flushes done, and how many were needed (statistics). */
uint64_t bitmap_store_flushes (const struct bitmap_store *s);
uint64_t bitmap_store_blocks_written (const struct bitmap_store *s);

/* Before a write into [OFFSET, OFFSET+LENGTH): returns 1 if its
 * granules are already on disk (proceed now), or 0 when IN->ready()
 * will run from the loop once they are (err 0) or could not be
 * recorded (err EIO or ENOSPC: the write must fail).  Either way IN is
 * in flight until end_write(). */
int bitmap_store_begin_write (struct bitmap_store *s, struct bitmap_intent *in,
                              uint64_t offset, uint64_t length);
/* After the write completed, successfully or not: marks the live
 * bitmap and releases IN. */
void bitmap_store_end_write (struct bitmap_store *s, struct bitmap_intent *in);
/* The same, for a write whose data is also where the bitmap would send
 * it (a mirror forwarded it to its target): released without marking
 * the live bitmap. */
void bitmap_store_end_write_clean (struct bitmap_store *s,
                                   struct bitmap_intent *in);

/* A second intent over SRC's granules, which are on disk already (SRC
 * is in flight and was ready): DST keeps them recorded after SRC ends,
 * for as long as the write lives on elsewhere (a mirror forwarding it
 * after the guest's acknowledgment).  End it like any other. */
void bitmap_store_share_intent (struct bitmap_store *s,
                                struct bitmap_intent *dst,
                                const struct bitmap_intent *src);

/* Marks [OFFSET, OFFSET+LENGTH) dirty (clipped to the image), in the
 * live bitmap at once and in the file with the next metadata flush:
 * for regions that must be copied although no local write made them
 * dirty (a copy that failed, the peer's changes before a resync).
 * Whoever then relies on the marks surviving a crash waits for
 * bitmap_store_barrier(). */
void bitmap_store_mark (struct bitmap_store *s, uint64_t offset,
                        uint64_t length);
/* Returns 1 if every bit marked so far is on disk, else 0 and
 * IN->ready() runs from the loop once it is (err 0) or could not be
 * (EIO, ENOSPC).  IN holds no bits: it needs no end_write(), and
 * bitmap_store_barrier_cancel() withdraws it before it is ready. */
int bitmap_store_barrier (struct bitmap_store *s, struct bitmap_intent *in);
void bitmap_store_barrier_cancel (struct bitmap_store *s,
                                  struct bitmap_intent *in);

/* The data of the range is safe elsewhere: clear the live bits (the
 * file follows lazily).  LENGTH 0 means to the end of the image. */
void bitmap_store_clear (struct bitmap_store *s, uint64_t offset,
                         uint64_t length);

#endif
