/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_CLEANUP_H
#define MIRRORD_COMMON_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>
#include <pthread.h>

/* Scope-bound cleanup, as nbdkit does it: a variable declared
 * CLEANUP_FREE is freed when it goes out of scope, whatever the path. */

static inline void cleanup_free (void *ptr) { free (*(void **) ptr); }
static inline void
cleanup_close (int *fd)
{
  if (*fd >= 0)
    close (*fd);
}
static inline void
cleanup_unlock (pthread_mutex_t **m)
{
  pthread_mutex_unlock (*m);
}

#define CLEANUP_FREE __attribute__ ((cleanup (cleanup_free)))
#define CLEANUP_CLOSE __attribute__ ((cleanup (cleanup_close)))

#define CLEANUP_CAT_(a, b) a##b
#define CLEANUP_CAT(a, b) CLEANUP_CAT_ (a, b)
/* Holds MUTEX until the end of the enclosing block. */
#define SCOPED_LOCK(mutex)                                              \
  __attribute__ ((cleanup (cleanup_unlock), unused))                    \
  pthread_mutex_t *CLEANUP_CAT (scoped_lock_, __LINE__) = (mutex);      \
  pthread_mutex_lock (CLEANUP_CAT (scoped_lock_, __LINE__))

#endif
