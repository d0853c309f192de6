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

/* For tests: runs LOOP until *DONE (NULL: for one short moment, so
 * deferred completions run); false after 5 s without. */
bool blk_test_run (struct loop *loop, const bool *done);

#endif
