/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_IMAGE_BLOCK_H
#define MIRRORD_IMAGE_BLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "common/list.h"
#include "common/loop.h"
#include "image/image.h"

/* The block interface: what every layer of an export offers the layer
 * above it, and what the NBD server sees of an export (nbdkit's
 * backend, QEMU's BlockBackend).
 *
 * A struct blk is one layer.  Its ops say what it does with each
 * command — read, write (FUA), zero (FUA, FAST_ZERO, MAY_TRIM), trim,
 * flush, block status (extents), cache — and a NULL op passes the
 * command to the layer below unchanged, as an nbdkit filter's missing
 * callback does.  The bottom layer (an image, blk-image.c; or a memory
 * disk in the tests) implements every op.
 *
 * One request type travels the whole way down: struct blk_req.  Its
 * io part (struct image_io) is the command as the submitter filled it,
 * and the bottom layer hands that very io to image_submit(), so the
 * image sees no copy.  A layer that must act when a request completes
 * pushes its own completion (blk_req_push) and pops it again
 * (blk_req_return), so completions climb back up through the same
 * layers, in reverse, each once.  Like image_submit(), a submit never
 * completes the request inside the call: refusals go through
 * blk_complete_later().
 *
 * Flags and size are asked for at any time (blk_flags, blk_size): a
 * layer's answer may change (a role gate turns read-only on demotion),
 * and a layer that does not answer passes the question down.
 *
 * Loop thread only; errors are positive errno values.
 */

/* Export flags (blk_flags). */
#define BLK_READ_ONLY       (1u << 0)
#define BLK_CAN_FLUSH       (1u << 1)
#define BLK_CAN_FUA         (1u << 2)
#define BLK_CAN_TRIM        (1u << 3)
#define BLK_CAN_ZERO        (1u << 4)
#define BLK_CAN_FAST_ZERO   (1u << 5)
#define BLK_CAN_MULTI_CONN  (1u << 6)
#define BLK_CAN_CACHE       (1u << 7)
/* What a disk that serves every command offers. */
#define BLK_CAN_ALL (BLK_CAN_FLUSH | BLK_CAN_FUA | BLK_CAN_TRIM | BLK_CAN_ZERO \
                     | BLK_CAN_FAST_ZERO | BLK_CAN_MULTI_CONN | BLK_CAN_CACHE)

struct blk;
struct blk_req;

typedef void (*blk_op_fn) (struct blk *b, struct blk_req *req);

struct blk_ops {
  const char *name;
  blk_op_fn read, write, zero, trim, flush, block_status, cache;
  unsigned (*flags) (struct blk *b);
  uint64_t (*size) (struct blk *b);
};

struct blk {
  const struct blk_ops *ops;
  struct blk *lower;            /* NULL at the bottom */
  struct loop *loop;            /* where deferred completions run */
};

/* A completion a layer pushed: the one it replaced. */
struct blk_frame {
  image_done_fn done;
  void *opaque;
};

#define BLK_MAX_FRAMES 4

struct bitmap_intent;

struct blk_req {
  /* The command and the submitter's completion (image.h): cmd, flags,
   * offset, count, buf, extents, done, opaque.  done() gets &io. */
  struct image_io io;

  /* Per-layer state: each field is written by the one layer named. */
  struct blk_frame frames[BLK_MAX_FRAMES];
  unsigned depth;
  struct list held_node;        /* gate: held during a cut-over */
  struct bitmap_intent *intent; /* tracker: the write's intent, on disk
                                   while the write is in flight */
  int forwarded;                /* replication: 0 once the mirror's
                                   target has the write too (the
                                   tracker then ends the intent clean) */
  int err;                      /* replication: the local result */
  unsigned pending;             /* replication: local and target */
  bool parallel;                /* replication: both at once */
  struct loop_deferred later;   /* blk_complete_later() */
  int later_err;
};

static inline struct blk_req *
blk_req_of (struct image_io *io)
{
  return (struct blk_req *) ((char *) io - offsetof (struct blk_req, io));
}

/* Clears REQ for a new command (the caller then fills req->io). */
void blk_req_init (struct blk_req *req);

void blk_init (struct blk *b, const struct blk_ops *ops, struct blk *lower,
               struct loop *loop);
/* Submits REQ to B (or the first layer below that handles its
 * command). */
void blk_submit (struct blk *b, struct blk_req *req);
/* The same, to the layer below B: how a layer passes a request on. */
void blk_submit_lower (struct blk *b, struct blk_req *req);
unsigned blk_flags (struct blk *b);
uint64_t blk_size (struct blk *b);
static inline bool blk_writable (struct blk *b)
{
  return !(blk_flags (b) & BLK_READ_ONLY);
}

/* A layer's completion: DONE (with OPAQUE in io.opaque) runs instead of
 * the one above until blk_req_return() gives that one back. */
void blk_req_push (struct blk_req *req, image_done_fn done, void *opaque);
/* Pops the layer's completion and completes REQ upwards with ERR. */
void blk_req_return (struct blk_req *req, int err);
/* Completes REQ (as the layer above sees it) with ERR from B's loop,
 * after the caller returns. */
void blk_complete_later (struct blk *b, struct blk_req *req, int err);

static inline bool blk_cmd_writes (enum image_cmd cmd)
{
  return cmd == IMAGE_WRITE || cmd == IMAGE_TRIM || cmd == IMAGE_ZERO;
}
/* Is REQ a write of at least a byte inside [0, SIZE)? */
static inline bool blk_req_writes_in (const struct blk_req *req, uint64_t size)
{
  return blk_cmd_writes (req->io.cmd) && req->io.count > 0
    && req->io.offset < size && req->io.count <= size - req->io.offset;
}

/* The bottom layer over an image (blk-image.c).  The image stays the
 * caller's: close it after the layer is done with. */
struct blk_image {
  struct blk blk;
  struct image *img;
};
void blk_image_init (struct blk_image *bi, struct image *img);

#endif
