/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_REPLICATE_H
#define MIRRORD_REPLICATE_H

#include "image/block.h"

struct mirror;

/* The replication layer: between the write-intent tracker and the
 * image in an export's stack (block.h), the data path's door to the
 * mirror job (mirror.h's guest API).
 *
 * With no mirror, or one that does not block writes, everything passes
 * down untouched.  Otherwise, for a write inside the disk:
 *   - sync mode with the target up (mirror_forwards_writes): the write
 *     goes to the image and the target at once, and comes back up when
 *     both are done;
 *   - else, once the local write succeeded, mirror_guest_write() may
 *     take it (write blocking, an async forward, a throttled write) and
 *     say when it is done.
 * req->forwarded is 0 when the target has the write (the tracker above
 * then leaves no dirty bit), else an errno.  The request's own FUA flag
 * goes down to the image and, through the mirror, to a sync target.
 * A FLUSH covers the target too in write-blocking mode.
 *
 * The layer finds the export's current mirror through *MIRROR (the
 * export replaces its job on a new start).
 */

struct replicate {
  struct blk blk;
  struct mirror *const *mirror;
};

void replicate_init (struct replicate *r, struct blk *lower,
                     struct mirror *const *mirror);

#endif
