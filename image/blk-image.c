/* SPDX-License-Identifier: MIT */
/* The bottom of every export's stack: an image behind the block
 * interface (block.h).
 *
 * Every command goes to image_submit() with the request's own io, so
 * the image's contract checks (range, flags, writability) and its
 * drivers see exactly what the NBD client sent, and the completion the
 * layers above pushed runs when the image completes.  Nothing here
 * keeps state per request.
 */
#include <config.h>

#include "block.h"

static struct blk_image *
of (struct blk *b)
{
  return (struct blk_image *) b;
}

static void
submit (struct blk *b, struct blk_req *req)
{
  image_submit (of (b)->img, &req->io);
}

static unsigned
flags (struct blk *b)
{
  return of (b)->img->readonly ? BLK_CAN_ALL | BLK_READ_ONLY : BLK_CAN_ALL;
}

static uint64_t
size (struct blk *b)
{
  return of (b)->img->size;
}

static const struct blk_ops image_blk_ops = {
  .name = "image",
  .read = submit, .write = submit, .zero = submit, .trim = submit,
  .flush = submit, .block_status = submit, .cache = submit,
  .flags = flags, .size = size,
};

void
blk_image_init (struct blk_image *bi, struct image *img)
{
  blk_init (&bi->blk, &image_blk_ops, NULL, ioq_loop (img->ioq));
  bi->img = img;
}
