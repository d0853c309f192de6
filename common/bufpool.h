/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_BUFPOOL_H
#define MIRRORD_COMMON_BUFPOOL_H

#include <stddef.h>

/* Pooled, page-aligned I/O buffers, suitable for O_DIRECT.
 *
 * Sizes are rounded up to a power of two between 4 KiB and 64 MiB; a
 * freed buffer goes back to the free list of its size class, so the
 * steady state of a busy connection allocates nothing.  The pool keeps
 * at most BUFPOOL_CACHE_MAX bytes of free buffers, so a burst does not
 * pin memory forever.  Loop thread only: no locking.
 */

#define BUFPOOL_ALIGN 4096
#define BUFPOOL_MIN 4096
#define BUFPOOL_MAX (64u << 20)
#define BUFPOOL_CACHE_MAX (128u << 20)

/* Returns a buffer of at least SIZE bytes (SIZE <= BUFPOOL_MAX), or
 * NULL with error_set(). */
void *bufpool_get (size_t size);
/* Returns BUF, obtained for SIZE bytes, to the pool. */
void bufpool_put (void *buf, size_t size);
/* Frees every cached buffer. */
void bufpool_drain (void);

#endif
