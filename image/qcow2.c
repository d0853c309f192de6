/* SPDX-License-Identifier: MIT */
/* qcow2 images: the request layer.
 *
 * A guest request is mapped cluster by cluster through the L1/L2
 * tables (qcow2-meta.c) into runs: data contiguous in the file (one
 * child read or write each), zeroes, backing-file ranges, compressed
 * clusters.
 *
 * Writes that only overwrite clusters the image owns alone (COPIED)
 * go straight to the file.  Anything else allocates: new clusters are
 * taken (refcount 1 in memory), the data and the copied-on-write rest
 * of the first and last clusters are written, and only then does the
 * L2 entry change; what the old entry held is freed after the next
 * write-back (see qcow2.h for why that order is crash safe).
 *
 * Requests that change the mapping (allocating writes, zero, trim)
 * are exclusive on their clusters: they wait for overlapping requests
 * in flight, and later overlapping requests wait for them, in order.
 * Plain reads and in-place writes run concurrently, as on a raw file.
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <zlib.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/log.h"
#include "qcow2.h"

#define MAX_BACKING_DEPTH 16

struct qreq;
typedef void (*qreq_cont) (struct qreq *r);

/* A run of clusters being allocated by a write. */
struct alloc_run {
  uint64_t guest;               /* first guest cluster offset */
  uint64_t n;
  uint64_t host;
  uint8_t *head, *tail;         /* copy-on-write parts, or NULL */
  uint64_t head_len, tail_len;
};

struct zrange {
  uint64_t off, len;
};

struct qreq {
  struct qcow2 *q;
  struct image_io *io;
  uint64_t lo, hi;              /* guest span, cluster aligned */
  bool exclusive;
  struct list node;             /* q->inflight or q->waiting */
  int pending;
  int err;
  qreq_cont cont;
  struct qflush_waiter fw;
  /* Writes: the range being written now (zero writes a zero buffer). */
  uint64_t w_off, w_len;
  const uint8_t *w_buf;
  uint8_t *zero_buf;
  struct alloc_run *runs;
  size_t nr_runs, cap_runs;
  qreq_cont w_then;              /* after the write's L2 updates */
  /* Zero: ranges left to write as zeroes, cluster by cluster. */
  struct zrange zr[3];
  unsigned zi;
};

/* One child (or backing) request of a qreq. */
struct qsub {
  struct image_io io;
  struct qreq *r;
  uint8_t *dst;                 /* read: where the bytes go */
  void *bounce;
  size_t bounce_size;
  uint64_t zentry;              /* compressed: the L2 entry */
  uint64_t zskip;               /* compressed: bytes to skip in the cluster */
  size_t zlen;                  /* compressed: bytes to copy out */
};

static struct qcow2 *
q_of (struct image *img)
{
  return img->priv;
}

static uint64_t
cluster_of (const struct qcow2 *q, uint64_t off)
{
  return off & ~((uint64_t) q->cluster_size - 1);
}

/* ---- Request life cycle ---- */

static void start (struct qreq *r);

static void
retry_waiting (struct qcow2 *q)
{
  struct list again;

  /* Each one either starts or goes back on q->waiting, in order. */
  list_init (&again);
  while (!list_empty (&q->waiting)) {
    struct list *n = q->waiting.next;
    list_del (n);
    list_add_tail (&again, n);
  }
  while (!list_empty (&again)) {
    struct qreq *r = list_entry (again.next, struct qreq, node);
    list_del (&r->node);
    start (r);
  }
}

static void
runs_free (struct qreq *r)
{
  for (size_t i = 0; i < r->nr_runs; i++) {
    if (r->runs[i].head)
      bufpool_put (r->runs[i].head, r->q->cluster_size);
    if (r->runs[i].tail)
      bufpool_put (r->runs[i].tail, r->q->cluster_size);
  }
  r->nr_runs = 0;
}

static void
req_free (struct qreq *r)
{
  runs_free (r);
  if (r->zero_buf)
    bufpool_put (r->zero_buf, r->q->cluster_size);
  free (r->runs);
  free (r);
}

static void
finish (struct qreq *r)
{
  struct qcow2 *q = r->q;
  struct image_io *io = r->io;
  int err = r->err;
  bool deferred = q->in_submit > 0;

  list_del (&r->node);
  req_free (r);
  qcow2_writeback_kick (q);
  retry_waiting (q);
  /* Last: the caller may close the image from its callback (the
   * daemon's final flush does). */
  if (deferred)
    image_io_complete_later (io, err);
  else
    io->done (io, err);
}

static void
fail (struct qreq *r, int err)
{
  if (r->err == 0)
    r->err = err;
}

/* Sub-operations: CONT runs when the last one completes. */
static void
sub_get (struct qreq *r)
{
  r->pending++;
}

static void
sub_put (struct qreq *r)
{
  assert (r->pending > 0);
  if (--r->pending == 0)
    r->cont (r);
}

/* ---- Mapping ---- */

enum kind { K_DATA, K_ZERO, K_BACKING, K_COMPRESSED };

struct mapping {
  enum kind kind;
  uint64_t host;                /* K_DATA: file offset of the cluster */
  uint64_t entry;
};

/* Maps the guest cluster at OFF; checks what the entry points at:
 * any host offset it holds (data, a zero cluster's preallocation, a
 * compressed cluster's bytes) must be valid and clear of metadata,
 * whatever the request does with it. */
static int
map_cluster (struct qcow2 *q, uint64_t off, struct mapping *m)
{
  struct qtable *t;
  uint64_t e, host;
  bool zero;

  if (qcow2_l2_get (q, off, false, &t) == -1)
    return -1;
  m->entry = e = qcow2_l2_entry (q, t, off);
  if (e & QCOW2_OFLAG_COMPRESSED) {
    uint64_t s, end;
    qcow2_compressed_range (q, e, &s, &end);
    if (s >= q->file_size || s < q->cluster_size)
      return qcow2_corrupt (q, "compressed cluster at %#llx past the end",
                            (unsigned long long) s);
    if (qcow2_check_overlap (q, s, end - s, "compressed cluster", off) == -1)
      return -1;
    m->kind = K_COMPRESSED;
    return 0;
  }
  host = e & QCOW2_OFFSET_MASK;
  zero = q->h.version >= 3 && (e & QCOW2_OFLAG_ZERO);
  if (host == 0) {
    /* Unallocated, COPIED or not, as QEMU reads it (only an external
     * data file, which we refuse, gives offset 0 a meaning). */
    m->kind = zero || !q->backing || off >= q->backing->size ? K_ZERO : K_BACKING;
    return 0;
  }
  if (host % q->cluster_size || host + q->cluster_size > q->hwm)
    return qcow2_corrupt (q, "%s offset %#llx invalid or past the end",
                          zero ? "zero cluster" : "data cluster",
                          (unsigned long long) host);
  if (qcow2_check_overlap (q, host, q->cluster_size,
                           zero ? "zero cluster" : "data cluster", off) == -1)
    return -1;
  m->kind = zero ? K_ZERO : K_DATA;
  m->host = host;
  return 0;
}

/* The host bytes the entry of M holds, to be written or freed. */
static void
mapping_host (const struct qcow2 *q, const struct mapping *m,
              uint64_t *host, uint64_t *len)
{
  uint64_t end;

  if (m->kind == K_COMPRESSED) {
    qcow2_compressed_range (q, m->entry, host, &end);
    *len = end - *host;
  }
  else {
    *host = m->entry & QCOW2_OFFSET_MASK;
    *len = *host ? q->cluster_size : 0;
  }
}

/* map_cluster for a request that writes the guest cluster at OFF or
 * replaces its entry (which frees what the entry held): a host
 * cluster with more references than its refcount must be neither. */
static int
map_for_change (struct qcow2 *q, uint64_t off, struct mapping *m)
{
  uint64_t host, len;

  if (map_cluster (q, off, m) == -1)
    return -1;
  mapping_host (q, m, &host, &len);
  return qcow2_check_refs (q, host, len, off);
}

/* Does the guest cluster at OFF read as zero without its own data? */
static bool
reads_zero (const struct qcow2 *q, const struct mapping *m, uint64_t off)
{
  return m->kind == K_ZERO
    || (m->kind == K_BACKING && off >= q->backing->size);
}

/* ---- Sub-requests to the file and the backing image ---- */

static void
sub_free (struct qsub *s)
{
  if (s->bounce)
    bufpool_put (s->bounce, s->bounce_size);
  free (s);
}

static int
inflate_cluster (struct qcow2 *q, const uint8_t *in, size_t in_len,
                 uint8_t *out)
{
  z_stream z = { 0 };
  int r;

  if (inflateInit2 (&z, -15) != Z_OK)
    return EIO;
  z.next_in = (uint8_t *) in;
  z.avail_in = (uInt) in_len;
  z.next_out = out;
  z.avail_out = q->cluster_size;
  r = inflate (&z, Z_FINISH);
  inflateEnd (&z);
  /* It stops when the cluster is full: the input may go on. */
  if ((r != Z_STREAM_END && r != Z_BUF_ERROR) || z.avail_out != 0)
    return EIO;
  return 0;
}

static void
sub_done (struct image_io *io, int err)
{
  struct qsub *s = io->opaque;
  struct qreq *r = s->r;
  struct qcow2 *q = r->q;

  if (err == 0 && s->zentry) {
    /* The buffer no longer holds the cluster inflated last, even if
     * this one fails half way. */
    q->zbuf_entry = 0;
    if (inflate_cluster (q, s->bounce, io->count, q->zbuf) == 0) {
      q->zbuf_entry = s->zentry;
      memcpy (s->dst, q->zbuf + s->zskip, s->zlen);
    }
    else {
      qcow2_corrupt (q, "compressed cluster at %#llx does not inflate",
                     (unsigned long long) io->offset);
      err = EIO;
    }
  }
  else if (err == 0 && io->cmd == IMAGE_READ && s->dst)
    memcpy (s->dst, s->bounce, io->count);
  if (err)
    fail (r, err);
  sub_free (s);
  sub_put (r);
}

static struct qsub *
sub_new (struct qreq *r, enum image_cmd cmd, uint64_t off, uint64_t len,
         unsigned flags)
{
  struct qsub *s = calloc (1, sizeof *s);

  if (s == NULL)
    return NULL;
  s->r = r;
  s->io.cmd = cmd;
  s->io.flags = flags;
  s->io.offset = off;
  s->io.count = len;
  s->io.done = sub_done;
  s->io.opaque = s;
  return s;
}

static int
sub_bounce (struct qsub *s, size_t len)
{
  s->bounce_size = len;
  s->bounce = bufpool_get (len);
  return s->bounce ? 0 : -1;
}

/* Submits a read or write of LEN bytes at OFF in CHILD from/to PTR.
 * Buffers handed to O_DIRECT must be aligned: others bounce. */
static void
submit_rw (struct qreq *r, struct image *child, enum image_cmd cmd,
           uint64_t off, uint8_t *ptr, size_t len, unsigned flags)
{
  struct qsub *s = sub_new (r, cmd, off, len, flags);

  if (s == NULL) {
    fail (r, ENOMEM);
    return;
  }
  if ((uintptr_t) ptr % BUFPOOL_ALIGN == 0)
    s->io.buf = ptr;
  else if (sub_bounce (s, len) == -1) {
    sub_free (s);
    fail (r, ENOMEM);
    return;
  }
  else {
    s->io.buf = s->bounce;
    if (cmd == IMAGE_WRITE)
      memcpy (s->bounce, ptr, len);
    else
      s->dst = ptr;
  }
  sub_get (r);
  image_submit (child, &s->io);
}

/* Reads LEN bytes at SKIP in the compressed cluster ENTRY into DST. */
static void
submit_compressed (struct qreq *r, uint64_t entry, uint64_t skip,
                   uint8_t *dst, size_t len)
{
  struct qcow2 *q = r->q;
  uint64_t start, end;
  struct qsub *s;

  if (q->zbuf_entry == entry) {      /* the cluster inflated last */
    memcpy (dst, q->zbuf + skip, len);
    return;
  }
  qcow2_compressed_range (q, entry, &start, &end);
  if (end > q->file_size)
    end = q->file_size;           /* the last sector may be cut short */
  if ((s = sub_new (r, IMAGE_READ, start, end - start, 0)) == NULL
      || sub_bounce (s, end - start) == -1) {
    if (s)
      sub_free (s);
    fail (r, ENOMEM);
    return;
  }
  s->io.buf = s->bounce;
  s->zentry = entry;
  s->zskip = skip;
  s->zlen = len;
  s->dst = dst;
  sub_get (r);
  image_submit (q->file, &s->io);
}

/* Reads from the backing image, zeroes past its end. */
static void
submit_backing (struct qreq *r, uint64_t off, uint8_t *dst, size_t len)
{
  struct image *b = r->q->backing;
  size_t in = off >= b->size ? 0 : (size_t) (b->size - off < len ? b->size - off : len);

  if (in < len)
    memset (dst + in, 0, len - in);
  if (in)
    submit_rw (r, b, IMAGE_READ, off, dst, in, 0);
}

/* ---- Reading ---- */

/* Issues the reads of [OFF, OFF+LEN) into BUF; with E, also records
 * which parts read as zero.  Completion through r->cont. */
static int
read_range (struct qreq *r, uint64_t off, uint64_t len, uint8_t *buf,
            struct image_extents *e)
{
  struct qcow2 *q = r->q;
  uint64_t pos = off, end = off + len;

  while (pos < end) {
    uint64_t c = cluster_of (q, pos), run_end, n;
    struct mapping m, m2;

    if (map_cluster (q, c, &m) == -1)
      return -1;
    /* Extend the run over clusters mapped alike (contiguous data). */
    run_end = c + q->cluster_size;
    while (run_end < end && m.kind != K_COMPRESSED) {
      if (map_cluster (q, run_end, &m2) == -1)
        return -1;
      if (m2.kind != m.kind
          || (m.kind == K_DATA && m2.host != m.host + (run_end - c)))
        break;
      run_end += q->cluster_size;
    }
    if (run_end > end)
      run_end = end;
    n = run_end - pos;
    if (e && image_extents_add (e, pos, n, m.kind == K_ZERO
                                ? IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO : 0) < 0)
      return -1;
    switch (m.kind) {
    case K_DATA:
      submit_rw (r, q->file, IMAGE_READ, m.host + (pos - c), buf + (pos - off),
                 n, 0);
      break;
    case K_ZERO:
      memset (buf + (pos - off), 0, n);
      break;
    case K_BACKING:
      submit_backing (r, pos, buf + (pos - off), n);
      break;
    case K_COMPRESSED:
      submit_compressed (r, m.entry, pos - c, buf + (pos - off), n);
      break;
    }
    pos = run_end;
  }
  return 0;
}

static void
read_start (struct qreq *r)
{
  struct image_io *io = r->io;

  r->cont = finish;
  sub_get (r);
  if (read_range (r, io->offset, io->count, io->buf,
                  (io->flags & IMAGE_SPARSE) ? io->extents : NULL) == -1)
    fail (r, error_errno ());
  sub_put (r);
}

/* ---- Writing ---- */

/* Can the guest cluster mapped as M be overwritten in place? */
static bool
in_place (const struct mapping *m)
{
  return m->kind == K_DATA && (m->entry & QCOW2_OFLAG_COPIED);
}

/* Does writing [OFF, OFF+LEN) need to allocate?  -1 on corruption. */
static int
needs_alloc (struct qcow2 *q, uint64_t off, uint64_t len)
{
  for (uint64_t c = cluster_of (q, off); c < off + len; c += q->cluster_size) {
    struct mapping m;
    if (map_for_change (q, c, &m) == -1)
      return -1;
    if (!in_place (&m))
      return 1;
  }
  return 0;
}

static struct alloc_run *
add_run (struct qreq *r)
{
  if (r->nr_runs == r->cap_runs) {
    size_t cap = r->cap_runs ? r->cap_runs * 2 : 4;
    struct alloc_run *n = realloc (r->runs, cap * sizeof *n);
    if (n == NULL)
      return NULL;
    r->runs = n;
    r->cap_runs = cap;
  }
  memset (&r->runs[r->nr_runs], 0, sizeof r->runs[0]);
  return &r->runs[r->nr_runs++];
}

/* Reads what the guest sees at [OFF, OFF+LEN) (inside one cluster)
 * into a new buffer, to be copied into a newly allocated cluster. */
static uint8_t *
cow_read (struct qreq *r, uint64_t off, uint64_t len)
{
  uint8_t *b = bufpool_get (r->q->cluster_size);

  if (b == NULL) {
    fail (r, ENOMEM);
    return NULL;
  }
  if (read_range (r, off, len, b, NULL) == -1)
    fail (r, error_errno ());
  return b;
}

/* Plans the copy-on-write of a run: the parts of its first and last
 * clusters the write does not cover keep what the guest saw, unless
 * that was zero and the new clusters were never written (they read
 * as zero already). */
static void
plan_cow (struct qreq *r, struct alloc_run *run, uint64_t hwm_before)
{
  struct qcow2 *q = r->q;
  uint64_t w_end = r->w_off + r->w_len, run_end = run->guest + run->n * q->cluster_size;
  bool fresh = run->host >= hwm_before;
  struct mapping m;

  if (r->w_off > run->guest) {
    if (map_cluster (q, run->guest, &m) == -1) {
      fail (r, error_errno ());
      return;
    }
    if (!(fresh && reads_zero (q, &m, run->guest))) {
      run->head_len = r->w_off - run->guest;
      run->head = cow_read (r, run->guest, run->head_len);
    }
  }
  if (w_end < run_end) {
    uint64_t last = run_end - q->cluster_size;
    if (map_cluster (q, last, &m) == -1) {
      fail (r, error_errno ());
      return;
    }
    if (!(fresh && reads_zero (q, &m, last))) {
      run->tail_len = run_end - w_end;
      run->tail = cow_read (r, w_end, run->tail_len);
    }
  }
}

/* Allocates the clusters for guest [C, C+N*cs), in as few runs of
 * contiguous clusters as the free space allows. */
static int
alloc_runs (struct qreq *r, uint64_t c, uint64_t n)
{
  struct qcow2 *q = r->q;

  while (n > 0) {
    uint64_t hwm_before = q->hwm, host, got;
    struct alloc_run *run;

    if (qcow2_alloc_clusters (q, n, &host, &got) == -1)
      return -1;
    if ((run = add_run (r)) == NULL) {
      qcow2_free_entry_range (q, host / q->cluster_size, got, false);
      return error_set (ENOMEM, "allocating a request");
    }
    run->guest = c;
    run->n = got;
    run->host = host;
    if (q->file->size < q->hwm)
      q->file->size = q->hwm;   /* the file child may now go there */
    plan_cow (r, run, hwm_before);
    c += got * q->cluster_size;
    n -= got;
  }
  return 0;
}

static void write_data (struct qreq *r);

/* Every write of guest data into the file goes through here: one last
 * overlap check before it is submitted, as QEMU's overlap-check does,
 * so that not even a bug in the allocator could write over metadata.
 * GUEST is where the bytes go in the guest (for the message). */
static void
submit_data_write (struct qreq *r, uint64_t host, const uint8_t *buf,
                   size_t len, unsigned flags, uint64_t guest)
{
  if (qcow2_check_overlap (r->q, host, len, "data write", guest) == -1) {
    fail (r, EIO);
    return;
  }
  submit_rw (r, r->q->file, IMAGE_WRITE, host, (uint8_t *) buf, len, flags);
}

/* Stage A: writes in place what can be, allocates the rest and reads
 * what must be copied into the new clusters. */
static void
write_range (struct qreq *r)
{
  struct qcow2 *q = r->q;
  uint64_t end = r->w_off + r->w_len, c = cluster_of (q, r->w_off);
  unsigned fua = r->io->flags & IMAGE_FUA;

  r->cont = write_data;
  sub_get (r);
  while (c < end && r->err == 0) {
    struct mapping m, m2;
    uint64_t run_end = c + q->cluster_size;

    if (map_for_change (q, c, &m) == -1) {
      fail (r, error_errno ());
      break;
    }
    if (in_place (&m)) {
      uint64_t lo = c < r->w_off ? r->w_off : c, hi;
      while (run_end < end && map_for_change (q, run_end, &m2) == 0
             && in_place (&m2) && m2.host == m.host + (run_end - c))
        run_end += q->cluster_size;
      hi = run_end < end ? run_end : end;
      submit_data_write (r, m.host + (lo - c), r->w_buf + (lo - r->w_off),
                         hi - lo, fua, lo);
    }
    else {
      while (run_end < end && map_for_change (q, run_end, &m2) == 0
             && !in_place (&m2))
        run_end += q->cluster_size;
      if (alloc_runs (r, c, (run_end - c) / q->cluster_size) == -1)
        fail (r, error_errno ());
    }
    c = run_end;
  }
  sub_put (r);
}

static void update_l2 (struct qreq *r);

/* Stage B: the new clusters get the data and the copied parts. */
static void
write_data (struct qreq *r)
{
  struct qcow2 *q = r->q;
  uint64_t end = r->w_off + r->w_len;

  r->cont = update_l2;
  sub_get (r);
  for (size_t i = 0; i < r->nr_runs && r->err == 0; i++) {
    struct alloc_run *run = &r->runs[i];
    uint64_t run_end = run->guest + run->n * q->cluster_size;
    uint64_t lo = run->guest < r->w_off ? r->w_off : run->guest;
    uint64_t hi = run_end < end ? run_end : end;

    if (run->head)
      submit_data_write (r, run->host, run->head, run->head_len, 0,
                         run->guest);
    submit_data_write (r, run->host + (lo - run->guest),
                       r->w_buf + (lo - r->w_off), hi - lo, 0, lo);
    if (run->tail)
      submit_data_write (r, run->host + (run_end - run->guest) - run->tail_len,
                         run->tail, run->tail_len, 0, run_end - run->tail_len);
  }
  sub_put (r);
}

/* Points the L2 entries at the new clusters; frees what they held. */
static int
link_run (struct qreq *r, const struct alloc_run *run)
{
  struct qcow2 *q = r->q;

  for (uint64_t i = 0; i < run->n; i++) {
    uint64_t g = run->guest + i * q->cluster_size;
    struct qtable *t;
    if (qcow2_l2_get_alloc (q, g, &t) == -1) {
      qcow2_free_entry_range (q, run->host / q->cluster_size + i, run->n - i,
                              false);
      return -1;
    }
    qcow2_free_entry (q, qcow2_l2_entry (q, t, g));
    qcow2_l2_set (q, t, g, (run->host + i * q->cluster_size)
                  | QCOW2_OFLAG_COPIED);
  }
  return 0;
}

static void
fw_done (struct qflush_waiter *w, int err)
{
  struct qreq *r = list_entry (w, struct qreq, fw);

  if (err)
    fail (r, err);
  finish (r);
}

/* Completes R, after a write-back if it changed metadata with FUA. */
static void
finish_meta (struct qreq *r, bool changed)
{
  if (changed && r->err == 0 && (r->io->flags & IMAGE_FUA)) {
    qcow2_writeback_wait (r->q, &r->fw);
    return;
  }
  finish (r);
}

/* Stage C. */
static void
update_l2 (struct qreq *r)
{
  bool changed = r->nr_runs > 0;

  for (size_t i = 0; i < r->nr_runs; i++) {
    if (r->err) {
      /* Never linked: the clusters go back (after a write-back). */
      qcow2_free_entry_range (r->q, r->runs[i].host / r->q->cluster_size,
                              r->runs[i].n, false);
      continue;
    }
    if (link_run (r, &r->runs[i]) == -1)
      fail (r, error_errno ());
  }
  runs_free (r);
  if (r->w_then) {
    r->w_then (r);
    return;
  }
  finish_meta (r, changed);
}

static void
write_start (struct qreq *r)
{
  r->w_off = r->io->offset;
  r->w_len = r->io->count;
  r->w_buf = r->io->buf;
  r->w_then = NULL;
  write_range (r);
}

/* ---- Zero and trim ---- */

/* The entry a cluster gets when it must read as zero, or (uint64_t)-1
 * when only writing zeroes can do that (version 2 over a backing). */
static uint64_t
zero_entry (const struct qcow2 *q)
{
  if (q->h.version >= 3)
    return q->backing ? QCOW2_OFLAG_ZERO : 0;
  return q->backing ? UINT64_MAX : 0;
}

/* Sets the entry of every whole cluster in [LO, HI) to NEW unless it
 * reads as zero already.  Returns 1 if anything changed. */
static int
set_entries (struct qreq *r, uint64_t lo, uint64_t hi, uint64_t new)
{
  struct qcow2 *q = r->q;
  int changed = 0;

  for (uint64_t c = lo; c < hi; c += q->cluster_size) {
    struct mapping m;
    struct qtable *t;
    if (map_for_change (q, c, &m) == -1)
      return -1;
    if (m.entry == new || (m.kind == K_ZERO && !(m.entry & QCOW2_OFFSET_MASK)
                           && !(m.entry & QCOW2_OFLAG_COMPRESSED)))
      continue;
    if ((new ? qcow2_l2_get_alloc (q, c, &t) : qcow2_l2_get (q, c, true, &t)) == -1)
      return -1;
    if (t == NULL)
      continue;                 /* unallocated without backing: zero */
    qcow2_free_entry (q, qcow2_l2_entry (q, t, c));
    qcow2_l2_set (q, t, c, new);
    changed = 1;
  }
  return changed;
}

static void zero_next (struct qreq *r);

static void
zero_done (struct qreq *r)
{
  finish_meta (r, true);
}

/* Writes zeroes over the next cluster of the ranges left, unless it
 * reads as zero already. */
static void
zero_next (struct qreq *r)
{
  struct qcow2 *q = r->q;

  while (r->zi < 3 && r->err == 0) {
    struct zrange *z = &r->zr[r->zi];
    uint64_t off = z->off, len, c;
    struct mapping m;

    if (z->len == 0) {
      r->zi++;
      continue;
    }
    c = cluster_of (q, off);
    len = c + q->cluster_size - off < z->len ? c + q->cluster_size - off : z->len;
    z->off += len;
    z->len -= len;
    if (map_cluster (q, c, &m) == -1) {
      fail (r, error_errno ());
      break;
    }
    if (reads_zero (q, &m, c))
      continue;
    if (r->io->flags & IMAGE_FAST_ZERO) {
      fail (r, ENOTSUP);        /* zeroes would have to be written */
      break;
    }
    r->w_off = off;
    r->w_len = len;
    r->w_buf = r->zero_buf;
    r->w_then = zero_next;
    write_range (r);
    return;
  }
  zero_done (r);
}

/* FAST_ZERO: would any part of the zero have to write data?  Checked
 * before anything changes, as the NBD protocol wants. */
static int
zero_is_slow (struct qreq *r)
{
  struct qcow2 *q = r->q;

  for (unsigned i = 0; i < 3; i++) {
    uint64_t lo = r->zr[i].off, hi = lo + r->zr[i].len;
    for (uint64_t c = cluster_of (q, lo); c < hi; c += q->cluster_size) {
      struct mapping m;
      if (map_cluster (q, c, &m) == -1)
        return -1;
      if (!reads_zero (q, &m, c))
        return 1;
    }
  }
  return 0;
}

static void
zero_start (struct qreq *r)
{
  struct qcow2 *q = r->q;
  uint64_t off = r->io->offset, end = off + r->io->count;
  uint64_t full_lo = cluster_of (q, off + q->cluster_size - 1);
  uint64_t full_hi = cluster_of (q, end), entry = zero_entry (q);

  int slow;

  if (full_lo >= full_hi)       /* within one cluster, or two partial */
    r->zr[0] = (struct zrange) { off, end - off };
  else {
    r->zr[0] = (struct zrange) { off, full_lo - off };
    r->zr[2] = (struct zrange) { full_hi, end - full_hi };
    if (entry == UINT64_MAX)
      r->zr[1] = (struct zrange) { full_lo, full_hi - full_lo };
  }
  if ((r->io->flags & IMAGE_FAST_ZERO)
      && (slow = zero_is_slow (r)) != 0) {
    fail (r, slow == -1 ? error_errno () : ENOTSUP);
    finish (r);
    return;
  }
  if (full_lo < full_hi && entry != UINT64_MAX
      && set_entries (r, full_lo, full_hi, entry) == -1)
    fail (r, error_errno ());
  if ((r->zero_buf = bufpool_get (q->cluster_size)) == NULL)
    fail (r, ENOMEM);
  else
    memset (r->zero_buf, 0, q->cluster_size);
  r->zi = 0;
  zero_next (r);
}

/* TRIM is advisory: whole clusters are released, partial ones kept. */
static void
trim_start (struct qreq *r)
{
  struct qcow2 *q = r->q;
  uint64_t off = r->io->offset, end = off + r->io->count;
  uint64_t lo = cluster_of (q, off + q->cluster_size - 1), hi = cluster_of (q, end);
  uint64_t entry = zero_entry (q);
  int changed = 0;

  if (end == q->h.size)
    hi = end;                   /* the last cluster may be partial */
  if (lo < hi && entry != UINT64_MAX
      && (changed = set_entries (r, lo, hi, entry)) == -1)
    fail (r, error_errno ());
  finish_meta (r, changed > 0);
}

/* ---- Block status ---- */

static int extents_sync (struct image *img, uint64_t off, uint64_t len,
                         struct image_extents *e);

/* Through the backing chain; a backing file that cannot say counts as
 * data. */
static int
backing_extents (struct qcow2 *q, uint64_t off, uint64_t len,
                 struct image_extents *e)
{
  struct image *b = q->backing;
  uint64_t in = off >= b->size ? 0 : (b->size - off < len ? b->size - off : len);
  int r = 0;

  if (in && (r = image_extents_sync (b, off, in, e)) == -1
      && error_errno () == ENOTSUP)
    r = image_extents_add (e, off, in, 0);
  if (r == 0 && in < len)
    r = image_extents_add (e, off + in, len - in,
                           IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO);
  return r;
}

/* Returns 0, 1 when E is full, -1 on error. */
static int
extents_sync (struct image *img, uint64_t off, uint64_t len,
              struct image_extents *e)
{
  struct qcow2 *q = q_of (img);
  uint64_t pos = off, end = off + len;

  while (pos < end) {
    uint64_t c = cluster_of (q, pos), n = c + q->cluster_size - pos;
    struct mapping m;
    int r;

    if (n > end - pos)
      n = end - pos;
    if (map_cluster (q, c, &m) == -1)
      return -1;
    if (m.kind == K_BACKING)
      r = backing_extents (q, pos, n, e);
    else
      r = image_extents_add (e, pos, n, m.kind == K_ZERO
                             ? IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO : 0);
    if (r)
      return r;
    pos += n;
  }
  return 0;
}

/* ---- Entry points ---- */

static bool
overlaps (const struct qreq *a, const struct qreq *b)
{
  return a->lo < b->hi && b->lo < a->hi;
}

static bool
conflicts (struct qcow2 *q, const struct qreq *r, bool exclusive)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &q->inflight) {
    struct qreq *o = list_entry (pos, struct qreq, node);
    if ((exclusive || o->exclusive) && overlaps (r, o))
      return true;
  }
  list_for_each_safe (pos, tmp, &q->waiting) {
    struct qreq *o = list_entry (pos, struct qreq, node);
    if (overlaps (r, o))
      return true;              /* it came first */
  }
  return false;
}

static int
wants_exclusive (struct qreq *r)
{
  switch (r->io->cmd) {
  case IMAGE_WRITE:
    return needs_alloc (r->q, r->io->offset, r->io->count);
  case IMAGE_ZERO:
  case IMAGE_TRIM:
    return 1;
  default:
    return 0;
  }
}

static void
dispatch (struct qreq *r)
{
  switch (r->io->cmd) {
  case IMAGE_READ:  read_start (r); break;
  case IMAGE_WRITE: write_start (r); break;
  case IMAGE_ZERO:  zero_start (r); break;
  case IMAGE_TRIM:  trim_start (r); break;
  default:          assert (!"not a ranged request");
  }
}

static void
start (struct qreq *r)
{
  struct qcow2 *q = r->q;
  int excl;

  if (conflicts (q, r, false)) {
    list_add_tail (&q->waiting, &r->node);
    return;
  }
  if ((excl = wants_exclusive (r)) == -1) {
    list_add_tail (&q->inflight, &r->node);
    fail (r, error_errno ());
    finish (r);
    return;
  }
  if (excl && conflicts (q, r, true)) {
    list_add_tail (&q->waiting, &r->node);
    return;
  }
  r->exclusive = excl;
  list_add_tail (&q->inflight, &r->node);
  dispatch (r);
}

static struct qreq *
req_new (struct image *img, struct image_io *io)
{
  struct qcow2 *q = q_of (img);
  struct qreq *r = calloc (1, sizeof *r);

  if (r == NULL) {
    image_io_complete_later (io, ENOMEM);
    return NULL;
  }
  r->q = q;
  r->io = io;
  r->lo = cluster_of (q, io->offset);
  r->hi = cluster_of (q, io->offset + io->count + q->cluster_size - 1);
  r->fw.done = fw_done;
  list_init (&r->node);
  list_init (&r->fw.node);
  return r;
}

static void
submit_ranged (struct image *img, struct image_io *io)
{
  struct qcow2 *q = q_of (img);
  bool writes = io->cmd != IMAGE_READ;
  struct qreq *r;

  if (writes && q->corrupt) {
    image_io_complete_later (io, EIO);
    return;
  }
  if (io->count == 0) {
    image_io_complete_later (io, 0);
    return;
  }
  if ((r = req_new (img, io)) == NULL)
    return;
  q->in_submit++;
  start (r);
  q->in_submit--;
}

static void
q_flush (struct image *img, struct image_io *io)
{
  struct qcow2 *q = q_of (img);
  struct qreq *r;

  if (img->readonly) {
    image_io_complete_later (io, 0);
    return;
  }
  if ((r = req_new (img, io)) == NULL)
    return;
  q->in_submit++;
  qcow2_writeback_wait (q, &r->fw);
  q->in_submit--;
}

static void
q_cache (struct image *img, struct image_io *io)
{
  (void) img;
  image_io_complete_later (io, 0);
}

static void
q_extents (struct image *img, struct image_io *io)
{
  int r = extents_sync (img, io->offset, io->count, io->extents);
  image_io_complete_later (io, r == -1 ? error_errno () : 0);
}

/* ---- Open and close ---- */

static void
q_close (struct image *img)
{
  struct qcow2 *q = q_of (img);

  assert (list_empty (&q->inflight) && list_empty (&q->waiting));
  /* Written back even when corruption was found: every check runs
   * before anything changes, so what is in memory is consistent, and
   * it holds writes that were acknowledged before. */
  if (!img->readonly && q->opened && qcow2_writeback_sync (q) == -1)
    log_err ("%s", error_get ());
  else if (q->wb_running)
    qcow2_writeback_sync (q);   /* only waits for it */
  qcow2_meta_close (q);
  if (q->zbuf)
    bufpool_put (q->zbuf, q->cluster_size);
  image_close (q->backing);
  image_close (q->file);
  if (q->meta_fd >= 0)
    close (q->meta_fd);
  free (q);
  free (img->path);
  free (img);
}

static const struct image_ops qcow2_ops = {
  .name = "qcow2",
  .close = q_close,
  .read = submit_ranged,
  .write = submit_ranged,
  .flush = q_flush,
  .trim = submit_ranged,
  .zero = submit_ranged,
  .cache = q_cache,
  .extents = q_extents,
  .extents_sync = extents_sync,
};

static int
read_header (struct qcow2 *q, const char *path)
{
  size_t len = q->file_size < (2u << 20) ? (size_t) q->file_size : 2u << 20;
  uint8_t *buf = malloc (len + 1);
  ssize_t n;
  int r;

  if (buf == NULL)
    return error_set (ENOMEM, "allocating a header buffer");
  n = pread (q->meta_fd, buf, len, 0);
  if (n < 0) {
    free (buf);
    return error_set (errno, "%s: reading the header", path);
  }
  r = qcow2_header_parse (buf, (size_t) n, q->file_size, &q->h);
  free (buf);
  if (r == -1)
    return error_prefix ("%s", path);
  return 0;
}

static int depth;               /* of backing files being opened */

/* The backing file's path: relative names are relative to the
 * directory of the image that names it. */
static int
open_backing (struct qcow2 *q, struct image *img)
{
  const char *name = q->h.backing_file;
  char path[PATH_MAX], dir[PATH_MAX];
  enum image_format fmt = IMAGE_FORMAT_AUTO;

  if (name[0] == '\0')
    return 0;
  if (strstr (name, "://") || strncmp (name, "json:", 5) == 0)
    return error_set (ENOTSUP, "%s: unsupported qcow2 feature: backing file "
                      "'%s' is not a local file", img->path, name);
  snprintf (dir, sizeof dir, "%s", img->path);
  if (name[0] == '/')
    snprintf (path, sizeof path, "%s", name);
  else if (snprintf (path, sizeof path, "%s/%s", dirname (dir), name)
           >= (int) sizeof path)
    return error_set (ENAMETOOLONG, "%s: backing file name too long", img->path);
  if (q->h.backing_format[0]
      && image_format_parse (q->h.backing_format, &fmt) == -1)
    return error_prefix ("%s: backing file format", img->path);
  if (depth >= MAX_BACKING_DEPTH)
    return error_set (ELOOP, "%s: backing chain longer than %d images",
                      img->path, MAX_BACKING_DEPTH);
  depth++;
  q->backing = image_open (path, fmt, true, img->cache, img->ioq);
  depth--;
  if (q->backing == NULL)
    return error_prefix ("%s: backing file", img->path);
  return 0;
}

/* Auto-clear bits we do not understand must be cleared before the
 * first write (bit 0: QEMU's persistent bitmaps become inconsistent,
 * which is what the bit says). */
static int
clear_autoclear (struct qcow2 *q, const char *path)
{
  uint8_t b[8] = { 0 };

  if (q->h.version < 3 || q->h.autoclear == 0)
    return 0;
  if (q->h.has_bitmaps_ext)
    log_warn ("%s: the image's persistent dirty bitmaps are not supported "
              "and become invalid; their clusters stay allocated until "
              "'qemu-img check -r leaks' (remove them first with "
              "'qemu-img bitmap --remove' to avoid this)", path);
  log_info ("%s: clearing qcow2 auto-clear features %#llx", path,
            (unsigned long long) q->h.autoclear);
  if (pwrite (q->meta_fd, b, 8, QCOW2_HDR_AUTOCLEAR) != 8
      || fdatasync (q->meta_fd) == -1)
    return error_set (errno, "%s: updating the header", path);
  q->h.autoclear = 0;
  return 0;
}

static int
setup (struct image *img, struct qcow2 *q, enum image_cache cache)
{
  struct stat st;

  q->meta_fd = open (img->path, (img->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (q->meta_fd == -1 || fstat (q->meta_fd, &st) == -1)
    return error_set (errno, "%s", img->path);
  if (!S_ISREG (st.st_mode))
    return error_set (EINVAL, "%s: qcow2 images must be regular files",
                      img->path);
  image_file_id_from_stat (&st, &img->file_id);
  q->file_size = (uint64_t) st.st_size;
  if (read_header (q, img->path) == -1)
    return -1;
  if (qcow2_header_check_features (&q->h, !img->readonly) == -1)
    return error_prefix ("%s", img->path);
  q->cluster_size = 1u << q->h.cluster_bits;
  q->l2_entries = q->cluster_size / 8;
  q->file = raw_open_file (img->path, img->readonly, cache, img->ioq,
                           q->cluster_size);
  if (q->file == NULL || qcow2_meta_open (q, !img->readonly) == -1)
    return -1;
  if (q->file->size < q->hwm)
    q->file->size = q->hwm;
  if ((q->zbuf = bufpool_get (q->cluster_size)) == NULL)
    return error_set (ENOMEM, "allocating a cluster buffer");
  if (open_backing (q, img) == -1)
    return -1;
  if (!img->readonly && clear_autoclear (q, img->path) == -1)
    return -1;
  img->size = q->h.size;
  img->direct = q->file->direct;
  img->align = q->file->align;
  return 0;
}

struct image *
qcow2_open (const char *path, bool readonly, enum image_cache cache,
            struct ioq *ioq)
{
  struct image *img = calloc (1, sizeof *img);
  struct qcow2 *q = calloc (1, sizeof *q);

  if (img == NULL || q == NULL || (img->path = strdup (path)) == NULL) {
    free (img);
    free (q);
    error_set (ENOMEM, "allocating an image");
    return NULL;
  }
  img->ops = &qcow2_ops;
  img->format = IMAGE_FORMAT_QCOW2;
  img->readonly = readonly;
  img->cache = cache;
  img->ioq = ioq;
  img->priv = q;
  q->meta_fd = -1;
  list_init (&q->inflight);
  list_init (&q->waiting);
  list_init (&q->flush_now);
  list_init (&q->flush_next);
  if (setup (img, q, cache) == -1) {
    q_close (img);              /* opened is false: nothing written back */
    return NULL;
  }
  q->opened = true;
  return img;
}
