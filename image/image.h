/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_IMAGE_IMAGE_H
#define MIRRORD_IMAGE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "common/ioq.h"
#include "common/loop.h"

/* One interface for every image format.
 *
 * The NBD server, the dirty bitmap and the mirror see an image only
 * through image_submit(): an asynchronous request that completes by
 * calling io->done() on the loop thread, never from inside
 * image_submit().  Each format (raw.c, later qcow2.c) fills a struct
 * image_ops; image_submit() checks the contract (range, flags,
 * writability) before any driver runs, so drivers can assert it.
 *
 * Errors are positive errno values: EIO, ENOSPC, ENOTSUP (FAST_ZERO
 * that cannot be fast), EPERM.
 */

enum image_format {
  IMAGE_FORMAT_AUTO,            /* probe the header */
  IMAGE_FORMAT_RAW,
  IMAGE_FORMAT_QCOW2,
};

/* How an image uses the host's page cache (QEMU's names).
 *   none       O_DIRECT: no double caching, what VMs want (default)
 *   writeback  the page cache: reads of cached data never touch the
 *              disk; writes are stable only after FLUSH or FUA */
enum image_cache {
  IMAGE_CACHE_NONE,
  IMAGE_CACHE_WRITEBACK,
};

enum image_cmd {
  IMAGE_READ,
  IMAGE_WRITE,
  IMAGE_FLUSH,
  IMAGE_TRIM,
  IMAGE_ZERO,
  IMAGE_CACHE,
  IMAGE_EXTENTS,
};

/* Request flags. */
#define IMAGE_FUA        (1u << 0) /* WRITE, TRIM, ZERO: stable on completion */
#define IMAGE_MAY_TRIM   (1u << 1) /* ZERO: may deallocate (no NO_HOLE) */
#define IMAGE_FAST_ZERO  (1u << 2) /* ZERO: fail with ENOTSUP unless fast */
#define IMAGE_SPARSE     (1u << 3) /* READ: report holes in io->extents */
#define IMAGE_FLAGS_ALL  0xfu

/* Extent flags: the same bits as NBD's base:allocation. */
#define IMAGE_EXTENT_HOLE 1u
#define IMAGE_EXTENT_ZERO 2u

struct image_extent {
  uint64_t offset;
  uint64_t length;
  uint32_t flags;
};

/* A growable list of extents, filled by IMAGE_EXTENTS and by sparse
 * reads; contiguous from the request offset, adjacent extents with
 * equal flags merged.  At most MAX entries are kept (0 = unlimited);
 * the last extent then ends early. */
struct image_extents {
  struct image_extent *ext;
  size_t nr, cap, max;
};

int image_extents_add (struct image_extents *e, uint64_t offset,
                       uint64_t length, uint32_t flags);
void image_extents_reset (struct image_extents *e);
void image_extents_free (struct image_extents *e);

/* Which file an image is: every name of one file (symlinks, hard
 * links) or of one block device (any device node) gives the same id. */
struct image_file_id {
  dev_t dev;                    /* st_dev; a block device's st_rdev */
  ino_t ino;                    /* st_ino; 0 for a block device */
};

void image_file_id_from_stat (const struct stat *st, struct image_file_id *id);
/* -1 with error_set() when PATH cannot be stat()ed. */
int image_file_id_of (const char *path, struct image_file_id *id);
bool image_file_id_equal (const struct image_file_id *a,
                          const struct image_file_id *b);

struct image;
struct image_io;
typedef void (*image_done_fn) (struct image_io *io, int err);

struct image_io {
  /* Set by the caller. */
  enum image_cmd cmd;
  unsigned flags;
  uint64_t offset;
  uint64_t count;
  void *buf;                    /* READ/WRITE: BUFPOOL_ALIGN-aligned */
  struct image_extents *extents;  /* EXTENTS, and READ with IMAGE_SPARSE */
  image_done_fn done;
  void *opaque;

  /* Private to the image layer and its drivers. */
  struct image *img;
  int err;
  struct ioq_op op;
  struct loop_deferred later;
  struct list node;             /* driver's in-flight or wait list */
  uint64_t lo, hi;              /* driver: aligned span */
  void *bounce;
  size_t bounce_size;
  uint64_t done_bytes;
  bool serialising, waiting;
};

struct image_ops {
  const char *name;
  void (*close) (struct image *img);
  void (*read) (struct image *img, struct image_io *io);
  void (*write) (struct image *img, struct image_io *io);
  void (*flush) (struct image *img, struct image_io *io);
  void (*trim) (struct image *img, struct image_io *io);
  void (*zero) (struct image *img, struct image_io *io);
  void (*cache) (struct image *img, struct image_io *io);
  void (*extents) (struct image *img, struct image_io *io);
  /* Optional: block status at once, on the caller's thread (for a
   * qcow2 image asking its backing file).  0, 1 when E is full, -1. */
  int (*extents_sync) (struct image *img, uint64_t offset, uint64_t count,
                       struct image_extents *e);
};

struct image {
  const struct image_ops *ops;
  char *path;
  enum image_format format;
  uint64_t size;
  bool readonly;
  bool is_blockdev;
  enum image_cache cache;
  struct image_file_id file_id;
  bool direct;                  /* O_DIRECT in use */
  uint32_t align;               /* requests so aligned avoid a bounce */
  struct ioq *ioq;
  void *priv;                   /* the driver's state */
};

/* Opens PATH.  Returns NULL with error_set() on failure: a missing
 * file, a format we refuse (the message names the feature), a format
 * that does not match FORMAT, or an image locked by another user
 * (EBUSY: QEMU-compatible locks, lock.h; backing files included). */
struct image *image_open (const char *path, enum image_format format,
                          bool readonly, enum image_cache cache,
                          struct ioq *ioq);
/* All requests must have completed. */
void image_close (struct image *img);

/* Submits IO; checks its range and flags first. */
void image_submit (struct image *img, struct image_io *io);

/* Block status at once, for drivers layered on IMG: -1 (errno set) when
 * IMG's driver cannot answer synchronously; 0, or 1 when E is full. */
int image_extents_sync (struct image *img, uint64_t offset, uint64_t count,
                        struct image_extents *e);

/* For drivers: completes IO from the loop, after the caller returns. */
void image_io_complete_later (struct image_io *io, int err);

const char *image_format_name (enum image_format f);
int image_format_parse (const char *s, enum image_format *out);
const char *image_cache_name (enum image_cache c);
int image_cache_parse (const char *s, enum image_cache *out);

/* Driver entry points. */
struct image *raw_open (const char *path, bool readonly,
                        enum image_cache cache, struct ioq *ioq);
/* The file under a qcow2 image (see raw.c). */
struct image *raw_open_file (const char *path, bool readonly,
                             enum image_cache cache, struct ioq *ioq,
                             uint32_t max_align);
struct image *qcow2_open (const char *path, bool readonly,
                          enum image_cache cache, struct ioq *ioq);

#endif
