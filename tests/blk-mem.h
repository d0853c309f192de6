/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_TESTS_BLK_MEM_H
#define MIRRORD_TESTS_BLK_MEM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/list.h"
#include "image/block.h"

/* A disk in memory behind the block interface (image/block.h): the
 * bottom of a stack in the layers' unit tests and the NBD fuzz
 * harness's backend, in place of an image.
 *
 * Every request is carried out at once and completed from the loop
 * (never inside blk_submit), like an image.  With HOLD set, requests
 * wait instead until blk_mem_release() — so a test decides when the
 * lower layer answers.  FAIL_ERR, when not 0, fails the next request
 * with that errno.  Block status reports 4 KiB blocks of zeroes as
 * holes.  The counters record what reached the bottom.
 */

struct blk_mem {
  struct blk blk;
  uint8_t *data;
  uint64_t size;
  bool readonly;
  bool hold;
  int fail_err;
  struct list held;
  unsigned in_flight;           /* submitted, not yet completed */
  unsigned nr[IMAGE_EXTENTS + 1];  /* requests by command */
  unsigned last_flags;
  uint64_t last_offset, last_count;
};

/* -1 on out of memory. */
int blk_mem_init (struct blk_mem *m, struct loop *loop, uint64_t size,
                  bool readonly);
void blk_mem_free (struct blk_mem *m);
/* Completes the held requests, in order (from the loop). */
void blk_mem_release (struct blk_mem *m);

/* A test's request: what came back, in which order. */
struct blk_test_io {
  struct blk_req req;
  bool done;
  int err;
  unsigned order;               /* 1 for the first reply, and so on */
};

/* Fills X afresh: CMD, FLAGS over [OFF, OFF+COUNT) with buffer BUF. */
void blk_test_prepare (struct blk_test_io *x, enum image_cmd cmd,
                       unsigned flags, uint64_t off, uint64_t count, void *buf);
/* The same, then submits it to B. */
void blk_test_submit (struct blk *b, struct blk_test_io *x, enum image_cmd cmd,
                      unsigned flags, uint64_t off, uint64_t count, void *buf);
/* Replies seen so far (blk_test_io.order); 0 again after reset. */
unsigned blk_test_replies (void);
void blk_test_reset (void);

/* A test's loop and a writable memory disk of SIZE bytes on it (NULL
 * on failure), and their end. */
struct loop *blk_test_start (struct blk_mem *m, uint64_t size);
void blk_test_end (struct loop *loop, struct blk_mem *m);

/* For tests: runs LOOP until *DONE (NULL: for one short moment, so
 * deferred completions run); false after 5 s without. */
bool blk_test_run (struct loop *loop, const bool *done);

#endif
