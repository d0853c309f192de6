/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "common/error.h"
#include "image.h"

static const char QCOW2_MAGIC[4] = { 'Q', 'F', 'I', '\xfb' };

const char *
image_format_name (enum image_format f)
{
  switch (f) {
  case IMAGE_FORMAT_RAW: return "raw";
  case IMAGE_FORMAT_QCOW2: return "qcow2";
  default: return "auto";
  }
}

int
image_format_parse (const char *s, enum image_format *out)
{
  if (strcmp (s, "raw") == 0)
    *out = IMAGE_FORMAT_RAW;
  else if (strcmp (s, "qcow2") == 0)
    *out = IMAGE_FORMAT_QCOW2;
  else if (strcmp (s, "auto") == 0)
    *out = IMAGE_FORMAT_AUTO;
  else
    return error_set (0, "unknown format '%s' (expected raw, qcow2 or auto)", s);
  return 0;
}

const char *
image_cache_name (enum image_cache c)
{
  return c == IMAGE_CACHE_WRITEBACK ? "writeback" : "none";
}

int
image_cache_parse (const char *s, enum image_cache *out)
{
  if (strcmp (s, "none") == 0)
    *out = IMAGE_CACHE_NONE;
  else if (strcmp (s, "writeback") == 0)
    *out = IMAGE_CACHE_WRITEBACK;
  else
    return error_set (0, "unknown cache mode '%s' (expected none or writeback)", s);
  return 0;
}

void
image_file_id_from_stat (const struct stat *st, struct image_file_id *id)
{
  if (S_ISBLK (st->st_mode)) {
    id->dev = st->st_rdev;
    id->ino = 0;
  }
  else {
    id->dev = st->st_dev;
    id->ino = st->st_ino;
  }
}

int
image_file_id_of (const char *path, struct image_file_id *id)
{
  struct stat st;

  if (stat (path, &st) == -1)
    return error_set (errno, "%s", path);
  image_file_id_from_stat (&st, id);
  return 0;
}

bool
image_file_id_equal (const struct image_file_id *a,
                     const struct image_file_id *b)
{
  return a->dev == b->dev && a->ino == b->ino;
}

/* Reads the first bytes of PATH to tell qcow2 from raw.  Only files
 * and block devices are images; O_NONBLOCK so that a FIFO cannot stall
 * the daemon in open(). */
static int
probe (const char *path, enum image_format *out)
{
  char magic[4];
  struct stat st;
  ssize_t r;
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

  if (fd == -1)
    return error_set (errno, "%s", path);
  if (fstat (fd, &st) == -1 || !(S_ISREG (st.st_mode) || S_ISBLK (st.st_mode))) {
    close (fd);
    return error_set (EINVAL, "%s: not a regular file or block device", path);
  }
  r = pread (fd, magic, sizeof magic, 0);
  close (fd);
  if (r == -1)
    return error_set (errno, "%s: reading the header", path);
  *out = r == sizeof magic && memcmp (magic, QCOW2_MAGIC, 4) == 0
    ? IMAGE_FORMAT_QCOW2 : IMAGE_FORMAT_RAW;
  return 0;
}

struct image *
image_open (const char *path, enum image_format format, bool readonly,
            enum image_cache cache, struct ioq *ioq)
{
  enum image_format found;

  if (probe (path, &found) == -1)
    return NULL;
  if (format == IMAGE_FORMAT_AUTO)
    format = found;
  else if (format == IMAGE_FORMAT_RAW && found == IMAGE_FORMAT_QCOW2) {
    /* Serving a qcow2 file as raw would hand its metadata (and the
     * backing file name) to the guest: a classic security hole. */
    error_set (0, "%s: has a qcow2 header but format=raw was given; "
               "use format=qcow2 (or auto)", path);
    return NULL;
  }
  switch (format) {
  case IMAGE_FORMAT_RAW:
    return raw_open (path, readonly, cache, ioq);
  case IMAGE_FORMAT_QCOW2:
    return qcow2_open (path, readonly, cache, ioq);
  default:
    error_set (EINVAL, "%s: unknown format", path);
    return NULL;
  }
}

void
image_close (struct image *img)
{
  if (img)
    img->ops->close (img);
}

static void
complete_now (void *opaque)
{
  struct image_io *io = opaque;
  io->done (io, io->err);
}

void
image_io_complete_later (struct image_io *io, int err)
{
  io->err = err;
  memset (&io->later, 0, sizeof io->later);
  loop_defer (ioq_loop (io->img->ioq), &io->later, complete_now, io);
}

/* The contract every driver may assume. */
static int
check (struct image *img, struct image_io *io)
{
  bool writes = io->cmd == IMAGE_WRITE || io->cmd == IMAGE_TRIM
    || io->cmd == IMAGE_ZERO;

  if (io->flags & ~IMAGE_FLAGS_ALL)
    return EINVAL;
  if (writes && img->readonly)
    return EPERM;
  if (io->cmd == IMAGE_FLUSH)
    return 0;
  if (io->offset > img->size || io->count > img->size - io->offset)
    return writes ? ENOSPC : EINVAL;
  if ((io->cmd == IMAGE_READ || io->cmd == IMAGE_WRITE) && io->buf == NULL)
    return EINVAL;
  if (io->cmd == IMAGE_EXTENTS && io->extents == NULL)
    return EINVAL;
  return 0;
}

int
image_extents_sync (struct image *img, uint64_t offset, uint64_t count,
                    struct image_extents *e)
{
  if (img->ops->extents_sync == NULL)
    return error_set (ENOTSUP, "%s: no synchronous block status", img->path);
  return img->ops->extents_sync (img, offset, count, e);
}

void
image_submit (struct image *img, struct image_io *io)
{
  int err;

  io->img = img;
  io->err = 0;
  err = check (img, io);
  if (err) {
    image_io_complete_later (io, err);
    return;
  }
  if (io->extents)
    image_extents_reset (io->extents);
  switch (io->cmd) {
  case IMAGE_READ:    img->ops->read (img, io); break;
  case IMAGE_WRITE:   img->ops->write (img, io); break;
  case IMAGE_FLUSH:   img->ops->flush (img, io); break;
  case IMAGE_TRIM:    img->ops->trim (img, io); break;
  case IMAGE_ZERO:    img->ops->zero (img, io); break;
  case IMAGE_CACHE:   img->ops->cache (img, io); break;
  case IMAGE_EXTENTS: img->ops->extents (img, io); break;
  default:
    image_io_complete_later (io, EINVAL);
  }
}

int
image_extents_add (struct image_extents *e, uint64_t offset,
                   uint64_t length, uint32_t flags)
{
  if (length == 0)
    return 0;
  if (e->nr > 0) {
    struct image_extent *last = &e->ext[e->nr - 1];
    assert (last->offset + last->length == offset);
    if (last->flags == flags) {
      last->length += length;
      return 0;
    }
  }
  if (e->max && e->nr == e->max)
    return 1;                   /* full: the caller stops */
  if (e->nr == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 16;
    struct image_extent *n = realloc (e->ext, cap * sizeof *n);
    if (n == NULL)
      return error_set (ENOMEM, "growing the extent list");
    e->ext = n;
    e->cap = cap;
  }
  e->ext[e->nr++] = (struct image_extent) { offset, length, flags };
  return 0;
}

void
image_extents_reset (struct image_extents *e)
{
  e->nr = 0;
}

void
image_extents_free (struct image_extents *e)
{
  free (e->ext);
  e->ext = NULL;
  e->nr = e->cap = 0;
}
