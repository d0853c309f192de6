/* SPDX-License-Identifier: MIT */
/* A small LRU cache of cluster-sized metadata tables, keyed by their
 * offset in the file.  Dirty tables and tables being written back are
 * never evicted: the bound is soft, and the driver starts a write-back
 * when too many are dirty. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "qcow2.h"

int
qcache_init (struct qcache *c, unsigned max, size_t table_size)
{
  c->nbuckets = 64;
  while (c->nbuckets < max)
    c->nbuckets *= 2;
  c->buckets = calloc (c->nbuckets, sizeof *c->buckets);
  if (c->buckets == NULL)
    return error_set (ENOMEM, "allocating a table cache");
  c->nr = c->nr_dirty = 0;
  c->max = max;
  c->clock = 0;
  c->table_size = table_size;
  return 0;
}

static unsigned
bucket (const struct qcache *c, uint64_t offset)
{
  uint64_t h = offset * 0x9e3779b97f4a7c15ull;
  return (unsigned) (h >> 40) & (c->nbuckets - 1);
}

static void
table_free (struct qcache *c, struct qtable *t)
{
  bufpool_put (t->data, c->table_size);
  free (t);
}

void
qcache_free (struct qcache *c)
{
  for (unsigned i = 0; c->buckets && i < c->nbuckets; i++)
    while (c->buckets[i]) {
      struct qtable *t = c->buckets[i];
      c->buckets[i] = t->hnext;
      table_free (c, t);
    }
  free (c->buckets);
  c->buckets = NULL;
}

struct qtable *
qcache_find (struct qcache *c, uint64_t offset)
{
  for (struct qtable *t = c->buckets[bucket (c, offset)]; t; t = t->hnext)
    if (t->offset == offset) {
      t->used = ++c->clock;
      return t;
    }
  return NULL;
}

static void
unlink_table (struct qcache *c, struct qtable *t)
{
  struct qtable **pp = &c->buckets[bucket (c, t->offset)];

  while (*pp != t)
    pp = &(*pp)->hnext;
  *pp = t->hnext;
  c->nr--;
}

/* Evicts the least recently used clean, unpinned table, if any. */
static void
evict_one (struct qcache *c)
{
  struct qtable *victim = NULL;

  for (unsigned i = 0; i < c->nbuckets; i++)
    for (struct qtable *t = c->buckets[i]; t; t = t->hnext)
      if (!t->dirty && !t->wb && (victim == NULL || t->used < victim->used))
        victim = t;
  if (victim) {
    unlink_table (c, victim);
    table_free (c, victim);
  }
}

struct qtable *
qcache_insert (struct qcache *c, uint64_t offset)
{
  struct qtable *t;
  unsigned b;

  if (c->nr >= c->max)
    evict_one (c);
  t = calloc (1, sizeof *t);
  if (t == NULL || (t->data = bufpool_get (c->table_size)) == NULL) {
    free (t);
    error_set (ENOMEM, "allocating a metadata table");
    return NULL;
  }
  t->offset = offset;
  t->used = ++c->clock;
  b = bucket (c, offset);
  t->hnext = c->buckets[b];
  c->buckets[b] = t;
  c->nr++;
  return t;
}

void
qcache_remove (struct qcache *c, uint64_t offset)
{
  for (struct qtable *t = c->buckets[bucket (c, offset)]; t; t = t->hnext)
    if (t->offset == offset) {
      if (t->dirty)
        c->nr_dirty--;
      unlink_table (c, t);
      table_free (c, t);
      return;
    }
}

void
qcache_mark_dirty (struct qcache *c, struct qtable *t)
{
  if (!t->dirty)
    c->nr_dirty++;
  t->dirty = true;
}

void
qcache_for_each_dirty (struct qcache *c,
                       void (*fn) (struct qtable *t, void *opaque),
                       void *opaque)
{
  for (unsigned i = 0; i < c->nbuckets; i++)
    for (struct qtable *t = c->buckets[i]; t; t = t->hnext)
      if (t->dirty)
        fn (t, opaque);
}
