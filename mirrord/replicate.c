/* SPDX-License-Identifier: MIT */
/* The replication layer (replicate.h).
 *
 * Design note.  A write is acknowledged upwards exactly once, when
 * every copy that must have it has it: the local one always, the
 * target's in write-blocking mode.  In sync mode both are started
 * together (req->parallel, req->pending counts the two), so a guest
 * waits for the slower of the two rather than their sum; a mirror that
 * cannot take the write at once (queue full, target down) answers 0
 * from mirror_guest_write and the write is local only.  Otherwise the
 * mirror is asked after the local write succeeded, and keeps the
 * request until it calls back.  The request's io is never changed on
 * the way down: the image and the mirror read the same command, flags
 * (FUA) and buffer.
 */
#include <config.h>

#include <errno.h>

#include "mirror.h"
#include "replicate.h"

static struct replicate *
of (struct blk *b)
{
  return (struct replicate *) b;
}

static void
finish (struct blk_req *req)
{
  blk_req_return (req, req->err);
}

static void
target_done (struct blk_req *req, int forwarded)
{
  req->forwarded = forwarded;
  if (--req->pending == 0)
    finish (req);
}

static void
mirrored (struct blk_req *req, int forwarded)
{
  req->forwarded = forwarded;
  finish (req);
}

static void
local_done (struct image_io *io, int err)
{
  struct replicate *r = io->opaque;
  struct blk_req *req = blk_req_of (io);

  req->err = err;
  if (req->parallel) {
    if (--req->pending == 0)
      finish (req);
    return;
  }
  if (err == 0 && mirror_guest_write (*r->mirror, req, mirrored) == 1)
    return;
  finish (req);
}

static void
replicate_write (struct blk *b, struct blk_req *req)
{
  struct replicate *r = of (b);
  struct mirror *m = *r->mirror;

  if (m == NULL || !blk_req_writes_in (req, blk_size (b))) {
    blk_submit_lower (b, req);
    return;
  }
  blk_req_push (req, local_done, r);
  req->forwarded = ENOTCONN;
  req->pending = 1;
  req->parallel = mirror_forwards_writes (m);
  if (req->parallel) {
    req->pending++;
    if (mirror_guest_write (m, req, target_done) == 0) {
      req->pending--;
      req->parallel = false;
    }
  }
  blk_submit_lower (b, req);
}

static void
flush_mirrored (struct blk_req *req, int err)
{
  finish (req);                 /* the local result: as before */
}

static void
flushed (struct image_io *io, int err)
{
  struct replicate *r = io->opaque;
  struct blk_req *req = blk_req_of (io);

  req->err = err;
  if (err == 0 && mirror_guest_flush (*r->mirror, req, flush_mirrored) == 1)
    return;
  finish (req);
}

static void
replicate_flush (struct blk *b, struct blk_req *req)
{
  struct replicate *r = of (b);

  if (*r->mirror == NULL) {
    blk_submit_lower (b, req);
    return;
  }
  blk_req_push (req, flushed, r);
  blk_submit_lower (b, req);
}

static const struct blk_ops replicate_ops = {
  .name = "replicate",
  .write = replicate_write, .zero = replicate_write, .trim = replicate_write,
  .flush = replicate_flush,
};

void
replicate_init (struct replicate *r, struct blk *lower,
                struct mirror *const *mirror)
{
  blk_init (&r->blk, &replicate_ops, lower, NULL);
  r->mirror = mirror;
}
