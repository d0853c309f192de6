/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_OBJCACHE_H
#define MIRRORD_COMMON_OBJCACHE_H

#include <stddef.h>

/* A cache of freed objects of one size, for the data path's per-request
 * structures: a busy connection's steady state then calls neither
 * calloc nor free (together 3-5 % of a busy daemon's time in perf).
 * At most MAX objects wait in the cache; more are freed.  Loop thread
 * only: no locking.
 *
 * Under AddressSanitizer the cache is bypassed, so a use after free
 * still lands on memory ASan knows to be freed. */
struct objcache {
  size_t size;
  unsigned max;
  unsigned nr;
  void *head;
};

#define OBJCACHE_INIT(type, max) { sizeof (type), (max), 0, NULL }

/* A zeroed object, or NULL (errno ENOMEM). */
void *objcache_get (struct objcache *c);
/* Takes P back (NULL is ignored). */
void objcache_put (struct objcache *c, void *p);

#endif
