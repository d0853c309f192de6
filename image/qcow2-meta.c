/* SPDX-License-Identifier: MIT */
/* qcow2 metadata: L2 tables, refcounts, cluster allocation, the
 * ordered write-back that keeps the image consistent after a crash
 * (see the contract in qcow2.h), and the overlap checks.
 *
 * Overlap checks.  Nothing may ever write a cluster that holds
 * metadata, nor write in place or free a cluster while a reference to
 * it that the refcounts do not count lives on.  QEMU guards the first
 * with its overlap-check; this driver keeps both promises so:
 *
 *  - The metadata set (q->meta): every cluster of the header, the L1
 *    table, the refcount table, each L2 table and refcount block and
 *    the bitmap directory, as a sorted array of cluster << 3 | kind
 *    (enum qmeta_kind, so a message can name the structure).  An L1
 *    or refcount table entry that points past the end of the file
 *    reserves its cluster too: the allocator must never fill it, or a
 *    table made of guest data would come to life there.  Built
 *    at open by one sort; kept up to date as L2 tables and refcount
 *    blocks are allocated and the refcount table moves (nothing else
 *    changes it: tables are never freed).  A lookup is a binary
 *    search, O(log n) for n metadata clusters (about one per 512 MiB
 *    of guest disk at 64 KiB clusters, plus L1 and the refcount
 *    table).  Internal snapshots' tables are not in it: writable
 *    opens refuse images that have any, and read-only ones write
 *    nothing.
 *
 *  - At open, the layout (layout_check): two structures in one
 *    cluster (the refcount table over L1, a refcount block that is
 *    also an L2 table, two L1 entries with one L2 table...) refuse a
 *    writable open, naming both, and the file is left as it was.
 *    A read-only open warns and goes on: it writes nothing.
 *
 *  - At run time, whenever a request uses an L2 entry (qcow2.c,
 *    map_cluster): a data cluster, a zero cluster's preallocation, or
 *    a compressed cluster's bytes that overlap the set fail the
 *    request with EIO and mark the image corrupt (qcow2_corrupt: the
 *    header's corrupt bit, one log line naming the structure, every
 *    later write refused).  Every data write is checked once more
 *    just before it is submitted, freshly allocated clusters
 *    included, as QEMU does.
 *
 *  - The reference scan (refscan), on writable opens.  Two L2 entries
 *    that map one cluster whose refcount is 1 each look valid: only
 *    the whole picture shows that writing one in place changes the
 *    other, or that freeing one lets the allocator hand out the
 *    other's data.  So a writable open reads every L2 table once
 *    (as qemu-img check does, and QEMU at the open of an image left
 *    dirty) and counts the references to each host cluster: a bitmap
 *    of clusters seen, a list of the clusters seen again (normally
 *    only compressed ones), then one pass in cluster order that reads
 *    each refcount block once.  A cluster with more references than
 *    its refcount, or several while one entry claims it alone
 *    (COPIED), is recorded (struct qbadref, q->badrefs): a request
 *    that would write it in place or free it fails like an overlap,
 *    and the allocator never hands it out.  So is a cluster an entry
 *    references past the end of the file (which the file's growth
 *    would otherwise bring to life); a cluster whose refcount block
 *    cannot be read counts as having refcount 0.  The scan reads
 *    1/8192 of the allocated guest disk at 64 KiB clusters (128 MiB
 *    for a full 1 TiB disk) into the L2 cache, which requests would
 *    fill anyway, takes about 0.3 s of CPU per 16 million entries,
 *    and needs three bits per cluster of the file while it runs
 *    (6 MiB per TiB); afterwards only the list of bad clusters is
 *    kept, normally empty, and the check per request is a binary
 *    search in it.  Unaligned entries, which no growth can make
 *    valid, are left to the run-time checks above.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/log.h"
#include "qcow2.h"

/* ---- Corruption ---- */

int
qcow2_corrupt (struct qcow2 *q, const char *why, ...)
{
  char msg[256];
  va_list ap;

  va_start (ap, why);
  vsnprintf (msg, sizeof msg, why, ap);
  va_end (ap);
  if (!q->corrupt) {
    q->corrupt = true;
    log_err ("%s: qcow2 metadata is corrupt: %s; refusing further writes",
             q->file->path, msg);
    /* Mark the image so that no one writes to it before a repair
     * (QEMU does the same).  Version 2 has no field for it. */
    if (!q->file->readonly && q->h.version >= 3) {
      uint8_t b[8];
      q->h.incompatible |= QCOW2_INCOMPAT_CORRUPT;
      qcow2_put_be64 (b, q->h.incompatible);
      if (pwrite (q->meta_fd, b, 8, QCOW2_HDR_INCOMPAT) != 8
          || fdatasync (q->meta_fd) == -1)
        log_err ("%s: could not set the corrupt bit: %m", q->file->path);
    }
  }
  return error_set (EIO, "qcow2 metadata is corrupt: %s", msg);
}

/* ---- The metadata set (overlap checks) ---- */

static const char *const meta_names[] = {
  [QM_HEADER] = "image header",
  [QM_L1] = "L1 table",
  [QM_L2] = "L2 table",
  [QM_REFTABLE] = "refcount table",
  [QM_REFBLOCK] = "refcount block",
  [QM_BITMAP_DIR] = "bitmap directory",
};

static uint64_t
meta_key (uint64_t cluster, enum qmeta_kind k)
{
  return cluster << 3 | k;
}

static uint64_t
key_cluster (uint64_t key)
{
  return key >> 3;
}

/* The index of the first entry for a cluster at or after C. */
static size_t
meta_search (const struct qcow2 *q, uint64_t c)
{
  size_t lo = 0, hi = q->meta_nr;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (key_cluster (q->meta[mid]) < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The first metadata cluster in [C, C+N): returns its kind and sets
 * *FOUND, or returns -1. */
static int
meta_find (const struct qcow2 *q, uint64_t c, uint64_t n, uint64_t *found)
{
  size_t i = meta_search (q, c);

  if (i == q->meta_nr || key_cluster (q->meta[i]) - c >= n)
    return -1;
  *found = key_cluster (q->meta[i]);
  return (int) (q->meta[i] & 7);
}

/* Clusters the driver itself just allocated (never metadata yet). */
static int
meta_add (struct qcow2 *q, uint64_t cluster, uint64_t n, enum qmeta_kind k)
{
  for (uint64_t c = cluster; c < cluster + n; c++) {
    size_t i = meta_search (q, c);
    if (i < q->meta_nr && key_cluster (q->meta[i]) == c)
      continue;
    if (q->meta_nr == q->meta_cap) {
      size_t cap = q->meta_cap ? q->meta_cap * 2 : 64;
      uint64_t *m = realloc (q->meta, cap * sizeof *m);
      if (m == NULL)
        return error_set (ENOMEM, "growing the metadata set");
      q->meta = m;
      q->meta_cap = cap;
    }
    memmove (q->meta + i + 1, q->meta + i, (q->meta_nr - i) * sizeof *q->meta);
    q->meta[i] = meta_key (c, k);
    q->meta_nr++;
  }
  return 0;
}

static void
meta_remove (struct qcow2 *q, uint64_t cluster, uint64_t n)
{
  for (uint64_t c = cluster; c < cluster + n; c++) {
    size_t i = meta_search (q, c);
    if (i < q->meta_nr && key_cluster (q->meta[i]) == c) {
      memmove (q->meta + i, q->meta + i + 1,
               (q->meta_nr - i - 1) * sizeof *q->meta);
      q->meta_nr--;
    }
  }
}

int
qcow2_check_overlap (struct qcow2 *q, uint64_t host, uint64_t len,
                     const char *what, uint64_t guest)
{
  uint64_t cs = q->cluster_size, first = host / cs, found;
  int k;

  if (len == 0)
    return 0;
  k = meta_find (q, first, (host + len - 1) / cs - first + 1, &found);
  if (k < 0)
    return 0;
  return qcow2_corrupt (q, "%s at %#llx for guest offset %#llx overlaps the "
                        "%s at %#llx", what, (unsigned long long) host,
                        (unsigned long long) guest, meta_names[k],
                        (unsigned long long) (found * cs));
}

/* ---- Clusters referenced beyond their refcount ---- */

/* The first bad cluster in [C, C+N), or NULL. */
static const struct qbadref *
badref_find (const struct qcow2 *q, uint64_t c, uint64_t n)
{
  size_t lo = 0, hi = q->badrefs_nr;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (q->badrefs[mid].cluster < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == q->badrefs_nr || q->badrefs[lo].cluster - c >= n)
    return NULL;
  return &q->badrefs[lo];
}

/* Is any cluster of [C, C+N) metadata or a bad cluster?  *HIT the
 * first such. */
static bool
reserved (const struct qcow2 *q, uint64_t c, uint64_t n, uint64_t *hit)
{
  const struct qbadref *b = badref_find (q, c, n);
  uint64_t m;

  if (meta_find (q, c, n, &m) < 0)
    m = UINT64_MAX;
  if (b && b->cluster < m)
    m = b->cluster;
  *hit = m;
  return m != UINT64_MAX;
}

int
qcow2_check_refs (struct qcow2 *q, uint64_t host, uint64_t len, uint64_t guest)
{
  uint64_t cs = q->cluster_size, first = host / cs;
  const struct qbadref *b;

  if (len == 0 || q->badrefs_nr == 0
      || (b = badref_find (q, first, (host + len - 1) / cs - first + 1)) == NULL)
    return 0;
  if (b->past_end)
    return qcow2_corrupt (q, "host cluster at %#llx for guest offset %#llx "
                          "lay past the end of the file at open",
                          (unsigned long long) (b->cluster * cs),
                          (unsigned long long) guest);
  if (b->refs > b->refcount)
    return qcow2_corrupt (q, "host cluster at %#llx for guest offset %#llx "
                          "has %llu reference%s but a refcount of %llu",
                          (unsigned long long) (b->cluster * cs),
                          (unsigned long long) guest,
                          (unsigned long long) b->refs, b->refs == 1 ? "" : "s",
                          (unsigned long long) b->refcount);
  return qcow2_corrupt (q, "host cluster at %#llx for guest offset %#llx "
                        "has %llu references but one claims it alone (COPIED)",
                        (unsigned long long) (b->cluster * cs),
                        (unsigned long long) guest,
                        (unsigned long long) b->refs);
}

/* ---- Loading tables ---- */

/* Is OFF a plausible table offset: aligned, inside what was written? */
static bool
table_offset_ok (const struct qcow2 *q, uint64_t off)
{
  return off % q->cluster_size == 0 && off >= q->cluster_size
    && off + q->cluster_size <= q->hwm;
}

static struct qtable *
load_table (struct qcow2 *q, struct qcache *c, uint64_t off, const char *what)
{
  struct qtable *t = qcache_find (c, off);
  ssize_t n;

  if (t)
    return t;
  if (!table_offset_ok (q, off)) {
    qcow2_corrupt (q, "%s offset %#llx is invalid or past the end of the file",
                   what, (unsigned long long) off);
    return NULL;
  }
  if ((t = qcache_insert (c, off)) == NULL)
    return NULL;
  n = pread (q->meta_fd, t->data, q->cluster_size, (off_t) off);
  if (n < 0 || (size_t) n < q->cluster_size) {
    /* A short read is the end of a file cut short: reads as zero. */
    if (n < 0) {
      error_set (errno, "reading a %s at %#llx", what, (unsigned long long) off);
      qcache_remove (c, off);
      return NULL;
    }
    memset (t->data + n, 0, q->cluster_size - (size_t) n);
  }
  return t;
}

/* ---- L2 tables ---- */

static uint64_t
l1_index (const struct qcow2 *q, uint64_t off)
{
  return off / q->cluster_size / q->l2_entries;
}

int
qcow2_l2_get (struct qcow2 *q, uint64_t off, bool for_write, struct qtable **t)
{
  uint64_t i = l1_index (q, off), e = q->l1[i], l2off = e & QCOW2_OFFSET_MASK;

  *t = NULL;
  if (l2off == 0)
    return 0;
  if ((*t = load_table (q, &q->l2_cache, l2off, "L2 table")) == NULL)
    return -1;
  if (for_write && !(e & QCOW2_OFLAG_COPIED)) {
    /* Only an L2 table shared with a snapshot may lack COPIED, and we
     * never write images with snapshots: check, then repair the flag. */
    uint64_t rc;
    if (qcow2_refcount_get (q, l2off / q->cluster_size, &rc) == -1)
      return -1;
    if (rc != 1)
      return qcow2_corrupt (q, "L2 table at %#llx is shared (refcount %llu)",
                            (unsigned long long) l2off, (unsigned long long) rc);
    q->l1[i] = l2off | QCOW2_OFLAG_COPIED;
    q->l1_dirty = true;
  }
  return 0;
}

int
qcow2_l2_get_alloc (struct qcow2 *q, uint64_t off, struct qtable **t)
{
  uint64_t l2off;

  if (qcow2_l2_get (q, off, true, t) == -1)
    return -1;
  if (*t)
    return 0;
  uint64_t got;

  if (qcow2_alloc_clusters (q, 1, &l2off, &got) == -1)
    return -1;
  if ((*t = qcache_insert (&q->l2_cache, l2off)) == NULL)
    return -1;
  memset ((*t)->data, 0, q->cluster_size);
  qcache_mark_dirty (&q->l2_cache, *t);
  if (meta_add (q, l2off / q->cluster_size, 1, QM_L2) == -1)
    return -1;
  q->l1[l1_index (q, off)] = l2off | QCOW2_OFLAG_COPIED;
  q->l1_dirty = true;
  return 0;
}

static size_t
l2_slot (const struct qcow2 *q, uint64_t off)
{
  return (size_t) (off / q->cluster_size % q->l2_entries) * 8;
}

uint64_t
qcow2_l2_entry (const struct qcow2 *q, const struct qtable *t, uint64_t off)
{
  return t ? qcow2_be64 (t->data + l2_slot (q, off)) : 0;
}

void
qcow2_l2_set (struct qcow2 *q, struct qtable *t, uint64_t off, uint64_t entry)
{
  qcow2_put_be64 (t->data + l2_slot (q, off), entry);
  qcache_mark_dirty (&q->l2_cache, t);
}

/* ---- Refcounts ---- */

static uint64_t
rb_read (const struct qcow2 *q, const uint8_t *b, uint64_t i)
{
  uint32_t bits = q->refcount_bits;

  if (bits < 8)
    return (b[i * bits / 8] >> (i * bits % 8)) & ((1u << bits) - 1);
  b += i * (bits / 8);
  switch (bits) {
  case 8:  return b[0];
  case 16: return (uint64_t) b[0] << 8 | b[1];
  case 32: return qcow2_be32 (b);
  default: return qcow2_be64 (b);
  }
}

static void
rb_write (const struct qcow2 *q, uint8_t *b, uint64_t i, uint64_t v)
{
  uint32_t bits = q->refcount_bits;

  if (bits < 8) {
    unsigned shift = (unsigned) (i * bits % 8), mask = ((1u << bits) - 1) << shift;
    b[i * bits / 8] = (uint8_t) ((b[i * bits / 8] & ~mask) | (v << shift));
    return;
  }
  b += i * (bits / 8);
  switch (bits) {
  case 8:  b[0] = (uint8_t) v; break;
  case 16: b[0] = (uint8_t) (v >> 8); b[1] = (uint8_t) v; break;
  case 32: qcow2_put_be32 (b, (uint32_t) v); break;
  default: qcow2_put_be64 (b, v); break;
  }
}

/* Where refcount block B is (0: nowhere).  A refcount table entry's
 * offset is bits 9-63, unlike L1 and L2 entries'. */
static uint64_t
refblock_offset (const struct qcow2 *q, uint64_t b)
{
  return b < q->reftable_entries ? q->reftable[b] & QCOW2_REFT_OFFSET_MASK : 0;
}

/* The refcount block of CLUSTER, or *T NULL if it has none. */
static int
refblock_get (struct qcow2 *q, uint64_t cluster, struct qtable **t)
{
  uint64_t off = refblock_offset (q, cluster / q->refblock_entries);

  *t = NULL;
  if (off == 0)
    return 0;
  *t = load_table (q, &q->rb_cache, off, "refcount block");
  return *t ? 0 : -1;
}

int
qcow2_refcount_get (struct qcow2 *q, uint64_t cluster, uint64_t *rc)
{
  struct qtable *t;

  if (refblock_get (q, cluster, &t) == -1)
    return -1;
  *rc = t ? rb_read (q, t->data, cluster % q->refblock_entries) : 0;
  return 0;
}

/* The block must exist. */
static int
refcount_set (struct qcow2 *q, uint64_t cluster, uint64_t v)
{
  struct qtable *t;

  if (refblock_get (q, cluster, &t) == -1)
    return -1;
  if (t == NULL)
    return qcow2_corrupt (q, "no refcount block for cluster %#llx",
                          (unsigned long long) cluster);
  rb_write (q, t->data, cluster % q->refblock_entries, v);
  qcache_mark_dirty (&q->rb_cache, t);
  return 0;
}

static struct qtable *
new_refblock (struct qcow2 *q, uint64_t b, uint64_t at)
{
  struct qtable *t = qcache_insert (&q->rb_cache, at * q->cluster_size);

  if (t == NULL)
    return NULL;
  memset (t->data, 0, q->cluster_size);
  qcache_mark_dirty (&q->rb_cache, t);
  q->reftable[b] = at * q->cluster_size;
  q->reftable_dirty = true;
  if (meta_add (q, at, 1, QM_REFBLOCK) == -1)
    return NULL;
  return t;
}

static void
raise_hwm (struct qcow2 *q, uint64_t end_cluster)
{
  if (end_cluster * q->cluster_size > q->hwm)
    q->hwm = end_cluster * q->cluster_size;
}

/* Grows the refcount table to have an entry for block NEED.  The new
 * table goes past everything written, followed by the refcount blocks
 * needed to count it; the header switches to it in the next
 * write-back, and the old table is freed after that. */
static int
grow_reftable (struct qcow2 *q, uint64_t need)
{
  uint64_t per_cluster = q->cluster_size / 8, cs = q->cluster_size;
  uint64_t entries = q->reftable_entries * 2, clusters, start, k = 0, m;
  uint64_t *table, old_off = q->h.reftable_offset, old_clusters;
  size_t j;

  if (entries < need + 1)
    entries = need + 1;
  clusters = (entries + per_cluster - 1) / per_cluster;
  entries = clusters * per_cluster;
  if (clusters * cs > QCOW2_MAX_REFTABLE_BYTES)
    return error_set (ENOSPC, "the refcount table would exceed %u bytes",
                      QCOW2_MAX_REFTABLE_BYTES);
  start = (q->hwm + cs - 1) / cs;
  /* The blocks that count [start, start + clusters + k) and have no
   * refcount block yet: k of them, placed right after the table; all
   * of it past everything written, and clear of clusters reserved
   * there (tables or data an entry points at past the end of the
   * file, which must not come to life). */
  for (;;) {
    uint64_t end = start + clusters + k, hit;
    m = 0;
    for (uint64_t b = start / q->refblock_entries; b * q->refblock_entries < end; b++)
      if (refblock_offset (q, b) == 0)
        m++;
    if (m != k)
      k = m;
    else if (reserved (q, start, clusters + k, &hit))
      start = hit + 1;
    else
      break;
  }
  if ((table = calloc (entries, sizeof *table)) == NULL)
    return error_set (ENOMEM, "allocating a refcount table");
  memcpy (table, q->reftable, q->reftable_entries * sizeof *table);
  free (q->reftable);
  q->reftable = table;
  q->reftable_entries = entries;
  j = 0;
  for (uint64_t b = start / q->refblock_entries;
       b * q->refblock_entries < start + clusters + k; b++)
    if (refblock_offset (q, b) == 0
        && new_refblock (q, b, start + clusters + j++) == NULL)
      return -1;
  for (uint64_t c = start; c < start + clusters + k; c++)
    if (refcount_set (q, c, 1) == -1)
      return -1;
  raise_hwm (q, start + clusters + k);
  if (meta_add (q, start, clusters, QM_REFTABLE) == -1)
    return -1;
  /* The old table stays allocated until the header no longer points
   * at it: its clusters are freed like an unlinked cluster. */
  old_clusters = q->h.reftable_clusters;
  meta_remove (q, old_off / cs, old_clusters);
  qcow2_free_entry_range (q, old_off / cs, old_clusters, false);
  q->h.reftable_offset = start * cs;
  q->h.reftable_clusters = (uint32_t) clusters;
  q->reftable_dirty = true;
  q->header_dirty = true;
  log_info ("%s: refcount table grown to %llu clusters",
            q->file->path, (unsigned long long) clusters);
  return 0;
}

/* Creates the refcount block for block B inside the range it counts
 * (all of which is free, having no refcounts), counting itself. */
static int
create_refblock (struct qcow2 *q, uint64_t b)
{
  uint64_t first = b * q->refblock_entries, at = first, hit;

  if (b >= q->reftable_entries && grow_reftable (q, b) == -1)
    return -1;
  if (refblock_offset (q, b))
    return 0;                   /* the growth made it */
  while (reserved (q, at, 1, &hit))
    at++;
  if (at >= first + q->refblock_entries)
    return qcow2_corrupt (q, "no room for a refcount block");
  if (new_refblock (q, b, at) == NULL || refcount_set (q, at, 1) == -1)
    return -1;
  raise_hwm (q, at + 1);
  return 0;
}

static int
cluster_free (struct qcow2 *q, uint64_t c, bool *is_free)
{
  uint64_t rc;

  if (qcow2_refcount_get (q, c, &rc) == -1)
    return -1;
  uint64_t hit;

  /* A bad cluster may have refcount 0 and still hold a guest's data. */
  *is_free = rc == 0 && !reserved (q, c, 1, &hit);
  return 0;
}

/* The first free cluster at or after the hint.  Past the high-water
 * mark everything is free, so this ends. */
static int
find_free (struct qcow2 *q, uint64_t *c)
{
  for (uint64_t i = q->free_hint;; i++) {
    bool is_free;
    if (cluster_free (q, i, &is_free) == -1)
      return -1;
    if (is_free) {
      *c = q->free_hint = i;
      return 0;
    }
  }
}

static bool
has_refblock (const struct qcow2 *q, uint64_t c)
{
  uint64_t b = c / q->refblock_entries;
  return refblock_offset (q, b) != 0;
}

/* Allocates up to N contiguous clusters, refcount 1 each: *OFF the
 * first one's offset, *GOT how many (at least one).  A run stops at a
 * cluster in use or in a block that has no refcount block yet (the
 * new block would sit at its start anyway). */
int
qcow2_alloc_clusters (struct qcow2 *q, uint64_t n, uint64_t *off,
                      uint64_t *got)
{
  uint64_t start, len = 1;

  for (;;) {
    if (find_free (q, &start) == -1)
      return -1;
    if (has_refblock (q, start))
      break;
    if (create_refblock (q, start / q->refblock_entries) == -1)
      return -1;
  }
  while (len < n) {
    bool is_free;
    if (!has_refblock (q, start + len)
        || cluster_free (q, start + len, &is_free) == -1 || !is_free)
      break;
    len++;
  }
  for (uint64_t c = start; c < start + len; c++)
    if (refcount_set (q, c, 1) == -1)
      return -1;
  raise_hwm (q, start + len);
  q->free_hint = start + len;
  *off = start * q->cluster_size;
  *got = len;
  return 0;
}

/* ---- Freeing ---- */

void
qcow2_free_entry_range (struct qcow2 *q, uint64_t cluster, uint64_t n,
                        bool punch)
{
  if (q->frees_nr == q->frees_cap) {
    size_t cap = q->frees_cap ? q->frees_cap * 2 : 64;
    struct qfree *f = realloc (q->frees, cap * sizeof *f);
    if (f == NULL) {
      /* Out of memory: the clusters leak, which is safe. */
      log_warn ("%s: leaking %llu clusters (out of memory)", q->file->path,
                (unsigned long long) n);
      return;
    }
    q->frees = f;
    q->frees_cap = cap;
  }
  q->frees[q->frees_nr++] = (struct qfree) { cluster, n, punch };
}

void
qcow2_free_entry (struct qcow2 *q, uint64_t entry)
{
  uint64_t cs = q->cluster_size;

  if (entry & QCOW2_OFLAG_COMPRESSED) {
    uint64_t start, end;
    qcow2_compressed_range (q, entry, &start, &end);
    qcow2_free_entry_range (q, start / cs, (end - 1) / cs - start / cs + 1,
                            false);
  }
  else if (entry & QCOW2_OFFSET_MASK) {
    uint64_t c = (entry & QCOW2_OFFSET_MASK) / cs, rc = 0;
    /* The only reference (COPIED): its data can go at once when the
     * free takes effect. */
    qcow2_free_entry_range (q, c, 1, (entry & QCOW2_OFLAG_COPIED)
                            && qcow2_refcount_get (q, c, &rc) == 0 && rc == 1);
  }
}

void
qcow2_compressed_range (const struct qcow2 *q, uint64_t entry,
                        uint64_t *start, uint64_t *end)
{
  unsigned x = 62 - (q->h.cluster_bits - 8);
  uint64_t coff = entry & ((1ull << x) - 1);
  uint64_t nsec = (entry & ((1ull << 62) - 1)) >> x;

  *start = coff;
  *end = (coff & ~511ull) + (nsec + 1) * 512;
}

/* Runs after a write-back made the unlinks stable. */
static void
apply_frees (struct qcow2 *q, const struct qfree *f, size_t nr)
{
  for (size_t i = 0; i < nr; i++)
    for (uint64_t c = f[i].cluster; c < f[i].cluster + f[i].n; c++) {
      uint64_t rc;
      if (qcow2_refcount_get (q, c, &rc) == -1 || rc == 0) {
        log_warn ("%s: freeing cluster %#llx with refcount 0",
                  q->file->path, (unsigned long long) c);
        continue;
      }
      if (refcount_set (q, c, rc - 1) == 0 && rc == 1 && c < q->free_hint)
        q->free_hint = c;
    }
}

/* ---- Write-back ---- */

/* The write-back goes in phases, each synced before the next, so that
 * nothing on disk ever points at something not yet on disk. */
enum { WB_REFBLOCKS, WB_REFTABLE, WB_HEADER, WB_L2, WB_L1, WB_PHASES };

struct wb_item {
  uint64_t off;
  uint8_t *buf;
  size_t len;
};

struct qwriteback {
  struct ioq_op op;
  struct qcow2 *q;
  int fd;
  struct wb_item *items[WB_PHASES];
  size_t nr[WB_PHASES], cap[WB_PHASES];
  struct qfree *frees;
  size_t frees_nr;
  uint32_t cluster_size;
  uint64_t extend_to;           /* ftruncate first, when the file is shorter */
  bool l1, reftable, header;    /* restored on failure */
  /* Closing the image must not free it under a running write-back:
   * it waits for the worker, completes the write-back itself, and
   * leaves the struct to wb_done (the orphan). */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool worker_done, orphan;
  ssize_t result;
};

static int
wb_add (struct qwriteback *wb, int phase, uint64_t off, const void *src,
        size_t len)
{
  struct wb_item *it;

  if (wb->nr[phase] == wb->cap[phase]) {
    size_t cap = wb->cap[phase] ? wb->cap[phase] * 2 : 16;
    struct wb_item *n = realloc (wb->items[phase], cap * sizeof *n);
    if (n == NULL)
      return error_set (ENOMEM, "allocating a write-back");
    wb->items[phase] = n;
    wb->cap[phase] = cap;
  }
  it = &wb->items[phase][wb->nr[phase]];
  if ((it->buf = malloc (len)) == NULL)
    return error_set (ENOMEM, "allocating a write-back");
  memcpy (it->buf, src, len);
  it->off = off;
  it->len = len;
  wb->nr[phase]++;
  return 0;
}

static void
wb_free (struct qwriteback *wb)
{
  for (int p = 0; p < WB_PHASES; p++) {
    for (size_t i = 0; i < wb->nr[p]; i++)
      free (wb->items[p][i].buf);
    free (wb->items[p]);
  }
  free (wb->frees);
  pthread_mutex_destroy (&wb->lock);
  pthread_cond_destroy (&wb->cond);
  free (wb);
}

/* Metadata writes are checked too (QEMU checks them against every
 * other structure): the LEN bytes at OFF must be clusters the
 * metadata set holds as KIND, or a bookkeeping bug would write one
 * structure over another. */
static int
meta_owns (struct qcow2 *q, uint64_t off, uint64_t len, enum qmeta_kind kind)
{
  uint64_t cs = q->cluster_size;

  for (uint64_t c = off / cs; c * cs < off + len; c++) {
    size_t i = meta_search (q, c);
    if (i == q->meta_nr || q->meta[i] != meta_key (c, kind))
      return qcow2_corrupt (q, "the %s at %#llx to be written back is not "
                            "where the metadata set has it",
                            meta_names[kind], (unsigned long long) (c * cs));
  }
  return 0;
}

struct snap {
  struct qwriteback *wb;
  struct qcow2 *q;
  struct qcache *c;
  enum qmeta_kind kind;
  int phase, err;
};

static void
snap_table (struct qtable *t, void *opaque)
{
  struct snap *s = opaque;

  if (s->err || meta_owns (s->q, t->offset, s->c->table_size, s->kind) == -1
      || wb_add (s->wb, s->phase, t->offset, t->data,
                 s->c->table_size) == -1) {
    s->err = -1;
    return;
  }
  /* Pinned until written: evicting it now would let a reload read
   * the stale copy on disk. */
  t->wb++;
  t->dirty = false;
  s->c->nr_dirty--;
}

static void
be64_table (uint8_t *dst, const uint64_t *src, uint64_t n)
{
  for (uint64_t i = 0; i < n; i++)
    qcow2_put_be64 (dst + i * 8, src[i]);
}

static int
snap_array (struct qwriteback *wb, int phase, uint64_t off,
            const uint64_t *a, uint64_t n, size_t bytes)
{
  uint8_t *b = calloc (1, bytes);
  int r;

  if (b == NULL)
    return error_set (ENOMEM, "allocating a write-back");
  be64_table (b, a, n);
  r = wb_add (wb, phase, off, b, bytes);
  free (b);
  return r;
}

static int
snap_small (struct qcow2 *q, struct qwriteback *wb)
{
  if (q->reftable_dirty) {
    if (meta_owns (q, q->h.reftable_offset,
                   (uint64_t) q->h.reftable_clusters * q->cluster_size,
                   QM_REFTABLE) == -1
        || snap_array (wb, WB_REFTABLE, q->h.reftable_offset, q->reftable,
                       q->reftable_entries,
                       (size_t) q->h.reftable_clusters * q->cluster_size) == -1)
      return -1;
    wb->reftable = true;
    q->reftable_dirty = false;
  }
  if (q->header_dirty) {
    uint8_t h[12];
    qcow2_put_be64 (h, q->h.reftable_offset);
    qcow2_put_be32 (h + 8, q->h.reftable_clusters);
    if (wb_add (wb, WB_HEADER, QCOW2_HDR_REFTABLE, h, sizeof h) == -1)
      return -1;
    wb->header = true;
    q->header_dirty = false;
  }
  if (q->l1_dirty) {
    if (meta_owns (q, q->h.l1_offset, (uint64_t) q->h.l1_size * 8, QM_L1) == -1
        || snap_array (wb, WB_L1, q->h.l1_offset, q->l1, q->h.l1_size,
                       (size_t) q->h.l1_size * 8) == -1)
      return -1;
    wb->l1 = true;
    q->l1_dirty = false;
  }
  return 0;
}

static void unpin (struct qcow2 *q, struct qwriteback *wb, bool redirty);

/* Takes a consistent picture of everything dirty, on the loop thread,
 * so the worker can write it while requests go on. */
static struct qwriteback *
wb_snapshot (struct qcow2 *q)
{
  struct qwriteback *wb = calloc (1, sizeof *wb);
  struct snap s = { .wb = wb, .q = q };

  if (wb == NULL) {
    error_set (ENOMEM, "allocating a write-back");
    return NULL;
  }
  wb->q = q;
  pthread_mutex_init (&wb->lock, NULL);
  pthread_cond_init (&wb->cond, NULL);
  wb->fd = q->meta_fd;
  wb->cluster_size = q->cluster_size;
  s.c = &q->rb_cache;
  s.kind = QM_REFBLOCK;
  s.phase = WB_REFBLOCKS;
  qcache_for_each_dirty (&q->rb_cache, snap_table, &s);
  s.c = &q->l2_cache;
  s.kind = QM_L2;
  s.phase = WB_L2;
  if (s.err == 0)
    qcache_for_each_dirty (&q->l2_cache, snap_table, &s);
  if (s.err || snap_small (q, wb) == -1) {
    unpin (q, wb, true);
    wb_free (wb);
    return NULL;
  }
  wb->frees = q->frees;
  wb->frees_nr = q->frees_nr;
  q->frees = NULL;
  q->frees_nr = q->frees_cap = 0;
  if (q->hwm > q->file_size)
    wb->extend_to = q->hwm;
  return wb;
}

static int
write_all (int fd, const struct wb_item *it)
{
  size_t done = 0;

  while (done < it->len) {
    ssize_t n = pwrite (fd, it->buf + done, it->len - done,
                        (off_t) (it->off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 ? -errno : -ENOSPC;
    done += (size_t) n;
  }
  return 0;
}

static ssize_t wb_write (struct qwriteback *wb);

/* Runs on a worker thread (or inline at close). */
static ssize_t
wb_work (struct ioq_op *op)
{
  struct qwriteback *wb = op->opaque;
  ssize_t r = wb_write (wb);

  pthread_mutex_lock (&wb->lock);
  wb->result = r;
  wb->worker_done = true;
  pthread_cond_signal (&wb->cond);
  pthread_mutex_unlock (&wb->lock);
  return r;
}

static ssize_t
wb_write (struct qwriteback *wb)
{
  bool synced = false;

  /* Clusters allocated but written only in part may end past the end
   * of the file; qemu-img check wants every cluster inside it.  Never
   * ftruncate: data writes past EXTEND_TO may be landing right now,
   * and a truncate would cut them off.  Allocating the last byte only
   * ever grows the file. */
  if (wb->extend_to)
    (void) fallocate (wb->fd, 0, (off_t) wb->extend_to - 1, 1);
  for (int p = 0; p < WB_PHASES; p++) {
    if (wb->nr[p] == 0)
      continue;
    for (size_t i = 0; i < wb->nr[p]; i++) {
      int r = write_all (wb->fd, &wb->items[p][i]);
      if (r < 0)
        return r;
    }
    if (fdatasync (wb->fd) == -1)
      return -errno;
    synced = true;
  }
  if (!synced && fdatasync (wb->fd) == -1)
    return -errno;
  /* The unlinks are stable: the freed clusters' data can go.  Only a
   * courtesy to the file system, so failures do not matter. */
  for (size_t i = 0; i < wb->frees_nr; i++)
    if (wb->frees[i].punch)
      (void) fallocate (wb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        (off_t) (wb->frees[i].cluster * wb->cluster_size),
                        (off_t) (wb->frees[i].n * wb->cluster_size));
  return 0;
}

static void
unpin_phase (struct qcache *c, struct qwriteback *wb, int phase, bool redirty)
{
  for (size_t i = 0; i < wb->nr[phase]; i++) {
    struct qtable *t = qcache_find (c, wb->items[phase][i].off);
    if (t == NULL)
      continue;
    t->wb--;
    if (redirty)
      qcache_mark_dirty (c, t);
  }
}

static void
unpin (struct qcow2 *q, struct qwriteback *wb, bool redirty)
{
  unpin_phase (&q->rb_cache, wb, WB_REFBLOCKS, redirty);
  unpin_phase (&q->l2_cache, wb, WB_L2, redirty);
  if (redirty) {
    q->l1_dirty |= wb->l1;
    q->reftable_dirty |= wb->reftable;
    q->header_dirty |= wb->header;
  }
}

/* A failed write-back keeps everything dirty and the frees pending. */
static void
wb_restore (struct qcow2 *q, struct qwriteback *wb)
{
  unpin (q, wb, true);
  for (size_t i = 0; i < wb->frees_nr; i++)
    qcow2_free_entry_range (q, wb->frees[i].cluster, wb->frees[i].n,
                            wb->frees[i].punch);
}

static void
finish_waiters (struct list *l, int err)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, l) {
    struct qflush_waiter *w = list_entry (pos, struct qflush_waiter, node);
    list_del (&w->node);
    w->done (w, err);
  }
}

static int
wb_complete (struct qcow2 *q, struct qwriteback *wb, ssize_t res)
{
  if (res < 0) {
    log_err ("%s: writing qcow2 metadata: %s", q->file->path,
             strerror ((int) -res));
    wb_restore (q, wb);
  }
  else {
    unpin (q, wb, false);
    apply_frees (q, wb->frees, wb->frees_nr);
    if (wb->extend_to > q->file_size)
      q->file_size = wb->extend_to;
  }
  if (!wb->orphan)
    wb_free (wb);
  return res < 0 ? (int) -res : 0;
}

static void splice_tail (struct list *dst, struct list *src);

static void
wb_done (struct ioq_op *op, ssize_t res)
{
  struct qwriteback *wb = op->opaque;
  struct qcow2 *q = wb->q;
  struct list done;
  int err;

  if (wb->orphan) {             /* the image is gone: see qcow2_writeback_sync */
    wb_free (wb);
    return;
  }
  err = wb_complete (q, wb, res);
  q->wb_running = NULL;
  list_init (&done);
  splice_tail (&done, &q->flush_now);
  qcow2_writeback_kick (q);
  /* Last: a waiter's callback may close the image. */
  finish_waiters (&done, err);
}

bool
qcow2_writeback_wanted (const struct qcow2 *q)
{
  return q->l2_cache.nr_dirty + q->rb_cache.nr_dirty
    > (q->l2_cache.max + q->rb_cache.max) / 4
    || q->frees_nr > 4096;
}

static void
splice_tail (struct list *dst, struct list *src)
{
  while (!list_empty (src)) {
    struct list *n = src->next;
    list_del (n);
    list_add_tail (dst, n);
  }
}

void
qcow2_writeback_kick (struct qcow2 *q)
{
  struct qwriteback *wb;

  if (q->wb_running || (list_empty (&q->flush_next)
                        && !qcow2_writeback_wanted (q)))
    return;
  splice_tail (&q->flush_now, &q->flush_next);
  if ((wb = wb_snapshot (q)) == NULL) {
    log_err ("%s: %s", q->file->path, error_get ());
    finish_waiters (&q->flush_now, error_errno ());
    return;
  }
  q->wb_running = wb;
  wb->op.opaque = wb;
  wb->op.done = wb_done;
  ioq_work (q->file->ioq, &wb->op, wb_work);
}

void
qcow2_writeback_wait (struct qcow2 *q, struct qflush_waiter *w)
{
  list_add_tail (&q->flush_next, &w->node);
  qcow2_writeback_kick (q);
}

int
qcow2_writeback_sync (struct qcow2 *q)
{
  struct qwriteback *running = q->wb_running;

  if (running) {
    pthread_mutex_lock (&running->lock);
    while (!running->worker_done)
      pthread_cond_wait (&running->cond, &running->lock);
    pthread_mutex_unlock (&running->lock);
    running->orphan = true;
    q->wb_running = NULL;
    wb_complete (q, running, running->result);
    finish_waiters (&q->flush_now, 0);
  }
  /* Twice: the frees applied by the first dirty refcount blocks. */
  for (int round = 0; round < 2; round++) {
    struct qwriteback *wb = wb_snapshot (q);
    int err;
    if (wb == NULL)
      return -1;
    wb->op.opaque = wb;
    if ((err = wb_complete (q, wb, wb_write (wb))) != 0)
      return error_set (err, "%s: writing qcow2 metadata", q->file->path);
  }
  return 0;
}

/* ---- Open and close ---- */

static int
read_array (struct qcow2 *q, uint64_t off, uint64_t n, uint64_t **out)
{
  uint8_t *b = malloc (n * 8 + 1);
  uint64_t *a = calloc (n + 1, sizeof *a);
  ssize_t r;

  if (a == NULL || b == NULL) {
    free (a);
    free (b);
    return error_set (ENOMEM, "allocating a qcow2 table");
  }
  r = n ? pread (q->meta_fd, b, n * 8, (off_t) off) : 0;
  if (r < 0 || (uint64_t) r != n * 8) {
    free (a);
    free (b);
    return error_set (r < 0 ? errno : EIO, "reading a qcow2 table at %#llx",
                      (unsigned long long) off);
  }
  for (uint64_t i = 0; i < n; i++)
    a[i] = qcow2_be64 (b + i * 8);
  free (b);
  *out = a;
  return 0;
}

/* ---- The metadata layout, checked at open ---- */

/* The largest bitmap directory QEMU writes. */
#define BITMAP_DIR_MAX (64u << 20)

struct layout_item {
  uint64_t key;                 /* meta_key () */
  uint64_t index;               /* of the L1 or refcount table entry */
};

struct layout {
  struct layout_item *v;
  size_t nr, cap;
};

static int
layout_add (struct layout *l, uint64_t cluster, uint64_t n, enum qmeta_kind k,
            uint64_t index)
{
  for (uint64_t c = cluster; c < cluster + n; c++) {
    if (l->nr == l->cap) {
      size_t cap = l->cap ? l->cap * 2 : 256;
      struct layout_item *v = realloc (l->v, cap * sizeof *v);
      if (v == NULL)
        return error_set (ENOMEM, "allocating the metadata set");
      l->v = v;
      l->cap = cap;
    }
    l->v[l->nr++] = (struct layout_item) { meta_key (c, k), index };
  }
  return 0;
}

static int
item_cmp (const void *a, const void *b)
{
  const struct layout_item *x = a, *y = b;

  if (x->key != y->key)
    return x->key < y->key ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

static void
describe (char *buf, size_t len, const struct layout_item *it)
{
  enum qmeta_kind k = (enum qmeta_kind) (it->key & 7);

  if (k == QM_L2)
    snprintf (buf, len, "the L2 table of L1 entry %llu",
              (unsigned long long) it->index);
  else if (k == QM_REFBLOCK)
    snprintf (buf, len, "the refcount block of refcount table entry %llu",
              (unsigned long long) it->index);
  else
    snprintf (buf, len, "the %s", meta_names[k]);
}

/* Every metadata cluster the header, L1 and the refcount table name.
 * Unaligned table offsets are left out: the request that needs such a
 * table refuses it (load_table).  Aligned ones past the end of the
 * file are in: the request that needs one refuses it while it lies
 * past the end, and the allocator must never fill that cluster, or a
 * table made of guest data would come to life there. */
static int
layout_collect (struct qcow2 *q, struct layout *l)
{
  uint64_t cs = q->cluster_size, bo = q->h.bitmap_dir_offset;
  uint64_t bn = q->h.bitmap_dir_size;

  if (layout_add (l, 0, 1, QM_HEADER, 0) == -1
      || layout_add (l, q->h.l1_offset / cs, q->l1_clusters, QM_L1, 0) == -1
      || layout_add (l, q->h.reftable_offset / cs, q->h.reftable_clusters,
                     QM_REFTABLE, 0) == -1)
    return -1;
  if (bn && bn <= BITMAP_DIR_MAX && bo % cs == 0 && bo <= QCOW2_OFFSET_MASK
      && layout_add (l, bo / cs, (bn + cs - 1) / cs, QM_BITMAP_DIR, 0) == -1)
    return -1;
  for (uint64_t i = 0; i < q->h.l1_size; i++) {
    uint64_t off = q->l1[i] & QCOW2_OFFSET_MASK;
    if (off % cs == 0 && off >= cs
        && layout_add (l, off / cs, 1, QM_L2, i) == -1)
      return -1;
  }
  for (uint64_t i = 0; i < q->reftable_entries; i++) {
    uint64_t off = refblock_offset (q, i);
    if (off % cs == 0 && off >= cs
        && layout_add (l, off / cs, 1, QM_REFBLOCK, i) == -1)
      return -1;
  }
  return 0;
}

/* Builds the metadata set.  Two structures in one cluster mean that
 * writing one destroys the other: a writable open is refused, naming
 * both (and the file left as it is); a read-only one warns. */
static int
layout_check (struct qcow2 *q, bool writable)
{
  struct layout l = { NULL, 0, 0 };
  bool warned = false;

  if (layout_collect (q, &l) == -1) {
    free (l.v);
    return -1;
  }
  qsort (l.v, l.nr, sizeof *l.v, item_cmp);
  if ((q->meta = malloc ((l.nr + 1) * sizeof *q->meta)) == NULL) {
    free (l.v);
    return error_set (ENOMEM, "allocating the metadata set");
  }
  q->meta_cap = l.nr + 1;
  for (size_t i = 0; i < l.nr; i++) {
    char a[96], b[96];
    if (q->meta_nr == 0
        || key_cluster (q->meta[q->meta_nr - 1]) != key_cluster (l.v[i].key)) {
      q->meta[q->meta_nr++] = l.v[i].key;
      continue;
    }
    if (warned)
      continue;
    describe (a, sizeof a, &l.v[i - 1]);
    describe (b, sizeof b, &l.v[i]);
    if (writable) {
      error_set (EIO, "%s: qcow2 metadata is corrupt: %s and %s overlap at "
                 "%#llx; writing would destroy one with the other (repair "
                 "with 'qemu-img check -r all', or open read-only)",
                 q->file->path, a, b,
                 (unsigned long long) (key_cluster (l.v[i].key) * q->cluster_size));
      free (l.v);
      return -1;
    }
    log_warn ("%s: qcow2 metadata is corrupt: %s and %s overlap at %#llx "
              "(read-only: served as it is)", q->file->path, a, b,
              (unsigned long long) (key_cluster (l.v[i].key) * q->cluster_size));
    warned = true;
  }
  free (l.v);
  return 0;
}

/* ---- The reference scan (writable opens) ---- */

/* Beyond this many clusters in the file (three bitmaps of 128 MiB)
 * the scan is skipped, with a warning. */
#define SCAN_MAX_CLUSTERS (1ull << 30)

struct refscan {
  uint64_t nclusters;
  uint64_t *seen, *copied;      /* bitmaps over the file's clusters */
  uint64_t *meta;               /* the metadata set as a bitmap: O(1) */
  uint64_t *again;              /* clusters seen again, one per reference */
  size_t again_nr, again_cap;
  uint64_t *beyond;             /* clusters referenced past the end */
  size_t beyond_nr, beyond_cap;
};

static bool
bit_get (const uint64_t *b, uint64_t i)
{
  return b[i / 64] >> (i % 64) & 1;
}

static void
bit_set (uint64_t *b, uint64_t i)
{
  b[i / 64] |= 1ull << (i % 64);
}

static int
push (uint64_t **v, size_t *nr, size_t *cap, uint64_t c)
{
  if (*nr == *cap) {
    size_t n = *cap ? *cap * 2 : 64;
    uint64_t *a = realloc (*v, n * sizeof *a);
    if (a == NULL)
      return error_set (ENOMEM, "scanning the L2 tables");
    *v = a;
    *cap = n;
  }
  (*v)[(*nr)++] = c;
  return 0;
}

/* One reference to cluster C.  Past the end of the file, it is bad
 * whatever the refcounts say: the allocator must never fill C, or
 * the entry would map someone else's data. */
static int
scan_ref (struct refscan *s, uint64_t c, bool copied)
{
  if (c >= s->nclusters)
    return push (&s->beyond, &s->beyond_nr, &s->beyond_cap, c);
  if (copied)
    bit_set (s->copied, c);
  if (!bit_get (s->seen, c)) {
    bit_set (s->seen, c);
    return 0;
  }
  return push (&s->again, &s->again_nr, &s->again_cap, c);
}

/* Counts what one L2 entry references.  Entries that are invalid or
 * overlap metadata are left to the request that meets them
 * (map_cluster refuses them). */
static int
scan_entry (struct qcow2 *q, struct refscan *s, uint64_t e)
{
  uint64_t cs = q->cluster_size, host = e & QCOW2_OFFSET_MASK;

  if (e & QCOW2_OFLAG_COMPRESSED) {
    uint64_t start, end;
    qcow2_compressed_range (q, e, &start, &end);
    if (start < cs)
      return 0;
    for (uint64_t c = start / cs; c <= (end - 1) / cs && c < s->nclusters; c++)
      if (bit_get (s->meta, c))
        return 0;
    for (uint64_t c = start / cs; c <= (end - 1) / cs; c++)
      if (scan_ref (s, c, false) == -1)
        return -1;
    return 0;
  }
  if (host == 0 || host % cs
      || (host / cs < s->nclusters && bit_get (s->meta, host / cs)))
    return 0;
  return scan_ref (s, host / cs, e & QCOW2_OFLAG_COPIED);
}

static int
scan_l2_tables (struct qcow2 *q, struct refscan *s)
{
  for (uint64_t i = 0; i < q->h.l1_size; i++) {
    uint64_t off = q->l1[i] & QCOW2_OFFSET_MASK;
    struct qtable *t;
    if (off == 0 || !table_offset_ok (q, off))
      continue;
    if ((t = load_table (q, &q->l2_cache, off, "L2 table")) == NULL)
      return -1;
    for (uint32_t j = 0; j < q->l2_entries; j++)
      if (scan_entry (q, s, qcow2_be64 (t->data + (size_t) j * 8)) == -1)
        return -1;
  }
  return 0;
}

static int
u64_cmp (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

static int
badref_add (struct qcow2 *q, uint64_t c, uint64_t refs, uint64_t rc,
            bool copied, bool past_end, size_t *cap)
{
  if (q->badrefs_nr == *cap) {
    size_t n = *cap ? *cap * 2 : 16;
    struct qbadref *b = realloc (q->badrefs, n * sizeof *b);
    if (b == NULL)
      return error_set (ENOMEM, "recording a bad cluster");
    q->badrefs = b;
    *cap = n;
  }
  q->badrefs[q->badrefs_nr++] = (struct qbadref) { c, refs, rc, copied,
                                                    past_end };
  return 0;
}

/* The refcount block of cluster C, into *T, unless *T already is it.
 * NULL when there is none, or none that can be read (an invalid
 * offset): nothing then vouches for the references, whose refcounts
 * count as 0 (a write in place needs no refcount, and must not go
 * ahead just because the refcount cannot be read). */
static int
scan_refblock (struct qcow2 *q, uint64_t c, uint64_t *cur,
               struct qtable **t)
{
  uint64_t b = c / q->refblock_entries, off;

  if (b == *cur)
    return 0;
  off = refblock_offset (q, b);
  *cur = b;
  *t = NULL;
  if (off == 0 || !table_offset_ok (q, off))
    return 0;
  return refblock_get (q, c, t);
}

/* Compares the references with the refcounts, in cluster order (so
 * refcount blocks are read once each); records the bad ones. */
static int
scan_refcounts (struct qcow2 *q, struct refscan *s)
{
  size_t a = 0, cap = 0;
  uint64_t cur = UINT64_MAX;
  struct qtable *t = NULL;

  if (s->again_nr)
    qsort (s->again, s->again_nr, sizeof *s->again, u64_cmp);
  for (uint64_t w = 0; w < (s->nclusters + 63) / 64; w++) {
    uint64_t bits = s->seen[w];
    while (bits) {
      uint64_t c = w * 64 + (uint64_t) __builtin_ctzll (bits), refs = 1, rc;
      bits &= bits - 1;
      while (a < s->again_nr && s->again[a] < c)
        a++;
      for (; a < s->again_nr && s->again[a] == c; a++)
        refs++;
      if (scan_refblock (q, c, &cur, &t) == -1)
        return -1;
      rc = t ? rb_read (q, t->data, c % q->refblock_entries) : 0;
      if ((refs > rc || (refs > 1 && bit_get (s->copied, c)))
          && badref_add (q, c, refs, rc, bit_get (s->copied, c), false,
                         &cap) == -1)
        return -1;
    }
  }
  /* Then those past the end (all after the others, so still sorted). */
  if (s->beyond_nr)
    qsort (s->beyond, s->beyond_nr, sizeof *s->beyond, u64_cmp);
  for (size_t i = 0, j; i < s->beyond_nr; i = j) {
    for (j = i; j < s->beyond_nr && s->beyond[j] == s->beyond[i]; j++)
      ;
    if (badref_add (q, s->beyond[i], j - i, 0, false, true, &cap) == -1)
      return -1;
  }
  return 0;
}

/* Finds the data clusters that more entries reference than their
 * refcount allows (the design is at the top of the file). */
static int
refscan (struct qcow2 *q)
{
  struct refscan s = { .nclusters = q->hwm / q->cluster_size };
  size_t words = (size_t) ((s.nclusters + 63) / 64);
  int r = -1;

  if (s.nclusters > SCAN_MAX_CLUSTERS) {
    log_warn ("%s: %llu clusters: too many to check for clusters shared "
              "beyond their refcount", q->file->path,
              (unsigned long long) s.nclusters);
    return 0;
  }
  s.seen = calloc (words + 1, sizeof *s.seen);
  s.copied = calloc (words + 1, sizeof *s.copied);
  s.meta = calloc (words + 1, sizeof *s.meta);
  if (s.seen == NULL || s.copied == NULL || s.meta == NULL)
    error_set (ENOMEM, "allocating the reference scan");
  else {
    for (size_t i = 0; i < q->meta_nr; i++)
      if (key_cluster (q->meta[i]) < s.nclusters)
        bit_set (s.meta, key_cluster (q->meta[i]));
    if (scan_l2_tables (q, &s) == 0 && scan_refcounts (q, &s) == 0)
      r = 0;
  }
  if (r == 0 && q->badrefs_nr)
    log_warn ("%s: %zu host clusters are referenced beyond what their "
              "refcounts allow (shared, or past the end of the file): "
              "writing or freeing them will mark the image corrupt "
              "(repair with 'qemu-img check -r all')", q->file->path,
              q->badrefs_nr);
  free (s.seen);
  free (s.copied);
  free (s.meta);
  free (s.again);
  free (s.beyond);
  return r;
}

/* Enough L2 cache for the whole disk up to 32 MiB of tables. */
static unsigned
l2_cache_tables (const struct qcow2 *q)
{
  uint64_t need = q->h.l1_size, max = (32u << 20) / q->cluster_size;

  if (need > max)
    need = max;
  return need < 16 ? 16 : (unsigned) need;
}

int
qcow2_meta_open (struct qcow2 *q, bool writable)
{
  uint64_t cs = q->cluster_size;

  q->l1_clusters = (uint32_t) (((uint64_t) q->h.l1_size * 8 + cs - 1) / cs);
  q->reftable_entries = (uint64_t) q->h.reftable_clusters * cs / 8;
  q->refcount_bits = 1u << q->h.refcount_order;
  q->refblock_entries = (uint32_t) (cs * 8 / q->refcount_bits);
  q->hwm = (q->file_size + cs - 1) / cs * cs;
  if (read_array (q, q->h.l1_offset, q->h.l1_size, &q->l1) == -1
      || read_array (q, q->h.reftable_offset, q->reftable_entries,
                     &q->reftable) == -1
      || layout_check (q, writable) == -1
      || qcache_init (&q->l2_cache, l2_cache_tables (q), cs) == -1
      || qcache_init (&q->rb_cache, 64, cs) == -1
      || (writable && refscan (q) == -1))
    return -1;
  return 0;
}

void
qcow2_meta_close (struct qcow2 *q)
{
  qcache_free (&q->l2_cache);
  qcache_free (&q->rb_cache);
  free (q->l1);
  free (q->reftable);
  free (q->meta);
  free (q->badrefs);
  free (q->frees);
}
