/* SPDX-License-Identifier: MIT */
/* The block interface's dispatch (block.h): which layer runs a command,
 * and the completion stack that brings it back up. */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "block.h"

void
blk_init (struct blk *b, const struct blk_ops *ops, struct blk *lower,
          struct loop *loop)
{
  b->ops = ops;
  b->lower = lower;
  b->loop = loop ? loop : lower ? lower->loop : NULL;
}

void
blk_req_init (struct blk_req *req)
{
  memset (req, 0, sizeof *req);
  list_init (&req->held_node);
}

static blk_op_fn
op_for (const struct blk_ops *ops, enum image_cmd cmd)
{
  switch (cmd) {
  case IMAGE_READ:    return ops->read;
  case IMAGE_WRITE:   return ops->write;
  case IMAGE_ZERO:    return ops->zero;
  case IMAGE_TRIM:    return ops->trim;
  case IMAGE_FLUSH:   return ops->flush;
  case IMAGE_EXTENTS: return ops->block_status;
  case IMAGE_CACHE:   return ops->cache;
  }
  return NULL;
}

void
blk_submit (struct blk *b, struct blk_req *req)
{
  blk_op_fn fn;

  while ((fn = op_for (b->ops, req->io.cmd)) == NULL && b->lower)
    b = b->lower;
  if (fn == NULL) {
    blk_complete_later (b, req, EINVAL);  /* not a command at all */
    return;
  }
  fn (b, req);
}

void
blk_submit_lower (struct blk *b, struct blk_req *req)
{
  assert (b->lower);
  blk_submit (b->lower, req);
}

unsigned
blk_flags (struct blk *b)
{
  while (b->ops->flags == NULL && b->lower)
    b = b->lower;
  return b->ops->flags ? b->ops->flags (b) : BLK_READ_ONLY;
}

uint64_t
blk_size (struct blk *b)
{
  while (b->ops->size == NULL && b->lower)
    b = b->lower;
  return b->ops->size ? b->ops->size (b) : 0;
}

void
blk_req_push (struct blk_req *req, image_done_fn done, void *opaque)
{
  assert (req->depth < BLK_MAX_FRAMES);
  req->frames[req->depth].done = req->io.done;
  req->frames[req->depth].opaque = req->io.opaque;
  req->depth++;
  req->io.done = done;
  req->io.opaque = opaque;
}

void
blk_req_return (struct blk_req *req, int err)
{
  assert (req->depth > 0);
  req->depth--;
  req->io.done = req->frames[req->depth].done;
  req->io.opaque = req->frames[req->depth].opaque;
  req->io.done (&req->io, err);
}

static void
complete_now (void *opaque)
{
  struct blk_req *req = opaque;

  req->io.done (&req->io, req->later_err);
}

void
blk_complete_later (struct blk *b, struct blk_req *req, int err)
{
  req->later_err = err;
  memset (&req->later, 0, sizeof req->later);
  loop_defer (b->loop, &req->later, complete_now, req);
}
