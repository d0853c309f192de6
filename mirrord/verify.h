/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_VERIFY_H
#define MIRRORD_VERIFY_H

#include <json-c/json.h>

/* mirrorctl verify (SPEC §4): reads the export and its peer (URI) side
 * by side in 1 MiB chunks, and counts the blocks (the bitmap's
 * granularity) that differ, with their ranges (merged, at most 1024
 * listed).  Regions being written meanwhile may differ for that
 * reason alone; on an idle pair in sync the answer is 0.  DONE gets
 * {"differing_blocks", "differing_bytes", "block_size",
 * "compared_bytes", "ranges": [{"offset","length"}...]}, or an error
 * (error_get() says why) — on the loop, never from inside the call. */

struct export;
typedef void (*verify_done_fn) (void *opaque, int err, json_object *result);

int verify_start (struct export *e, const char *uri, verify_done_fn done,
                  void *opaque);

#endif
