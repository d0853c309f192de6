/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_IMAGE_QCOW2_H
#define MIRRORD_IMAGE_QCOW2_H

/* qcow2, private to image/qcow2*.c.  The format is QEMU's
 * docs/interop/qcow2.txt; this driver implements it from the spec.
 *
 * Layering.  The qcow2 file itself is opened as a raw image (the
 * "file" child, O_DIRECT through libaio): guest data moves through it
 * asynchronously.  Metadata (header, L1, refcount table, L2 tables,
 * refcount blocks) is read and written through a second, buffered
 * descriptor: tables are read on a cache miss, on the loop thread
 * (rare: one 64 KiB L2 table maps 512 MiB), and written back by a
 * worker thread (qcow2-meta.c).
 *
 * Crash safety.  On disk, a cluster is always referenced by at most
 * as many L2/L1/table entries as its refcount says, so a crash can
 * leak clusters but never corrupt the image:
 *   - allocation raises the refcount in memory first, the data is
 *     written, then the L2 entry is set in memory;
 *   - write-back writes refcount blocks, syncs, then the refcount
 *     table and L2 tables, syncs, then L1 entries, syncs;
 *   - freeing unlinks (L2 entry) first; the refcount drops only after
 *     a write-back made the unlink stable, so a freed cluster is never
 *     reused while a stale reference to it may still be on disk.
 * In-memory refcounts therefore never fall below the on-disk
 * references, and refcount blocks may be written at any time.
 *
 * Overlap checks.  No guest data is ever written over metadata, and no
 * cluster is written in place or freed while a reference that its
 * refcount does not count lives on: the metadata set, the layout check
 * at open, the run-time checks and the reference scan are described at
 * the top of qcow2-meta.c.
 */

#include <stdbool.h>
#include <stdint.h>

#include "common/list.h"
#include "image.h"

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_BACKING_NAME 1023

#define QCOW2_INCOMPAT_DIRTY      (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT    (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE  (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2      (1ull << 4)

#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull       /* L1, L2 */
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull  /* refcount table */
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       1ull

/* Header field offsets the driver rewrites in place. */
#define QCOW2_HDR_REFTABLE 48   /* offset (8) + clusters (4) */
#define QCOW2_HDR_INCOMPAT 72
#define QCOW2_HDR_AUTOCLEAR 88

/* The header and its extensions, parsed and validated. */
struct qcow2_header {
  uint32_t version;
  uint32_t cluster_bits;
  uint64_t size;
  uint32_t crypt_method;
  uint32_t l1_size;
  uint64_t l1_offset;
  uint64_t reftable_offset;
  uint32_t reftable_clusters;
  uint32_t nb_snapshots;
  uint64_t incompatible, compatible, autoclear;
  uint32_t refcount_order;
  uint32_t header_length;
  uint8_t compression_type;
  char backing_file[QCOW2_MAX_BACKING_NAME + 1];   /* "" if none */
  char backing_format[32];                         /* "" if not given */
  bool has_crypto_ext, has_data_file_ext, has_bitmaps_ext;
  uint64_t bitmap_dir_offset, bitmap_dir_size;     /* 0 if none */
  /* Names of incompatible features from the feature name table. */
  char incompat_names[64][47];
};

/* Parses the first cluster of a qcow2 file (BUF, LEN bytes; FILE_SIZE
 * the file's length) into H.  Checks structure only: every offset and
 * size in range and aligned.  Returns 0, or -1 with error_set(). */
int qcow2_header_parse (const uint8_t *buf, size_t len, uint64_t file_size,
                        struct qcow2_header *h);

/* Refuses, naming it, any feature this driver does not implement
 * ("unsupported qcow2 feature: NAME"); some only for WRITABLE opens.
 * Returns 0, or -1 with error_set (ENOTSUP, ...). */
int qcow2_header_check_features (const struct qcow2_header *h, bool writable);

/* ---- Table cache (qcow2-cache.c) ---- */

/* A cluster-sized metadata table (an L2 table or a refcount block),
 * cached by its offset in the file. */
struct qtable {
  uint64_t offset;
  uint8_t *data;
  bool dirty;
  unsigned wb;                  /* in a write-back in progress */
  uint64_t used;                /* LRU clock */
  struct qtable *hnext;
};

struct qcache {
  struct qtable **buckets;
  unsigned nbuckets;
  unsigned nr, max;             /* max is soft: dirty tables stay */
  unsigned nr_dirty;
  uint64_t clock;
  size_t table_size;
};

int qcache_init (struct qcache *c, unsigned max, size_t table_size);
void qcache_free (struct qcache *c);
struct qtable *qcache_find (struct qcache *c, uint64_t offset);
/* Inserts a table for OFFSET with uninitialised data (evicting a clean,
 * unpinned one if full).  NULL with error_set() on ENOMEM. */
struct qtable *qcache_insert (struct qcache *c, uint64_t offset);
void qcache_remove (struct qcache *c, uint64_t offset);
void qcache_mark_dirty (struct qcache *c, struct qtable *t);
/* Calls FN for every dirty table. */
void qcache_for_each_dirty (struct qcache *c,
                            void (*fn) (struct qtable *t, void *opaque),
                            void *opaque);

/* ---- The driver's state ---- */

struct qwriteback;

/* What a metadata cluster holds: the overlap checks name it. */
enum qmeta_kind {
  QM_HEADER, QM_L1, QM_L2, QM_REFTABLE, QM_REFBLOCK, QM_BITMAP_DIR,
};

/* A data cluster that more L2 entries reference than its refcount
 * says, that several reference while one claims it alone (COPIED), or
 * that lay past the end of the file: writing it in place, freeing it
 * or allocating it would destroy another guest cluster's data (found
 * by the reference scan, qcow2-meta.c). */
struct qbadref {
  uint64_t cluster;
  uint64_t refs, refcount;
  bool copied;
  bool past_end;
};

struct qfree {
  uint64_t cluster, n;
  bool punch;                   /* the data can be discarded */
};

struct qcow2 {
  struct qcow2_header h;
  struct image *file;           /* the raw child: data I/O */
  struct image *backing;        /* NULL if none */
  int meta_fd;                  /* buffered: metadata I/O */
  uint32_t cluster_size;
  uint32_t l2_entries;
  uint32_t refblock_entries;
  uint32_t refcount_bits;
  uint64_t refcount_max;

  uint64_t *l1;                 /* host byte order */
  uint32_t l1_clusters;
  bool l1_dirty;
  uint64_t *reftable;           /* host byte order */
  uint64_t reftable_entries;
  bool reftable_dirty;

  struct qcache l2_cache, rb_cache;

  /* Allocation. */
  uint64_t free_hint;           /* cluster index: no free one below */
  uint64_t hwm;                 /* bytes: nothing at or past was ever written */
  uint64_t file_size;           /* bytes the file has on disk */
  uint64_t *meta;               /* sorted: cluster << 3 | enum qmeta_kind */
  size_t meta_nr, meta_cap;
  struct qbadref *badrefs;      /* sorted by cluster; usually none */
  size_t badrefs_nr;

  bool header_dirty;            /* reftable offset/clusters changed */

  /* Frees waiting for their unlink to reach the disk. */
  struct qfree *frees;
  size_t frees_nr, frees_cap;

  /* Write-back: at most one runs; flushes queue behind it. */
  struct qwriteback *wb_running;
  struct list flush_now, flush_next;   /* qreq waiting for write-back */

  /* Requests in flight and waiting for a conflicting one. */
  struct list inflight, waiting;

  /* The compressed cluster inflated last (0: none). */
  uint64_t zbuf_entry;
  uint8_t *zbuf;

  unsigned in_submit;           /* inside image_submit(): defer completions */
  bool opened;                  /* open succeeded: close writes back */
  bool corrupt;
};

/* ---- Metadata (qcow2-meta.c) ---- */

/* Marks the image corrupt (the header's corrupt bit, logged) and
 * returns -1 with error_set (EIO, WHY). */
__attribute__ ((format (printf, 2, 3)))
int qcow2_corrupt (struct qcow2 *q, const char *why, ...);

/* The L2 table of guest offset OFF: *T is NULL when unallocated. */
int qcow2_l2_get (struct qcow2 *q, uint64_t off, bool for_write,
                  struct qtable **t);
/* Like qcow2_l2_get but allocates an empty table if needed. */
int qcow2_l2_get_alloc (struct qcow2 *q, uint64_t off, struct qtable **t);
uint64_t qcow2_l2_entry (const struct qcow2 *q, const struct qtable *t,
                         uint64_t off);
void qcow2_l2_set (struct qcow2 *q, struct qtable *t, uint64_t off,
                   uint64_t entry);

int qcow2_refcount_get (struct qcow2 *q, uint64_t cluster, uint64_t *rc);
/* Allocates up to N contiguous clusters, refcount 1 each: *OFF the
 * first one's offset, *GOT how many (at least 1). */
int qcow2_alloc_clusters (struct qcow2 *q, uint64_t n, uint64_t *off,
                          uint64_t *got);
/* Queues the clusters an L2 entry (about to be replaced) referenced:
 * their refcounts drop after the next write-back. */
void qcow2_free_entry (struct qcow2 *q, uint64_t entry);
void qcow2_free_entry_range (struct qcow2 *q, uint64_t cluster, uint64_t n,
                             bool punch);
/* The bytes [*START, *END) a compressed L2 entry's data occupies. */
void qcow2_compressed_range (const struct qcow2 *q, uint64_t entry,
                             uint64_t *start, uint64_t *end);

/* Overlap checks (qcow2-meta.c, where the design is described).  Each
 * is O(log n) in the number of metadata clusters. */
/* Fails, marking the image corrupt, if [HOST, HOST+LEN) holds any
 * metadata; WHAT (e.g. "data cluster") and GUEST name the user. */
int qcow2_check_overlap (struct qcow2 *q, uint64_t host, uint64_t len,
                         const char *what, uint64_t guest);
/* Fails, marking the image corrupt, if [HOST, HOST+LEN) holds a data
 * cluster that must be neither written in place nor freed (struct
 * qbadref). */
int qcow2_check_refs (struct qcow2 *q, uint64_t host, uint64_t len,
                      uint64_t guest);

/* Reads L1 and the refcount table and checks the metadata layout:
 * on a WRITABLE open, structures that overlap refuse the open (a
 * read-only one warns), and the reference scan runs. */
int qcow2_meta_open (struct qcow2 *q, bool writable);
void qcow2_meta_close (struct qcow2 *q);
/* Starts a write-back when none runs and there is something to do or
 * a flush waits.  Completed flush requests are finished. */
void qcow2_writeback_kick (struct qcow2 *q);
/* Writes everything back now, on this thread (close). */
int qcow2_writeback_sync (struct qcow2 *q);
bool qcow2_writeback_wanted (const struct qcow2 *q);

/* Something waiting for a write-back: a FLUSH, or a FUA write that
 * allocated.  Finished after the write-back that started after it was
 * queued (so it covers everything completed before). */
struct qflush_waiter {
  struct list node;
  void (*done) (struct qflush_waiter *w, int err);
};
void qcow2_writeback_wait (struct qcow2 *q, struct qflush_waiter *w);

static inline uint64_t qcow2_be64 (const uint8_t *p)
{
  return (uint64_t) p[0] << 56 | (uint64_t) p[1] << 48 | (uint64_t) p[2] << 40
    | (uint64_t) p[3] << 32 | (uint64_t) p[4] << 24 | (uint64_t) p[5] << 16
    | (uint64_t) p[6] << 8 | p[7];
}

static inline uint32_t qcow2_be32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static inline void qcow2_put_be64 (uint8_t *p, uint64_t v)
{
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (uint8_t) v;
}

static inline void qcow2_put_be32 (uint8_t *p, uint32_t v)
{
  for (int i = 3; i >= 0; i--, v >>= 8)
    p[i] = (uint8_t) v;
}

#endif
