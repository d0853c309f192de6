/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "bufpool.h"
#include "error.h"

#define NR_CLASSES 15           /* 4 KiB << 0 .. 4 KiB << 14 = 64 MiB */

struct free_buf {
  struct free_buf *next;
};

static struct free_buf *free_list[NR_CLASSES];
static size_t cached_bytes;

static unsigned
size_class (size_t size)
{
  unsigned c = 0;

  while (c < NR_CLASSES - 1 && ((size_t) BUFPOOL_MIN << c) < size)
    c++;
  return c;
}

void *
bufpool_get (size_t size)
{
  unsigned c;
  void *buf;

  if (size > BUFPOOL_MAX) {
    error_set (EINVAL, "buffer of %zu bytes is over the %u limit",
               size, BUFPOOL_MAX);
    return NULL;
  }
  c = size_class (size);
  if (free_list[c]) {
    buf = free_list[c];
    free_list[c] = free_list[c]->next;
    cached_bytes -= (size_t) BUFPOOL_MIN << c;
    return buf;
  }
  if (posix_memalign (&buf, BUFPOOL_ALIGN, (size_t) BUFPOOL_MIN << c) != 0) {
    error_set (ENOMEM, "allocating a %zu byte I/O buffer",
               (size_t) BUFPOOL_MIN << c);
    return NULL;
  }
  return buf;
}

void
bufpool_put (void *buf, size_t size)
{
  unsigned c;
  size_t bytes;

  if (buf == NULL)
    return;
  c = size_class (size);
  bytes = (size_t) BUFPOOL_MIN << c;
  if (cached_bytes + bytes > BUFPOOL_CACHE_MAX) {
    free (buf);
    return;
  }
  struct free_buf *fb = buf;
  fb->next = free_list[c];
  free_list[c] = fb;
  cached_bytes += bytes;
}

void
bufpool_drain (void)
{
  for (unsigned c = 0; c < NR_CLASSES; c++) {
    while (free_list[c]) {
      struct free_buf *fb = free_list[c];
      free_list[c] = fb->next;
      free (fb);
    }
  }
  cached_bytes = 0;
}
