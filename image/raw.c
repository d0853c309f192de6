/* SPDX-License-Identifier: MIT */
/* Raw images: a regular file or a block device, read and written with
 * libaio and O_DIRECT.
 *
 * Alignment.  O_DIRECT needs offsets and lengths aligned to the
 * device's direct-I/O alignment (statx STATX_DIOALIGN, BLKSSZGET for a
 * block device, 4096 when unknown).  A read that is not aligned reads
 * the aligned span into a bounce buffer.  A write that is not aligned
 * is a read-modify-write of its first and last blocks, and two writes
 * sharing a block must then not run at once, or one would write back
 * the other's block with stale bytes.  So every write-like request
 * (write, trim, zero) is tracked while in flight; an unaligned one is
 * "serialising": it waits until no in-flight request overlaps its
 * aligned span, and later requests overlapping it wait for it (QEMU's
 * serialising requests, the same idea).  Aligned requests never wait
 * unless a serialising one is in their way.
 *
 * Page cache.  With cache=writeback, or as a fallback when O_DIRECT is
 * refused (tmpfs) or the file size is not a multiple of the alignment
 * (a direct write of the last block would grow the file; logged), the
 * image is opened without O_DIRECT.  Reads and writes are first tried
 * on the loop thread with RWF_NOWAIT, which succeeds only when no
 * blocking is needed (a cache hit, room for dirty pages); the rest
 * runs on ioq's worker threads.
 *
 * Allocation.  base:allocation comes from SEEK_DATA/SEEK_HOLE.  A file
 * whose blocks cover its whole size at open is "fully allocated" and
 * skips the lseek calls until the first TRIM or ZERO punches a hole.
 *
 * Locks.  The descriptor carries QEMU-compatible image locks (lock.h)
 * from open to close: one writer per image, whoever it is.
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/log.h"
#include "image.h"
#include "lock.h"

#define DEFAULT_ALIGN 4096u
#define ZERO_CHUNK (1u << 20)

struct raw {
  int fd;
  struct image_lock lock;
  bool fully_allocated;
  bool no_nowait_read;          /* the kernel refused RWF_NOWAIT */
  bool no_nowait_write;
  struct list inflight;         /* tracked write-like requests */
  struct list waiting;          /* tracked requests not yet started */
  unsigned nr_serialising;
};

static struct raw *
raw_of (struct image *img)
{
  return img->priv;
}

static uint64_t
round_down (uint64_t v, uint32_t a)
{
  return v - v % a;
}

static uint64_t
round_up (uint64_t v, uint32_t a)
{
  return round_down (v + a - 1, a);
}

static bool
is_aligned (const struct image *img, uint64_t offset, uint64_t count)
{
  return offset % img->align == 0 && count % img->align == 0;
}

static void
finish (struct image_io *io, int err)
{
  if (io->bounce) {
    bufpool_put (io->bounce, io->bounce_size);
    io->bounce = NULL;
  }
  io->done (io, err);
}

/* ---- Tracking of write-like requests ---- */

static bool
overlaps (const struct image_io *a, const struct image_io *b)
{
  return a->lo < b->hi && b->lo < a->hi;
}

static bool
can_start (struct raw *r, struct image_io *io)
{
  struct list *pos, *tmp;

  if (r->nr_serialising == 0 && !io->serialising)
    return true;
  list_for_each_safe (pos, tmp, &r->inflight) {
    struct image_io *o = list_entry (pos, struct image_io, node);
    if ((io->serialising || o->serialising) && overlaps (io, o))
      return false;
  }
  return true;
}

/* Waiting requests that overlap IO go first, in order. */
static bool
blocked_by_waiter (struct raw *r, struct image_io *io)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &r->waiting) {
    struct image_io *o = list_entry (pos, struct image_io, node);
    if (o == io)
      return false;
    if (overlaps (io, o))
      return true;
  }
  return false;
}

static void start_tracked (struct image *img, struct image_io *io);

static void
track (struct image *img, struct image_io *io, bool serialising)
{
  struct raw *r = raw_of (img);

  io->serialising = serialising;
  if (!list_empty (&r->waiting) && blocked_by_waiter (r, io)) {
    io->waiting = true;
    list_add_tail (&r->waiting, &io->node);
    return;
  }
  if (!can_start (r, io)) {
    io->waiting = true;
    list_add_tail (&r->waiting, &io->node);
    return;
  }
  io->waiting = false;
  if (serialising)
    r->nr_serialising++;
  list_add_tail (&r->inflight, &io->node);
  start_tracked (img, io);
}

static void
untrack (struct image *img, struct image_io *io)
{
  struct raw *r = raw_of (img);
  struct list *pos, *tmp;

  list_del (&io->node);
  if (io->serialising)
    r->nr_serialising--;
  /* Start what this request held back. */
  list_for_each_safe (pos, tmp, &r->waiting) {
    struct image_io *w = list_entry (pos, struct image_io, node);
    if (blocked_by_waiter (r, w) || !can_start (r, w))
      continue;
    list_del (&w->node);
    w->waiting = false;
    if (w->serialising)
      r->nr_serialising++;
    list_add_tail (&r->inflight, &w->node);
    start_tracked (img, w);
  }
}

static void
finish_tracked (struct image_io *io, int err)
{
  untrack (io->img, io);
  finish (io, err);
}

/* ---- Reads ---- */

static void
read_done (struct ioq_op *op, ssize_t res)
{
  struct image_io *io = op->opaque;
  size_t want = io->bounce ? io->hi - io->lo : io->count;
  uint8_t *dst = io->bounce ? io->bounce : io->buf;

  if (res < 0) {
    finish (io, (int) -res);
    return;
  }
  /* Bytes read before (a partial RWF_NOWAIT read) count too.  Only the
   * end of the file reads short: the rest reads as zero. */
  res += (ssize_t) io->done_bytes;
  if ((size_t) res < want)
    memset (dst + res, 0, want - (size_t) res);
  if (io->bounce)
    memcpy (io->buf, (uint8_t *) io->bounce + (io->offset - io->lo), io->count);
  finish (io, 0);
}

/* Page-cache images: data already cached is copied on the loop thread
 * at once (RWF_NOWAIT never blocks); only a miss pays for a trip to a
 * worker thread.  Returns the bytes read, 0 when nothing was cached. */
static size_t
read_nowait (struct image *img, struct image_io *io)
{
  struct raw *r = raw_of (img);
  struct iovec iov = { io->buf, io->count };
  ssize_t n;

  if (img->direct || r->no_nowait_read)
    return 0;
  n = preadv2 (r->fd, &iov, 1, (off_t) io->offset, RWF_NOWAIT);
  if (n == -1 && errno == EOPNOTSUPP)
    r->no_nowait_read = true;
  return n > 0 ? (size_t) n : 0;
}

static void
complete_now (void *opaque)
{
  struct image_io *io = opaque;
  io->done (io, 0);
}

static int raw_extents_sync (struct image *img, uint64_t offset,
                             uint64_t count, struct image_extents *e);

static void
raw_read (struct image *img, struct image_io *io)
{
  struct raw *r = raw_of (img);

  if ((io->flags & IMAGE_SPARSE) && !r->fully_allocated
      && raw_extents_sync (img, io->offset, io->count, io->extents) == -1) {
    image_io_complete_later (io, errno);
    return;
  }
  io->bounce = NULL;
  io->done_bytes = read_nowait (img, io);
  if (io->done_bytes == io->count) {
    memset (&io->later, 0, sizeof io->later);
    loop_defer (ioq_loop (img->ioq), &io->later, complete_now, io);
    return;
  }
  io->op.opaque = io;
  io->op.done = read_done;
  io->op.use_thread = !img->direct;
  if (is_aligned (img, io->offset, io->count)) {
    ioq_pread (img->ioq, &io->op, r->fd, (uint8_t *) io->buf + io->done_bytes,
               io->count - io->done_bytes, io->offset + io->done_bytes);
    return;
  }
  io->lo = round_down (io->offset, img->align);
  io->hi = round_up (io->offset + io->count, img->align);
  io->bounce_size = io->hi - io->lo;
  io->bounce = bufpool_get (io->bounce_size);
  if (io->bounce == NULL) {
    image_io_complete_later (io, ENOMEM);
    return;
  }
  ioq_pread (img->ioq, &io->op, r->fd, io->bounce, io->bounce_size, io->lo);
}

/* ---- Writes ---- */

static void write_step (struct image_io *io);

static void
write_done (struct ioq_op *op, ssize_t res)
{
  struct image_io *io = op->opaque;
  size_t total = io->bounce ? io->hi - io->lo : io->count;

  if (res < 0) {
    finish_tracked (io, (int) -res);
    return;
  }
  if (res == 0) {
    finish_tracked (io, ENOSPC);
    return;
  }
  io->done_bytes += (uint64_t) res;
  if (io->done_bytes < total) {
    /* A short write: the rest goes again (it may then fail with the
     * real reason, ENOSPC). */
    write_step (io);
    return;
  }
  finish_tracked (io, 0);
}

static void
finish_later_cb (void *opaque)
{
  struct image_io *io = opaque;
  finish_tracked (io, 0);
}

/* Page-cache images: a write that fits in the cache without waiting
 * (RWF_NOWAIT) is done on the loop thread; FUA writes and the rest of
 * a partial one go to a worker. */
static bool
write_nowait (struct image *img, struct image_io *io, const uint8_t *src,
              size_t len, uint64_t start)
{
  struct raw *r = raw_of (img);
  struct iovec iov = { (void *) src, len };
  ssize_t n;

  if (img->direct || r->no_nowait_write || (io->flags & IMAGE_FUA))
    return false;
  n = pwritev2 (r->fd, &iov, 1, (off_t) start, RWF_NOWAIT);
  if (n == -1 && errno == EOPNOTSUPP)
    r->no_nowait_write = true;
  if (n <= 0)
    return false;
  io->done_bytes += (uint64_t) n;
  if ((size_t) n < len)
    return false;
  memset (&io->later, 0, sizeof io->later);
  loop_defer (ioq_loop (img->ioq), &io->later, finish_later_cb, io);
  return true;
}

static void
write_step (struct image_io *io)
{
  struct image *img = io->img;
  const uint8_t *src = io->bounce ? io->bounce : io->buf;
  uint64_t start = io->bounce ? io->lo : io->offset;
  size_t total = io->bounce ? io->hi - io->lo : io->count;
  int flags = (io->flags & IMAGE_FUA) ? RWF_DSYNC : 0;

  if (io->done_bytes == 0
      && write_nowait (img, io, src, total, start))
    return;
  io->op.opaque = io;
  io->op.done = write_done;
  io->op.use_thread = !img->direct;
  ioq_pwrite (img->ioq, &io->op, raw_of (img)->fd, src + io->done_bytes,
              total - io->done_bytes, start + io->done_bytes, flags);
}

/* Read-modify-write: the first and last blocks of the span are read,
 * then the new bytes are laid over them. */
static void rmw_read_tail (struct image_io *io);

static void
rmw_merge (struct image_io *io)
{
  memcpy ((uint8_t *) io->bounce + (io->offset - io->lo), io->buf, io->count);
  io->done_bytes = 0;
  write_step (io);
}

/* A block read short is past the end of the file (a qcow2 file grows
 * as it is written): it reads as zero. */
static void
rmw_fill (struct image_io *io, uint64_t block, ssize_t res)
{
  uint32_t a = io->img->align;

  if ((size_t) res < a)
    memset ((uint8_t *) io->bounce + (block - io->lo) + res, 0, a - (size_t) res);
}

static void
rmw_tail_done (struct ioq_op *op, ssize_t res)
{
  struct image_io *io = op->opaque;

  if (res < 0) {
    finish_tracked (io, (int) -res);
    return;
  }
  rmw_fill (io, io->hi - io->img->align, res);
  rmw_merge (io);
}

static void
rmw_head_done (struct ioq_op *op, ssize_t res)
{
  struct image_io *io = op->opaque;

  if (res < 0) {
    finish_tracked (io, (int) -res);
    return;
  }
  rmw_fill (io, io->lo, res);
  rmw_read_tail (io);
}

static void
rmw_read_tail (struct image_io *io)
{
  struct image *img = io->img;
  uint32_t a = img->align;

  /* The tail block needs reading if the write ends inside it and it
   * is not the head block, already read. */
  if ((io->offset + io->count) % a == 0
      || (io->hi - io->lo == a && io->offset % a != 0)) {
    rmw_merge (io);
    return;
  }
  io->op.opaque = io;
  io->op.done = rmw_tail_done;
  io->op.use_thread = !img->direct;
  ioq_pread (img->ioq, &io->op, raw_of (img)->fd,
             (uint8_t *) io->bounce + (io->hi - a - io->lo), a, io->hi - a);
}

static void
rmw_start (struct image_io *io)
{
  struct image *img = io->img;

  io->bounce_size = io->hi - io->lo;
  io->bounce = bufpool_get (io->bounce_size);
  if (io->bounce == NULL) {
    finish_tracked (io, ENOMEM);
    return;
  }
  if (io->offset % img->align == 0) {
    rmw_read_tail (io);
    return;
  }
  io->op.opaque = io;
  io->op.done = rmw_head_done;
  io->op.use_thread = !img->direct;
  ioq_pread (img->ioq, &io->op, raw_of (img)->fd, io->bounce, img->align,
             io->lo);
}

static void
raw_write (struct image *img, struct image_io *io)
{
  bool aligned = is_aligned (img, io->offset, io->count);

  io->bounce = NULL;
  io->done_bytes = 0;
  io->lo = round_down (io->offset, img->align);
  io->hi = round_up (io->offset + io->count, img->align);
  track (img, io, !aligned);
}

/* ---- Flush and cache ---- */

static void
flush_done (struct ioq_op *op, ssize_t res)
{
  struct image_io *io = op->opaque;
  finish (io, res < 0 ? (int) -res : 0);
}

static void
raw_flush (struct image *img, struct image_io *io)
{
  io->bounce = NULL;
  io->op.opaque = io;
  io->op.done = flush_done;
  io->op.use_thread = !img->direct;
  ioq_fsync (img->ioq, &io->op, raw_of (img)->fd);
}

static void
raw_cache (struct image *img, struct image_io *io)
{
  /* With O_DIRECT there is no cache of ours to fill; buffered images
   * ask the kernel to read ahead.  Either way the reply is success:
   * CACHE is advisory. */
  if (!img->direct)
    posix_fadvise (raw_of (img)->fd, (off_t) io->offset, (off_t) io->count,
                   POSIX_FADV_WILLNEED);
  image_io_complete_later (io, 0);
}

/* ---- Trim and zero: fallocate on a worker thread ---- */

static int
punch (int fd, uint64_t offset, uint64_t count)
{
  return fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    (off_t) offset, (off_t) count);
}

static bool
unsupported (int err)
{
  return err == EOPNOTSUPP || err == ENOSYS || err == EINVAL;
}

/* Writes zeroes the slow way: aligned chunks, with read-modify-write
 * of partial blocks at the edges (the request is serialising). */
static int
write_zeroes_blocking (struct image *img, uint64_t offset, uint64_t count)
{
  int fd = raw_of (img)->fd;
  uint32_t a = img->align;
  size_t bufsize = ZERO_CHUNK;
  int ret = 0;
  void *buf;

  if (posix_memalign (&buf, BUFPOOL_ALIGN, bufsize) != 0)
    return -ENOMEM;
  while (count > 0 && ret == 0) {
    uint64_t lo = round_down (offset, a);
    uint64_t n;

    memset (buf, 0, bufsize);
    if (offset != lo || count < a) {
      /* A partial block. */
      n = a - (offset - lo);
      if (n > count)
        n = count;
      if (pread (fd, buf, a, (off_t) lo) < 0)
        ret = -errno;
      memset ((uint8_t *) buf + (offset - lo), 0, n);
      if (ret == 0 && pwrite (fd, buf, a, (off_t) lo) != (ssize_t) a)
        ret = errno ? -errno : -EIO;
    }
    else {
      n = round_down (count < bufsize ? count : bufsize, a);
      if (pwrite (fd, buf, n, (off_t) offset) != (ssize_t) n)
        ret = errno ? -errno : -EIO;
    }
    offset += n;
    count -= n;
  }
  free (buf);
  return ret;
}

/* Zeroes with fallocate if the kernel can do it without writing.
 * Returns 0, -errno, or 1 when only writing zeroes would do. */
static int
zero_fast (struct image *img, struct image_io *io)
{
  int fd = raw_of (img)->fd;
  bool may_trim = io->flags & IMAGE_MAY_TRIM;
  off_t off = (off_t) io->offset, len = (off_t) io->count;

  if (img->is_blockdev) {
    /* PUNCH_HOLE on a block device zeroes without a slow fallback;
     * ZERO_RANGE may fall back to writing, so it is not "fast". */
    if (may_trim && punch (fd, io->offset, io->count) == 0)
      return 0;
    if (io->flags & IMAGE_FAST_ZERO)
      return -ENOTSUP;
    if (fallocate (fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
      return 0;
    return unsupported (errno) ? 1 : -errno;
  }
  if (may_trim) {
    if (punch (fd, io->offset, io->count) == 0)
      return 0;
    if (!unsupported (errno))
      return -errno;
  }
  if (fallocate (fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
    return 0;
  if (!unsupported (errno))
    return -errno;
  /* tmpfs: a hole, then allocated (zeroed) blocks in its place. */
  if (punch (fd, io->offset, io->count) == 0
      && fallocate (fd, FALLOC_FL_KEEP_SIZE, off, len) == 0)
    return 0;
  return 1;
}

static ssize_t
zero_work (struct ioq_op *op)
{
  struct image_io *io = op->opaque;
  struct image *img = io->img;
  int r = zero_fast (img, io);

  if (r == 1) {
    if (io->flags & IMAGE_FAST_ZERO)
      return -ENOTSUP;
    r = write_zeroes_blocking (img, io->offset, io->count);
  }
  if (r == 0 && (io->flags & IMAGE_FUA) && fdatasync (raw_of (img)->fd) == -1)
    r = -errno;
  return r;
}

static ssize_t
trim_work (struct ioq_op *op)
{
  struct image_io *io = op->opaque;
  struct image *img = io->img;
  int fd = raw_of (img)->fd;
  uint64_t off = io->offset, end = io->offset + io->count;

  /* TRIM is advisory: a block device only discards whole blocks, and
   * a file system that cannot punch holes simply keeps the data. */
  if (img->is_blockdev) {
    off = round_up (off, img->align);
    end = round_down (end, img->align);
  }
  if (end > off) {
    if (punch (fd, off, end - off) == -1 && !unsupported (errno))
      return -errno;
  }
  if ((io->flags & IMAGE_FUA) && fdatasync (fd) == -1)
    return -errno;
  return 0;
}

static void
work_done (struct ioq_op *op, ssize_t res)
{
  struct image_io *io = op->opaque;
  finish_tracked (io, res < 0 ? (int) -res : 0);
}

/* Runs on the loop thread, which alone reads fully_allocated: a
 * request that may punch a hole clears it before the worker runs. */
static void
may_punch (struct image *img)
{
  raw_of (img)->fully_allocated = false;
}

static void
raw_trim (struct image *img, struct image_io *io)
{
  may_punch (img);
  io->bounce = NULL;
  io->lo = round_down (io->offset, img->align);
  io->hi = round_up (io->offset + io->count, img->align);
  track (img, io, false);
}

static void
raw_zero (struct image *img, struct image_io *io)
{
  may_punch (img);              /* ZERO_RANGE may leave unwritten extents */
  io->bounce = NULL;
  io->lo = round_down (io->offset, img->align);
  io->hi = round_up (io->offset + io->count, img->align);
  /* Partial blocks are zeroed through the page cache by the file
   * system, or by our own read-modify-write: serialise them. */
  track (img, io, !is_aligned (img, io->offset, io->count));
}

static void
start_tracked (struct image *img, struct image_io *io)
{
  switch (io->cmd) {
  case IMAGE_WRITE:
    if (io->serialising)
      rmw_start (io);
    else
      write_step (io);
    break;
  case IMAGE_TRIM:
  case IMAGE_ZERO:
    io->op.opaque = io;
    io->op.done = work_done;
    ioq_work (img->ioq, &io->op,
              io->cmd == IMAGE_TRIM ? trim_work : zero_work);
    break;
  default:
    assert (!"untracked command");
  }
}

/* ---- Block status ---- */

static int
raw_extents_sync (struct image *img, uint64_t offset, uint64_t count,
                  struct image_extents *e)
{
  struct raw *r = raw_of (img);
  int fd = r->fd;
  uint64_t pos = offset, end = offset + count;

  if (img->is_blockdev || r->fully_allocated)
    return image_extents_add (e, offset, count, 0);
  while (pos < end) {
    off_t data = lseek (fd, (off_t) pos, SEEK_DATA), hole;
    int full;

    if (data == -1 && errno != ENXIO)
      return image_extents_add (e, pos, end - pos, 0);
    if (data == -1 || (uint64_t) data >= end)
      return image_extents_add (e, pos, end - pos,
                                IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO);
    full = image_extents_add (e, pos, (uint64_t) data - pos,
                              IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO);
    if (full)
      return full;
    pos = (uint64_t) data;
    hole = lseek (fd, (off_t) pos, SEEK_HOLE);
    if (hole == -1 || (uint64_t) hole > end)
      hole = (off_t) end;
    full = image_extents_add (e, pos, (uint64_t) hole - pos, 0);
    if (full)
      return full;
    pos = (uint64_t) hole;
  }
  return 0;
}

static void
raw_extents (struct image *img, struct image_io *io)
{
  int r = raw_extents_sync (img, io->offset, io->count, io->extents);
  image_io_complete_later (io, r == -1 ? errno : 0);
}

/* ---- Open and close ---- */

static void
raw_close (struct image *img)
{
  struct raw *r = raw_of (img);

  image_lock_release (&r->lock);
  if (r->fd >= 0)
    close (r->fd);
  free (r);
  free (img->path);
  free (img);
}

static const struct image_ops raw_ops = {
  .name = "raw",
  .close = raw_close,
  .read = raw_read,
  .write = raw_write,
  .flush = raw_flush,
  .trim = raw_trim,
  .zero = raw_zero,
  .cache = raw_cache,
  .extents = raw_extents,
  .extents_sync = raw_extents_sync,
};

static uint32_t
file_dio_align (int fd)
{
#ifdef STATX_DIOALIGN
  struct statx stx;

  if (statx (fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0
      && (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align > 0) {
    uint32_t a = stx.stx_dio_offset_align;
    /* Our buffers are page aligned; memory alignment needs no more. */
    return a < 512 ? 512 : a;
  }
#endif
  return DEFAULT_ALIGN;
}

static int
open_fd (struct image *img, bool direct)
{
  int flags = (img->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;

  return open (img->path, flags | (direct ? O_DIRECT : 0));
}

/* Size, alignment and allocation of what R->fd refers to. */
static int
probe_fd (struct image *img, struct raw *r)
{
  struct stat st;

  if (fstat (r->fd, &st) == -1)
    return error_set (errno, "%s: fstat", img->path);
  image_file_id_from_stat (&st, &img->file_id);
  if (S_ISBLK (st.st_mode)) {
    int ssz = 512;
    img->is_blockdev = true;
    if (ioctl (r->fd, BLKGETSIZE64, &img->size) == -1)
      return error_set (errno, "%s: BLKGETSIZE64", img->path);
    if (ioctl (r->fd, BLKSSZGET, &ssz) == -1)
      ssz = 512;
    img->align = img->direct ? (uint32_t) ssz : 1;
    return 0;
  }
  if (!S_ISREG (st.st_mode))
    return error_set (EINVAL, "%s: not a regular file or block device",
                      img->path);
  img->size = (uint64_t) st.st_size;
  img->align = img->direct ? file_dio_align (r->fd) : 1;
  r->fully_allocated = (uint64_t) st.st_blocks * 512 >= img->size;
  return 0;
}

/* On the descriptor the image keeps (after any reopen without
 * O_DIRECT): a qcow2 image's file grows as clusters are allocated. */
static int
lock (struct image *img, struct raw *r, bool child)
{
  unsigned perm, unshared;

  image_lock_perms (img->readonly, child, &perm, &unshared);
  return image_lock_acquire (&r->lock, r->fd, img->path, perm, unshared);
}

/* CHILD: the file under a qcow2 image.  It grows as clusters are
 * allocated, so an odd size (compressed clusters end anywhere) does
 * not turn O_DIRECT off; but O_DIRECT is off when clusters (MAX_ALIGN)
 * are smaller than a page or than the direct-I/O block: the metadata
 * goes through the page cache, and a direct write into a page that
 * also holds metadata cannot invalidate it (the kernel reports
 * "collision with buffered I/O" and fails the next fsync). */
static struct image *
open_common (const char *path, bool readonly, enum image_cache cache,
             struct ioq *ioq, bool child, uint32_t max_align)
{
  struct image *img = calloc (1, sizeof *img);
  struct raw *r = calloc (1, sizeof *r);
  bool fallback;

  if (img == NULL || r == NULL || (img->path = strdup (path)) == NULL) {
    error_set (ENOMEM, "allocating an image");
    goto err;
  }
  img->ops = &raw_ops;
  img->format = IMAGE_FORMAT_RAW;
  img->readonly = readonly;
  img->ioq = ioq;
  img->priv = r;
  list_init (&r->inflight);
  list_init (&r->waiting);

  img->cache = cache;
  img->direct = cache == IMAGE_CACHE_NONE;
  r->fd = open_fd (img, img->direct);
  if (r->fd == -1 && errno == EINVAL && img->direct) {
    log_info ("%s: O_DIRECT refused by the file system (tmpfs?); "
              "using buffered I/O", path);
    img->direct = false;
    r->fd = open_fd (img, false);
  }
  if (r->fd == -1) {
    error_set (errno, "%s", path);
    goto err;
  }
  if (probe_fd (img, r) == -1)
    goto err;
  fallback = child
    ? img->align > max_align || max_align < (uint32_t) sysconf (_SC_PAGESIZE)
    : img->size % img->align != 0;
  if (img->direct && fallback) {
    if (child)
      log_info ("%s: qcow2 clusters of %u bytes are smaller than a page or "
                "the direct I/O alignment %u; using buffered I/O", path,
                max_align, img->align);
    else
      log_info ("%s: size %llu is not a multiple of the direct I/O "
                "alignment %u; using buffered I/O", path,
                (unsigned long long) img->size, img->align);
    close (r->fd);
    img->direct = false;
    img->align = 1;
    r->fd = open_fd (img, false);
    if (r->fd == -1) {
      error_set (errno, "%s", path);
      goto err;
    }
  }
  if (child)
    r->fully_allocated = true;  /* no block status asked of it */
  if (lock (img, r, child) == -1)
    goto err;
  return img;

 err:
  if (r && r->fd > 0)
    close (r->fd);
  free (r);
  if (img)
    free (img->path);
  free (img);
  return NULL;
}

struct image *
raw_open (const char *path, bool readonly, enum image_cache cache,
          struct ioq *ioq)
{
  return open_common (path, readonly, cache, ioq, false, 0);
}

struct image *
raw_open_file (const char *path, bool readonly, enum image_cache cache,
               struct ioq *ioq, uint32_t max_align)
{
  return open_common (path, readonly, cache, ioq, true, max_align);
}
