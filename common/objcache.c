/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "objcache.h"

#if defined (__SANITIZE_ADDRESS__)
#define OBJCACHE_BYPASS 1
#elif defined (__has_feature)
#if __has_feature (address_sanitizer)
#define OBJCACHE_BYPASS 1
#endif
#endif

struct free_obj {
  struct free_obj *next;
};

void *
objcache_get (struct objcache *c)
{
#ifndef OBJCACHE_BYPASS
  struct free_obj *o = c->head;

  if (o) {
    c->head = o->next;
    c->nr--;
    memset (o, 0, c->size);
    return o;
  }
#endif
  return calloc (1, c->size < sizeof (struct free_obj)
                    ? sizeof (struct free_obj) : c->size);
}

void
objcache_put (struct objcache *c, void *p)
{
#ifndef OBJCACHE_BYPASS
  struct free_obj *o = p;

  if (p && c->nr < c->max) {
    o->next = c->head;
    c->head = o;
    c->nr++;
    return;
  }
#endif
  free (p);
}
