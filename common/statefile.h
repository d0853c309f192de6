/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_STATEFILE_H
#define MIRRORD_COMMON_STATEFILE_H

#include <stddef.h>

/* Small state files replaced atomically: after a crash at any moment
 * PATH holds either its old content or the new, whole.
 *
 * The new content goes to PATH.tmp, which is fsynced, renamed over
 * PATH, and then the directory is fsynced so the rename itself is
 * durable.  Every step's result is checked; on failure PATH.tmp is
 * removed and PATH is untouched (or, if only the directory fsync
 * failed, already replaced but perhaps not durably: the error says
 * so).  Used for everything mirrord saves besides the bitmap's own
 * blocks: HA state, mirror jobs.
 */

/* Replaces PATH with LEN bytes of DATA (mode 0600).  -1 with
 * error_set() naming the step that failed. */
int statefile_write (const char *path, const void *data, size_t len);

/* Removes PATH durably (the directory is fsynced); a missing PATH is
 * not an error.  -1 with error_set(). */
int statefile_remove (const char *path);

#endif
