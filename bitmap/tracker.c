/* SPDX-License-Identifier: MIT */
/* The write-intent tracker (tracker.h).
 *
 * Design note.  A tracked write owns one struct bitmap_intent from
 * before it goes down until its completion has come back up through
 * this layer: the store counts it in flight over its granules, so the
 * lazy clearing never drops their bits from the file under it, and a
 * mirror that forwards the write after its reply (async mode) shares
 * the intent (req->intent) to keep them recorded longer.  The intent
 * lives in a frame from an object cache, not in the request: the
 * request type is the block interface's and knows no bitmap.
 *
 * Order, which is the crash guarantee: begin_write, then (ready) the
 * data moves, then end_write.  A write whose intent could not reach the
 * disk fails; it never moves unrecorded.  Whether the bits stay
 * (end_write) or go (end_write_clean) is decided by the layers below
 * through req->forwarded, set to ENOTCONN here before the write goes
 * down: only a write that succeeded locally and that the target
 * acknowledged ends clean.
 */
#include <config.h>

#include <errno.h>

#include "common/log.h"
#include "common/objcache.h"
#include "tracker.h"

struct frame {
  struct bitmap_intent intent;
  struct blk_req *req;
  struct tracker *t;
};

static struct objcache frame_cache = OBJCACHE_INIT (struct frame, 1024);

static struct tracker *
of (struct blk *b)
{
  return (struct tracker *) b;
}

static void
written (struct image_io *io, int err)
{
  struct frame *f = io->opaque;
  struct blk_req *req = blk_req_of (io);

  tracker_end (f->t, &f->intent, err == 0 && req->forwarded == 0);
  req->intent = NULL;
  objcache_put (&frame_cache, f);
  blk_req_return (req, err);
}

static void
intent_ready (struct bitmap_intent *in, int err)
{
  struct frame *f = in->opaque;

  if (err) {
    log_err ("export %s: failing a write: its dirty region could not be "
             "recorded", f->t->name);
    written (&f->req->io, err);
    return;
  }
  blk_submit_lower (&f->t->blk, f->req);
}

static void
tracker_write (struct blk *b, struct blk_req *req)
{
  struct tracker *t = of (b);
  struct frame *f;

  if (!blk_req_writes_in (req, blk_size (b))) {
    blk_submit_lower (b, req);  /* the image refuses a bad range */
    return;
  }
  if ((f = objcache_get (&frame_cache)) == NULL) {
    blk_complete_later (b, req, ENOMEM);
    return;
  }
  f->req = req;
  f->t = t;
  f->intent.ready = intent_ready;
  f->intent.opaque = f;
  req->intent = &f->intent;
  req->forwarded = ENOTCONN;
  blk_req_push (req, written, f);
  if (tracker_begin (t, &f->intent, req->io.offset, req->io.count) == 1)
    blk_submit_lower (b, req);
}

static const struct blk_ops tracker_ops = {
  .name = "tracker",
  .write = tracker_write, .zero = tracker_write, .trim = tracker_write,
};

void
tracker_init (struct tracker *t, struct blk *lower, struct bitmap_store *store,
              const char *name)
{
  blk_init (&t->blk, &tracker_ops, lower, NULL);
  t->store = store;
  t->name = name;
}

int
tracker_dirty_extents (struct tracker *t, uint64_t offset, uint64_t count,
                       struct image_extents *out)
{
  struct dirty_bitmap *bm = t ? bitmap_store_live (t->store) : NULL;
  uint64_t pos = offset, end = offset + count, start, len;

  while (pos < end) {
    int r;
    if (bm == NULL
        || dirty_bitmap_next_dirty (bm, pos, end - pos, &start, &len) == 1)
      return image_extents_add (out, pos, end - pos, 0) < 0 ? -1 : 0;
    r = image_extents_add (out, pos, start - pos, 0);
    if (r == 0)
      r = image_extents_add (out, start, len, 1);
    if (r != 0)
      return r < 0 ? -1 : 0;    /* full: the list ends early */
    pos = start + len;
  }
  return 0;
}

void
tracker_mark (struct tracker *t, uint64_t offset, uint64_t length)
{
  if (t)
    bitmap_store_mark (t->store, offset, length);
}

void
tracker_clear (struct tracker *t, uint64_t offset, uint64_t length)
{
  if (t)
    bitmap_store_clear (t->store, offset, length);
}

uint64_t
tracker_dirty_bytes (const struct tracker *t)
{
  return t ? bitmap_store_dirty_bytes (t->store) : 0;
}

int
tracker_begin (struct tracker *t, struct bitmap_intent *in, uint64_t offset,
               uint64_t length)
{
  return bitmap_store_begin_write (t->store, in, offset, length);
}

void
tracker_end (struct tracker *t, struct bitmap_intent *in, bool clean)
{
  if (clean)
    bitmap_store_end_write_clean (t->store, in);
  else
    bitmap_store_end_write (t->store, in);
}

void
tracker_share (struct tracker *t, struct bitmap_intent *dst,
               const struct bitmap_intent *src)
{
  bitmap_store_share_intent (t->store, dst, src);
}

struct dirty_bitmap *
tracker_live (struct tracker *t)
{
  return bitmap_store_live (t->store);
}
