/* SPDX-License-Identifier: MIT */
/* The mirror job (mirror.h has the design). */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap/store.h"
#include "common/bufpool.h"
#include "common/error.h"
#include "common/log.h"
#include "common/objcache.h"
#include "common/size.h"
#include "common/statefile.h"
#include "export.h"
#include "mirror.h"
#include "status.h"
#include "target.h"

#define MAX_OPS 16                    /* copies in flight */
#define MAX_CHUNK (4u << 20)          /* bytes per copy */
#define MAX_EXTENTS 64
#define TICK_MS 100
#define READY_BUDGET_NS 50000000u     /* what remains drains in 50 ms */
#define READY_MIN (4u << 20)
#define LAG_LIMIT (256u << 20)        /* async: beyond this, block writes */
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 8000
#define TARGET_CONNS 4

/* A target that answers nothing for this long is dropped (and
 * reconnected): long enough for a slow disk, short enough that a
 * partition does not hang sync-mode guests for TCP's minutes. */
#define DEFAULT_TARGET_TIMEOUT_MS 30000

struct mirror {
  struct export *exp;
  struct loop *loop;
  char *uri;
  char *label;                  /* the URI as shown (without an HA claim) */
  unsigned timeout_ms;          /* a silent target is dropped */
  bool async;
  uint64_t bandwidth;
  enum mirror_state state;
  char error[512];
  struct target *tgt;
  bool up;
  bool cancelling;

  /* The pass. */
  bool in_pass, flushing;
  struct { uint64_t off, len; } *copied;  /* this pass's copies, merged */
  size_t nr_copied, cap_copied;
  uint64_t cursor, pass_copied;
  unsigned ops;
  unsigned passes;

  /* Progress. */
  uint64_t done_bytes, total_bytes;
  uint64_t window_bytes, window_start_ns;
  double rate;                  /* bytes/s */
  int64_t tokens;               /* bandwidth budget, bytes */

  uint64_t zeroes_skipped;       /* zero ranges the target already had */
  uint64_t fast_zero_bytes;      /* zeroed with FAST_ZERO */
  bool fast_zero_slow;           /* this target refused FAST_ZERO: don't ask */

  /* Write blocking: guest writes whose acknowledgment waits for the
   * mirror to get the lag back under max-lag. */
  bool auto_blocking;
  struct list throttled;
  struct list copying;          /* copies in flight */
  struct list fwd_waiting;      /* forwards waiting for a copy to end */
  struct list forwarding;       /* forwards at the target */
  struct list fwd_held;         /* async writes waiting for queue room */
  bool admitting;
  bool congested;               /* writes wait for the queue (logged) */
  uint64_t congestion_waits;    /* async writes that had to wait */
  bool fwd_unflushed, fwd_flushing;
  uint64_t fwd_bytes;           /* async forwards not yet at the target */
  unsigned fwd_ops;             /* how many */
  struct loop_source *fwd_flush_timer;

  /* Cut-over. */
  mirror_cutover_fn cutover_done;
  void *cutover_opaque;
  uint64_t hold_start_ns;
  bool final_flush;
  enum mirror_state before_cutover;     /* back to it if given up */
  struct loop_source *cutover_timer;    /* --timeout */
  unsigned cutover_seq, flush_seq;      /* whose final flush is in flight */

  struct loop_source *tick;
  struct loop_source *retry;
  unsigned backoff_ms;
  struct loop_deferred kick_later;
  bool kick_queued;
  struct loop_deferred release_later;

  /* A new job marks the whole disk dirty, durably, before it starts. */
  struct bitmap_intent mark_all;
  bool marking;
  bool holds_ref;               /* on the export, until terminal and idle */
  mirror_started_fn started;    /* an admin waits for the first outcome */
  void *started_opaque;
  int started_err;
  struct loop_deferred started_later;
};

struct copy {
  struct mirror *m;
  struct list node;             /* m->copying */
  uint64_t off, len;
  struct image_extents ext;
  void *buf;
  size_t buf_size;
  uint64_t target_zero;         /* bytes from OFF the target reads as zero */
  unsigned pending;             /* target commands in flight */
  int err;
  struct image_io io;
};

static void pump (struct mirror *m);
static void retry_forwards (struct mirror *m);
static void admit_held (struct mirror *m);
static void pass_start (void *opaque);
static void begin (struct mirror *m);
static uint64_t lag_limit (const struct mirror *m);
static uint64_t lag (const struct mirror *m);
static void release_throttled (struct mirror *m);
static void mark_all_ready (struct bitmap_intent *in, int err);
static void check_cutover (struct mirror *m);
static void connect_target (struct mirror *m);

static struct dirty_bitmap *
live (const struct mirror *m)
{
  return bitmap_store_live (m->exp->bitmap);
}

const char *
mirror_state_name (enum mirror_state s)
{
  static const char *const names[] = {
    "syncing", "ready", "cutover", "completed", "failed", "cancelled",
    "disconnected",
  };
  return names[s];
}

enum mirror_state
mirror_state (const struct mirror *m)
{
  return m->state;
}

const char *
mirror_error (const struct mirror *m)
{
  return m->error;
}

static void
report_started_now (void *opaque)
{
  struct mirror *m = opaque;
  mirror_started_fn fn = m->started;

  m->started = NULL;
  if (fn)
    fn (m->started_opaque, m->started_err);
}

/* Always from the loop, never inside mirror_start(). */
static void
report_started (struct mirror *m, int err)
{
  if (m->started == NULL || m->started_later.queued)
    return;
  m->started_err = err;
  memset (&m->started_later, 0, sizeof m->started_later);
  loop_defer (m->loop, &m->started_later, report_started_now, m);
}

bool
mirror_active (const struct mirror *m)
{
  return m->state == MIRROR_SYNCING || m->state == MIRROR_READY
    || m->state == MIRROR_CUTOVER || m->state == MIRROR_DISCONNECTED;
}

__attribute__ ((format (printf, 2, 3)))
static void
set_error (struct mirror *m, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (m->error, sizeof m->error, fmt, ap);
  va_end (ap);
}

static void
set_state (struct mirror *m, enum mirror_state s)
{
  if (m->state == s)
    return;
  log_info ("export %s: mirror to %s: %s -> %s%s%s", m->exp->spec.name, m->label,
            mirror_state_name (m->state), mirror_state_name (s),
            m->error[0] ? ": " : "", m->error);
  m->state = s;
}

/* ---- Persistence of the job, so a restart resumes it ---- */

static void
job_path (const struct mirror *m, char *buf, size_t len)
{
  snprintf (buf, len, "%s.mirror", export_state_prefix (m->exp));
}

static void
job_save (const struct mirror *m)
{
  char path[4096], buf[4200];
  int n;

  job_path (m, path, sizeof path);
  n = snprintf (buf, sizeof buf, "uri=%s\nmode=%s\nbandwidth=%llu\n", m->uri,
                m->async ? "async" : "sync", (unsigned long long) m->bandwidth);
  if (n < 0 || (size_t) n >= sizeof buf)
    log_warn ("export %s: the mirror's URI is too long to save: it will not "
              "resume after a restart", m->exp->spec.name);
  else if (statefile_write (path, buf, (size_t) n) == -1)
    log_warn ("export %s: %s: the mirror will not resume after a restart",
              m->exp->spec.name, error_get ());
}

static void
job_forget (const struct mirror *m)
{
  char path[4096];

  job_path (m, path, sizeof path);
  if (statefile_remove (path) == -1)
    log_warn ("export %s: %s", m->exp->spec.name, error_get ());
}

/* ---- Copies ---- */

static uint64_t
remaining (const struct mirror *m)
{
  uint64_t d = dirty_bitmap_dirty_bytes (live (m));
  return d > m->pass_copied ? d - m->pass_copied : 0;
}

/* Remembers a copied range; it is cleared once the target flushed. */
static void
note_copied (struct mirror *m, uint64_t off, uint64_t len)
{
  if (m->nr_copied > 0) {
    __typeof__ (m->copied[0]) *last = &m->copied[m->nr_copied - 1];
    if (last->off + last->len == off) {
      last->len += len;
      return;
    }
  }
  if (m->nr_copied == m->cap_copied) {
    size_t cap = m->cap_copied ? m->cap_copied * 2 : 64;
    void *n = realloc (m->copied, cap * sizeof *m->copied);
    if (n == NULL) {
      /* Not remembered: it stays dirty and is copied again. */
      bitmap_store_mark (m->exp->bitmap, off, len);
      return;
    }
    m->copied = n;
    m->cap_copied = cap;
  }
  m->copied[m->nr_copied].off = off;
  m->copied[m->nr_copied].len = len;
  m->nr_copied++;
}

static void
copy_end (struct copy *c, int err)
{
  struct mirror *m = c->m;

  if (err) {
    /* Copy it again in a later pass: the mark lands in the successor. */
    bitmap_store_mark (m->exp->bitmap, c->off, c->len);
    if (m->up)
      log_debug ("mirror %s: copy %llu+%llu failed: %s", m->label,
                 (unsigned long long) c->off, (unsigned long long) c->len,
                 strerror (err));
  }
  else {
    m->done_bytes += c->len;
    m->window_bytes += c->len;
    m->pass_copied += c->len;
    note_copied (m, c->off, c->len);
  }
  bufpool_put (c->buf, c->buf_size);
  image_extents_free (&c->ext);
  list_del (&c->node);
  free (c);
  m->ops--;
  retry_forwards (m);
  pump (m);
}

/* A copy is one range: its extents from the image, one probe of the
 * target's allocation, one read of the range, then every piece sent to
 * the target at once — data as writes, zeroes as WRITE_ZEROES (the
 * target may punch a hole: it stays sparse) unless the target already
 * reads them as zero.  Nothing waits on another piece. */
static void
piece_done (void *opaque, int err)
{
  struct copy *c = opaque;

  if (err && !c->err)
    c->err = err;
  if (--c->pending == 0)
    copy_end (c, c->err);
}

/* A zero piece sent with FAST_ZERO, kept to be sent again plainly. */
struct fast_zero {
  struct copy *c;
  uint64_t pos, len;
};

/* FAST_ZERO asks the target to zero only if that is cheap (a hole, a
 * metadata update) and to refuse at once otherwise.  A target that
 * refuses zeroes by writing them out: it is told so once, then gets
 * plain WRITE_ZEROES — still without NO_HOLE, so it may punch holes —
 * and the refusal costs one round trip per target, not per range. */
static bool
fast_zero_worth_trying (const struct mirror *m)
{
  return target_can_fast_zero (m->tgt) && !m->fast_zero_slow;
}

static void
fast_zero_done (void *opaque, int err)
{
  struct fast_zero *z = opaque;
  struct copy *c = z->c;
  struct mirror *m = c->m;

  if (err == ENOTSUP) {
    if (!m->fast_zero_slow)
      log_info ("export %s: mirror target %s zeroes slowly (FAST_ZERO refused): "
                "plain WRITE_ZEROES from now on", m->exp->spec.name, m->label);
    m->fast_zero_slow = true;
    err = target_zero (m->tgt, z->len, z->pos, 0, piece_done, c) == 0 ? 0 : EIO;
    if (err == 0) {
      free (z);
      return;                   /* piece_done() follows */
    }
  }
  else if (err == 0)
    m->fast_zero_bytes += z->len;
  free (z);
  piece_done (c, err);
}

static int
send_zero (struct copy *c, uint64_t pos, uint64_t len)
{
  struct mirror *m = c->m;
  struct fast_zero *z;

  if (!fast_zero_worth_trying (m) || (z = malloc (sizeof *z)) == NULL)
    return target_zero (m->tgt, len, pos, 0, piece_done, c);
  z->c = c;
  z->pos = pos;
  z->len = len;
  if (target_zero_fast (m->tgt, len, pos, fast_zero_done, z) == -1) {
    free (z);
    return -1;
  }
  return 0;
}

static void
send_piece (struct copy *c, uint64_t pos, uint64_t len, bool zero)
{
  struct mirror *m = c->m;
  int r;

  if (zero && m->bandwidth)
    m->tokens += (int64_t) len; /* reserved by copy_start(); not data */
  if (zero && pos + len <= c->off + c->target_zero) {
    m->zeroes_skipped += len;   /* already zero there: nothing to send */
    return;
  }
  c->pending++;
  if (zero)
    r = send_zero (c, pos, len);
  else
    r = target_pwrite (m->tgt, (uint8_t *) c->buf + (pos - c->off), len, pos,
                       0, piece_done, c);
  if (r == -1) {
    c->pending--;
    c->err = EIO;
  }
}

static void
fan_out (struct copy *c)
{
  uint64_t pos = c->off, end = c->off + c->len;
  bool can_zero = target_can_zero (c->m->tgt);

  c->pending = 1;               /* held while sending */
  for (size_t i = 0; i < c->ext.nr && pos < end; i++) {
    const struct image_extent *e = &c->ext.ext[i];
    uint64_t e_end = e->offset + e->length < end ? e->offset + e->length : end;
    if (e_end <= pos)
      continue;
    send_piece (c, pos, e_end - pos, (e->flags & IMAGE_EXTENT_ZERO) && can_zero);
    pos = e_end;
  }
  if (pos < end)                /* what the extents do not cover is data */
    send_piece (c, pos, end - pos, false);
  piece_done (c, 0);
}

static bool
has_data (const struct copy *c)
{
  uint64_t covered = c->off;

  for (size_t i = 0; i < c->ext.nr; i++) {
    if (!(c->ext.ext[i].flags & IMAGE_EXTENT_ZERO))
      return true;
    covered = c->ext.ext[i].offset + c->ext.ext[i].length;
  }
  return covered < c->off + c->len;
}

static void
read_done (struct image_io *io, int err)
{
  struct copy *c = io->opaque;

  if (err) {
    copy_end (c, err);
    return;
  }
  fan_out (c);
}

static void
read_range (struct copy *c)
{
  /* All zeroes, sent as WRITE_ZEROES: nothing to read.  A target that
   * cannot zero gets zeroes written as data, and those come from the
   * read: a pool buffer holds whatever its last copy left there. */
  if (!has_data (c) && target_can_zero (c->m->tgt)) {
    fan_out (c);
    return;
  }
  memset (&c->io, 0, sizeof c->io);
  c->io.cmd = IMAGE_READ;
  c->io.offset = c->off;
  c->io.count = c->len;
  c->io.buf = c->buf;
  c->io.done = read_done;
  c->io.opaque = c;
  image_submit (c->m->exp->img, &c->io);
}

static void
probe_done (void *opaque, int err, uint64_t zero_bytes)
{
  struct copy *c = opaque;

  c->target_zero = err ? 0 : zero_bytes;
  read_range (c);
}

static bool
has_zeroes (const struct copy *c)
{
  for (size_t i = 0; i < c->ext.nr; i++)
    if (c->ext.ext[i].flags & IMAGE_EXTENT_ZERO)
      return true;
  return false;
}

static void
extents_done (struct image_io *io, int err)
{
  struct copy *c = io->opaque;
  struct target *t = c->m->tgt;

  if (err) {
    copy_end (c, err);
    return;
  }
  /* Zero only what the target does not already read as zero. */
  if (has_zeroes (c) && target_can_zero (t) && target_can_block_status (t)
      && target_zero_prefix (t, c->len, c->off, probe_done, c) == 0)
    return;
  read_range (c);
}

static bool overlaps_forward (const struct mirror *m, uint64_t off,
                              uint64_t len);

static void
copy_start (struct mirror *m, uint64_t off, uint64_t len)
{
  struct copy *c;

  /* A guest write being sent to the target at the same time as to the
   * image (sync mode): this copy could read the image before that write
   * lands and reach the target after it.  Leave the range to the next
   * pass. */
  if (overlaps_forward (m, off, len)) {
    bitmap_store_mark (m->exp->bitmap, off, len);
    return;
  }
  c = calloc (1, sizeof *c);
  m->ops++;
  if (c == NULL || (c->buf = bufpool_get (len)) == NULL) {
    free (c);
    m->ops--;
    bitmap_store_mark (m->exp->bitmap, off, len);
    return;
  }
  /* --bandwidth counts the data sent.  A copy reserves its length when
   * it starts, or the copies started before the first one sends would
   * all spend the same budget (16 of them: a burst 16 times too big);
   * what turns out to be zeroes is given back. */
  if (m->bandwidth)
    m->tokens -= (int64_t) len;
  c->m = m;
  c->off = off;
  c->len = len;
  list_add_tail (&m->copying, &c->node);
  c->buf_size = len;
  c->ext.max = MAX_EXTENTS;
  c->io.cmd = IMAGE_EXTENTS;
  c->io.offset = off;
  c->io.count = len;
  c->io.extents = &c->ext;
  c->io.done = extents_done;
  c->io.opaque = c;
  image_submit (m->exp->img, &c->io);
}

/* ---- Passes ---- */

static void
pass_end (void *opaque, int err)
{
  struct mirror *m = opaque;
  struct dirty_bitmap *bm = live (m);

  m->flushing = false;
  m->in_pass = false;
  if (err == 0) {
    /* The target has these copies on stable storage: their bits may go
     * (the file follows lazily).  Failed copies were marked again. */
    for (size_t i = 0; i < m->nr_copied; i++)
      bitmap_store_clear (m->exp->bitmap, m->copied[i].off, m->copied[i].len);
    dirty_bitmap_abdicate (bm);
  }
  else
    dirty_bitmap_reclaim (bm);
  m->nr_copied = 0;
  m->passes++;
  m->pass_copied = 0;
  if (m->auto_blocking && lag (m) <= lag_limit (m) / 2)
    release_throttled (m);
  if (m->cancelling || !m->up) {
    pump (m);
    return;
  }
  if (m->state == MIRROR_SYNCING
      && dirty_bitmap_dirty_bytes (bm)
         <= (uint64_t) (m->rate * READY_BUDGET_NS / 1e9) + READY_MIN)
    set_state (m, MIRROR_READY);
  if (m->state == MIRROR_CUTOVER) {
    check_cutover (m);
    return;
  }
  if (dirty_bitmap_dirty_bytes (bm) > 0)
    mirror_kick (m);
}

/* Stopped, and nothing of ours in flight. */
static bool
finished (const struct mirror *m)
{
  return !m->in_pass && m->ops == 0 && !m->flushing && m->cancelling
    && !m->marking && (m->tgt == NULL || target_in_flight (m->tgt) == 0)
    && m->fwd_bytes == 0 && list_empty (&m->fwd_waiting)
    && (m->tgt != NULL || m->holds_ref);
}

/* Lets the target go, then the export (which may free M). */
static void
release (void *opaque)
{
  struct mirror *m = opaque;

  if (!finished (m))
    return;
  target_free (m->tgt);
  m->tgt = NULL;
  if (m->holds_ref) {
    m->holds_ref = false;
    export_unref (m->exp);
  }
}

static void
pump (struct mirror *m)
{
  struct dirty_bitmap *bm = live (m);
  uint64_t size = export_size (m->exp), start, len;
  uint64_t chunk = m->up && target_max_request (m->tgt) < MAX_CHUNK
    ? target_max_request (m->tgt) : MAX_CHUNK;

  if (!m->in_pass || m->flushing)
    goto idle;
  while (m->up && !m->cancelling && m->ops < MAX_OPS && m->cursor < size
         && (m->bandwidth == 0 || m->tokens > 0)) {
    if (dirty_bitmap_next_pending (bm, m->cursor, size - m->cursor, &start, &len) == 1) {
      m->cursor = size;
      break;
    }
    if (len > chunk)
      len = chunk;
    /* Under --bandwidth no copy is much bigger than the budget left;
     * whole granules, or their bits could never be cleared. */
    if (m->bandwidth && len > (uint64_t) m->tokens) {
      uint64_t g = dirty_bitmap_granularity (bm);
      uint64_t budget = (uint64_t) m->tokens / g * g;
      len = budget < g ? g : budget;
    }
    m->cursor = start + len;
    copy_start (m, start, len);
  }
  if (m->ops > 0)
    return;
  if (m->in_pass && m->cursor >= size && m->up && !m->cancelling) {
    m->flushing = true;
    if (target_flush (m->tgt, pass_end, m) == -1)
      pass_end (m, EIO);
    return;
  }
  if (m->in_pass && (m->cancelling || !m->up)) {
    /* Abandoned: keep every bit. */
    m->in_pass = false;
    dirty_bitmap_reclaim (bm);
    m->pass_copied = 0;
    m->nr_copied = 0;
  }
 idle:
  if (finished (m)) {
    /* Not here: pump() may run inside one of the target's own
     * callbacks, which must not see it freed. */
    loop_defer (m->loop, &m->release_later, release, m);   /* once */
  }
}

static void
pass_start (void *opaque)
{
  struct mirror *m = opaque;
  struct dirty_bitmap *bm = live (m);

  m->kick_queued = false;
  if (m->in_pass || !m->up || m->cancelling || m->flushing
      || (m->state != MIRROR_SYNCING && m->state != MIRROR_READY
          && m->state != MIRROR_CUTOVER))
    return;
  if (dirty_bitmap_dirty_bytes (bm) == 0) {
    if (m->state == MIRROR_SYNCING)
      set_state (m, MIRROR_READY);
    if (m->state == MIRROR_CUTOVER)
      check_cutover (m);
    return;
  }
  if (dirty_bitmap_freeze (bm) == -1) {
    log_err ("mirror %s: %s", m->label, error_get ());
    return;
  }
  m->in_pass = true;
  m->cursor = 0;
  m->pass_copied = 0;
  m->nr_copied = 0;
  pump (m);
}

void
mirror_kick (struct mirror *m)
{
  if (m == NULL || m->kick_queued || m->in_pass)
    return;
  m->kick_queued = true;
  memset (&m->kick_later, 0, sizeof m->kick_later);
  loop_defer (m->loop, &m->kick_later, pass_start, m);
}

/* ---- Time: rate, bandwidth, lag bound ---- */

static void
on_tick (void *opaque)
{
  struct mirror *m = opaque;
  uint64_t now = loop_now_ns ();
  double dt = (double) (now - m->window_start_ns) / 1e9;
  uint64_t dirty;

  if (dt >= 1.0) {
    double inst = (double) m->window_bytes / dt;
    m->rate = m->rate == 0 ? inst : 0.5 * m->rate + 0.5 * inst;
    m->window_bytes = 0;
    m->window_start_ns = now;
  }
  if (m->bandwidth) {
    m->tokens += (int64_t) (m->bandwidth * TICK_MS / 1000);
    if (m->tokens > (int64_t) m->bandwidth)
      m->tokens = (int64_t) m->bandwidth;
  }
  /* Guarantee 4: writes held by an over-long lag go again once the
   * mirror has caught up (to half the bound, so it does not flap). */
  dirty = dirty_bitmap_dirty_bytes (live (m));
  if (m->auto_blocking && (dirty <= lag_limit (m) / 2 || !m->up))
    release_throttled (m);
  if (m->in_pass)
    pump (m);
  else if (dirty > 0)
    mirror_kick (m);
}

/* ---- Lag bound ---- */

static uint64_t
lag_limit (const struct mirror *m)
{
  return m->exp->spec.max_lag ? m->exp->spec.max_lag : LAG_LIMIT;
}

struct blocked {
  struct list node;
  struct blk_req *x;          /* NULL once detached (async) */
  mirror_write_fn done;
  struct mirror *m;
  int forwarded;                /* 0 once the target has the write */
  struct list fwd_node;         /* m->forwarding while at the target */
  enum image_cmd cmd;
  unsigned flags;               /* TARGET_FUA: the guest asked for FUA */
  const void *buf;
  uint64_t off, len;
  /* Async forwards outlive the guest's request: their own copy of the
   * data, and their own hold on the bitmap's intent. */
  void *own_buf;
  struct bitmap_intent in;
};

/* Every mirrored guest write has one, and an async one two. */
static struct objcache blocked_cache = OBJCACHE_INIT (struct blocked, 1024);

static void
release_throttled (struct mirror *m)
{
  if (m->auto_blocking)
    log_info ("export %s: mirror caught up: writes flow again", m->exp->spec.name);
  m->auto_blocking = false;
  while (!list_empty (&m->throttled)) {
    struct blocked *b = list_entry (m->throttled.next, struct blocked, node);
    list_del (&b->node);
    b->done (b->x, b->forwarded);
    objcache_put (&blocked_cache, b);
  }
}

/* ---- The target's life ---- */

static void
retry_now (void *opaque)
{
  struct mirror *m = opaque;

  loop_source_remove (m->retry);
  m->retry = NULL;
  if (m->cancelling)
    return;
  if (m->tgt && target_in_flight (m->tgt) > 0) {
    m->retry = loop_add_timer (m->loop, 50, 0, retry_now, m);
    return;
  }
  target_free (m->tgt);
  m->tgt = NULL;
  connect_target (m);
}

static void
schedule_retry (struct mirror *m)
{
  if (m->retry || m->cancelling)
    return;
  m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : BACKOFF_MIN_MS;
  if (m->backoff_ms > BACKOFF_MAX_MS)
    m->backoff_ms = BACKOFF_MAX_MS;
  m->retry = loop_add_timer (m->loop, m->backoff_ms, 0, retry_now, m);
}

/* The job ends in failure (m->error says why); pump() runs last: it
 * may let the export go. */
static void
fail_job (struct mirror *m, int err)
{
  m->cancelling = true;
  set_state (m, MIRROR_FAILED);
  job_forget (m);
  report_started (m, err);
  pump (m);
}

static bool
target_acceptable (struct mirror *m)
{
  /* Copying an export onto itself never converges (every copy is a
   * new write to mirror) and reads what it half overwrote. */
  if (export_is_described (m->exp, target_description (m->tgt))) {
    set_error (m, "target is export %s itself (its description carries "
               "this export's instance id): a mirror to itself is refused",
               m->exp->spec.name);
    return false;
  }
  if (target_size (m->tgt) != export_size (m->exp)) {
    set_error (m, "target size %llu differs from the export's %llu",
               (unsigned long long) target_size (m->tgt),
               (unsigned long long) export_size (m->exp));
    return false;
  }
  if (target_is_readonly (m->tgt)) {
    set_error (m, "target is read-only");
    return false;
  }
  return true;
}

static void
on_target (void *opaque, enum target_state st)
{
  struct mirror *m = opaque;

  if (st == TARGET_UP) {
    if (!target_acceptable (m)) {
      fail_job (m, EINVAL);
      return;
    }
    m->up = true;
    m->backoff_ms = 0;
    m->fast_zero_slow = false;  /* a new connection: it may have changed */
    m->error[0] = '\0';
    if (m->state == MIRROR_DISCONNECTED)
      set_state (m, MIRROR_SYNCING);
    log_info ("export %s: mirror target %s up (%u connection%s)",
              m->exp->spec.name, m->label, target_connections (m->tgt),
              target_connections (m->tgt) == 1 ? "" : "s");
    report_started (m, 0);
    mirror_kick (m);
    return;
  }
  /* Down: keep tracking writes; in-flight copies fail and re-mark. */
  m->up = false;
  set_error (m, "%s", target_error (m->tgt));
  if (m->started && !m->started_later.queued) {
    /* Never reached, and an admin waits: fail rather than retry. */
    fail_job (m, ENOTCONN);
    return;
  }
  if (m->state == MIRROR_CUTOVER) {
    set_state (m, MIRROR_FAILED);
    check_cutover (m);
  }
  else if (mirror_active (m))
    set_state (m, MIRROR_DISCONNECTED);
  retry_forwards (m);           /* waiting ones go back to the bitmap */
  schedule_retry (m);
  pump (m);                     /* last: it may let the export go */
}

static void
connect_target (struct mirror *m)
{
  m->up = false;
  m->tgt = target_open (m->loop, m->uri, TARGET_CONNS, on_target, m);
  if (m->tgt)
    target_set_timeout (m->tgt, m->timeout_ms);
  if (m->tgt == NULL) {
    set_error (m, "%s", error_get ());
    if (m->started) {
      fail_job (m, EINVAL);
      return;
    }
    set_state (m, MIRROR_DISCONNECTED);
    retry_forwards (m);         /* waiting ones go back to the bitmap */
    schedule_retry (m);
  }
}

/* ---- Start, cancel, status ---- */

static void
begin (struct mirror *m)
{
  m->total_bytes = dirty_bitmap_dirty_bytes (live (m));
  job_save (m);
  connect_target (m);
}

static void
mark_all_ready (struct bitmap_intent *in, int err)
{
  struct mirror *m = in->opaque;

  bitmap_store_end_write (m->exp->bitmap, &m->mark_all);   /* marks it all live */
  m->marking = false;
  if (err) {
    set_error (m, "recording the full sync in the bitmap failed: %s", strerror (err));
    fail_job (m, err);
    return;
  }
  if (m->cancelling)
    return;
  begin (m);
}

struct mirror *
mirror_start (struct export *e, const struct mirror_opts *o)
{
  struct mirror *m;

  if (e->bitmap == NULL) {
    error_set (EINVAL, "export %s has no dirty bitmap (bitmap=false)", e->spec.name);
    return NULL;
  }
  if (dirty_bitmap_is_frozen (bitmap_store_live (e->bitmap))) {
    error_set (EBUSY, "export %s: the bitmap is in use", e->spec.name);
    return NULL;
  }
  m = calloc (1, sizeof *m);
  if (m == NULL || (m->uri = strdup (o->uri)) == NULL
      || (m->label = strdup (o->label ? o->label : o->uri)) == NULL) {
    if (m)
      free (m->uri);
    free (m);
    error_set (ENOMEM, "allocating a mirror");
    return NULL;
  }
  m->exp = e;
  m->loop = ioq_loop (e->img->ioq);
  m->async = o->async;
  m->bandwidth = o->bandwidth;
  m->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TARGET_TIMEOUT_MS;
  m->tokens = (int64_t) o->bandwidth;
  m->state = MIRROR_SYNCING;
  m->window_start_ns = loop_now_ns ();
  m->started = o->started;
  m->started_opaque = o->opaque;
  list_init (&m->throttled);
  list_init (&m->fwd_held);
  list_init (&m->copying);
  list_init (&m->fwd_waiting);
  list_init (&m->forwarding);
  m->tick = loop_add_timer (m->loop, TICK_MS, TICK_MS, on_tick, m);
  if (m->tick == NULL) {
    free (m->uri);
    free (m->label);
    free (m);
    return NULL;
  }
  export_ref (e);
  m->holds_ref = true;
  log_info ("export %s: mirror to %s started (%s%s)", e->spec.name, m->label,
            m->async ? "async" : "sync", o->resume ? ", resumed" : "");
  if (o->resume) {
    begin (m);
    return m;
  }
  /* A new target may hold anything: everything is copied (holes cost
   * little).  The marks reach the bitmap file before the job is saved,
   * so a restart resumes a full sync, never a partial one. */
  m->marking = true;
  m->mark_all.ready = mark_all_ready;
  m->mark_all.opaque = m;
  if (bitmap_store_begin_write (e->bitmap, &m->mark_all, 0, export_size (e)) == 1)
    mark_all_ready (&m->mark_all, 0);
  return m;
}

void
mirror_cancel (struct mirror *m, bool keep_job)
{
  if (m == NULL || m->cancelling)
    return;
  m->cancelling = true;
  loop_source_remove (m->retry);
  m->retry = NULL;
  if (m->started) {
    /* Whoever waits for the start hears of the cancel now. */
    mirror_started_fn fn = m->started;
    m->started = NULL;
    loop_cancel_deferred (m->loop, &m->started_later);
    set_error (m, "cancelled");
    fn (m->started_opaque, ECANCELED);
  }
  if (mirror_active (m)) {
    set_state (m, MIRROR_CANCELLED);
    if (!keep_job)
      job_forget (m);
  }
  release_throttled (m);
  retry_forwards (m);           /* waiting ones go back to the bitmap */
  check_cutover (m);
  pump (m);
}

bool
mirror_idle (const struct mirror *m)
{
  return m == NULL || !m->holds_ref;
}

void
mirror_free (struct mirror *m)
{
  if (m == NULL)
    return;
  m->started = NULL;
  loop_cancel_deferred (m->loop, &m->started_later);
  loop_source_remove (m->tick);
  loop_source_remove (m->fwd_flush_timer);
  loop_source_remove (m->retry);
  loop_source_remove (m->cutover_timer);
  loop_cancel_deferred (m->loop, &m->kick_later);
  loop_cancel_deferred (m->loop, &m->release_later);
  target_free (m->tgt);
  free (m->copied);
  free (m->uri);
  free (m->label);
  free (m);
}

json_object *
mirror_status_json (const struct mirror *m)
{
  json_object *o = json_object_new_object ();
  uint64_t rem = m->state == MIRROR_COMPLETED ? 0 : remaining (m);
  uint64_t total = m->done_bytes + rem;
  /* No rate without a job and its target (the average would only
   * decay); under 1 B/s it is 0, and the ETA unknown. */
  uint64_t rate = mirror_active (m) && m->up ? (uint64_t) m->rate : 0;

  status_add (o, "target", json_object_new_string (m->label));
  status_add (o, "state", json_object_new_string (mirror_state_name (m->state)));
  status_add (o, "mode", json_object_new_string (m->async ? "async" : "sync"));
  status_add (o, "total_bytes", json_object_new_int64 ((int64_t) (total > m->total_bytes ? total : m->total_bytes)));
  status_add (o, "done_bytes", json_object_new_int64 ((int64_t) m->done_bytes));
  status_add (o, "remaining_bytes", json_object_new_int64 ((int64_t) rem));
  status_add (o, "rate_bytes_per_s", json_object_new_int64 ((int64_t) rate));
  status_add (o, "eta_s", status_eta_json (rem, rate));
  status_add (o, "error", m->error[0] ? json_object_new_string (m->error) : NULL);
  status_add (o, "write_blocking", json_object_new_boolean (!m->async || m->auto_blocking
                                                            || m->congested));
  status_add (o, "lag_bound_held", json_object_new_boolean (m->auto_blocking || m->congested));
  status_add (o, "lag_bytes", json_object_new_int64 ((int64_t) lag (m)));
  status_add (o, "forwarding_bytes", json_object_new_int64 ((int64_t) m->fwd_bytes));
  status_add (o, "congested", json_object_new_boolean (m->congested));
  status_add (o, "congestion_waits", json_object_new_int64 ((int64_t) m->congestion_waits));
  status_add (o, "passes", json_object_new_int ((int) m->passes));
  status_add (o, "connections", json_object_new_int (m->tgt && m->up ? (int) target_connections (m->tgt) : 0));
  status_add (o, "bandwidth", json_object_new_int64 ((int64_t) m->bandwidth));
  status_add (o, "zeroes_skipped_bytes", json_object_new_int64 ((int64_t) m->zeroes_skipped));
  status_add (o, "fast_zero_bytes", json_object_new_int64 ((int64_t) m->fast_zero_bytes));
  return o;
}

/* ---- Write blocking ---- */

static bool
active_for_writes (const struct mirror *m)
{
  return !m->cancelling && (m->state == MIRROR_SYNCING || m->state == MIRROR_READY
                            || m->state == MIRROR_CUTOVER
                            || m->state == MIRROR_DISCONNECTED);
}

/* The write is on the target (sync mode) or needs not be: hold its
 * acknowledgment while the lag is over the bound.  Guests are slowed
 * to the mirror's pace; the bound holds. */
static void
throttle_or_done (struct blocked *b)
{
  struct mirror *m = b->m;

  if (active_for_writes (m) && m->up && lag (m) > lag_limit (m)) {
    if (!m->auto_blocking)
      log_info ("export %s: mirror lags %llu bytes (max-lag %llu): "
                "switching to write-blocking", m->exp->spec.name,
                (unsigned long long) lag (m),
                (unsigned long long) lag_limit (m));
    m->auto_blocking = true;
    list_add_tail (&m->throttled, &b->node);
    mirror_kick (m);
    return;
  }
  b->done (b->x, b->forwarded);
  objcache_put (&blocked_cache, b);
}

/* ---- Forwarded writes ----
 *
 * In sync mode a guest write goes to the target before it is
 * acknowledged.  When the target has it, its bitmap bit need not be
 * set at all (bitmap_store_end_write_clean): no later pass copies the
 * granule again, which would cost a 64 KiB copy per 4 KiB write.  That
 * is only safe if no copy of the same range is in flight: a copy that
 * read the data before the guest write landed could write it to the
 * target after the forward.  So a forward waits for overlapping
 * copies to end; copies that start later read the new data.  A failed
 * forward keeps the bit (the pass copies it again).  Forwarded data is
 * flushed on the target within FWD_FLUSH_MS, ahead of the bitmap's
 * lazy clearing of the file. */

#define FWD_FLUSH_MS 100

static bool
overlaps_copy (const struct mirror *m, uint64_t off, uint64_t len)
{
  const struct list *pos;

  for (pos = m->copying.next; pos != &m->copying; pos = pos->next) {
    const struct copy *c = list_entry (pos, struct copy, node);
    if (c->off < off + len && off < c->off + c->len)
      return true;
  }
  return false;
}

static bool
overlaps_forward (const struct mirror *m, uint64_t off, uint64_t len)
{
  const struct list *pos;

  for (pos = m->forwarding.next; pos != &m->forwarding; pos = pos->next) {
    const struct blocked *b = list_entry (pos, struct blocked, fwd_node);
    if (b->off < off + len && off < b->off + b->len)
      return true;
  }
  return false;
}

/* Lag counts forwards still on their way too: they are not in the
 * bitmap any more. */
static uint64_t
lag (const struct mirror *m)
{
  return dirty_bitmap_dirty_bytes (live (m)) + m->fwd_bytes;
}

/* An async forward is over: its region is clean if the target has it,
 * else back in the bitmap for a pass. */
static void
detached_done (struct blocked *b)
{
  struct mirror *m = b->m;
  struct bitmap_store *s = m->exp->bitmap;

  m->fwd_bytes -= b->len;
  m->fwd_ops--;
  admit_held (m);               /* room in the queue now */
  if (b->forwarded == 0)
    bitmap_store_end_write_clean (s, &b->in);
  else
    bitmap_store_end_write (s, &b->in);
  if (b->own_buf)
    bufpool_put (b->own_buf, b->len);
  objcache_put (&blocked_cache, b);
  if (m->auto_blocking && lag (m) <= lag_limit (m) / 2)
    release_throttled (m);
  check_cutover (m);
  pump (m);                     /* a cancelled mirror may now let go */
}

static void retry_forwards (struct mirror *m);

static void
target_has_it (void *opaque, int err)
{
  struct blocked *b = opaque;
  struct mirror *m = b->m;

  list_del (&b->fwd_node);
  b->forwarded = err;
  if (err == 0)
    m->fwd_unflushed = true;
  if (b->x == NULL)
    detached_done (b);
  else
    throttle_or_done (b);
  retry_forwards (m);           /* forwards that waited for this one */
  if (m->cancelling)
    pump (m);                   /* the last one out lets a cancelled mirror go */
}

static void
forward (struct blocked *b)
{
  struct mirror *m = b->m;
  int r = -1;

  if (m->up && !m->cancelling && active_for_writes (m))
    r = b->cmd == IMAGE_WRITE
      ? target_pwrite (m->tgt, b->buf, b->len, b->off, b->flags, target_has_it, b)
      : target_zero (m->tgt, b->len, b->off, b->flags, target_has_it, b);
  if (r == -1) {
    if (b->x == NULL)
      detached_done (b);
    else
      throttle_or_done (b);
    return;
  }
  list_add_tail (&m->forwarding, &b->fwd_node);
}

/* Does B overlap a forward waiting ahead of it?  Overlapping forwards
 * reach the target in the guest's order. */
static bool
overlaps_waiting_before (const struct mirror *m, const struct blocked *b)
{
  const struct list *pos;

  for (pos = m->fwd_waiting.next; pos != &m->fwd_waiting; pos = pos->next) {
    const struct blocked *o = list_entry (pos, struct blocked, node);
    if (o == b)
      return false;
    if (o->off < b->off + b->len && b->off < o->off + o->len)
      return true;
  }
  return false;
}

static bool
must_wait (const struct mirror *m, const struct blocked *b)
{
  return m->up && !m->cancelling && (overlaps_copy (m, b->off, b->len)
                   || overlaps_forward (m, b->off, b->len)
                   || overlaps_waiting_before (m, b));
}

static void
retry_forwards (struct mirror *m)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &m->fwd_waiting) {
    struct blocked *b = list_entry (pos, struct blocked, node);
    if (must_wait (m, b))
      continue;
    list_del (&b->node);
    forward (b);
  }
  admit_held (m);               /* a lost target lets held writes go */
}

static void
fwd_flushed (void *opaque, int err)
{
  struct mirror *m = opaque;

  m->fwd_flushing = false;
  if (err)
    m->fwd_unflushed = true;
  if (m->cancelling)
    pump (m);                   /* the last one out lets a cancelled mirror go */
}

static void
fwd_flush_tick (void *opaque)
{
  struct mirror *m = opaque;

  if (!m->fwd_unflushed || m->fwd_flushing || !m->up || m->tgt == NULL
      || !target_can_flush (m->tgt))
    return;
  m->fwd_unflushed = false;
  m->fwd_flushing = true;
  if (target_flush (m->tgt, fwd_flushed, m) == -1)
    fwd_flushed (m, EIO);
}

/* Async mode: the write is sent to the target after the guest got its
 * acknowledgment (DRBD's protocol A).  A detached copy of it takes over
 * the bitmap intent, so its region stays recorded until the target has
 * it; the guest's own intent ends clean.  Forwards in flight count
 * toward the lag bound.
 *
 * Congestion.  When the forward queue is full (the peer takes writes
 * slower than the guest makes them), the guest's write waits for room
 * before its acknowledgment, as DRBD's on-congestion=block does: guests
 * slow to the peer's pace.  Leaving such writes to the bitmap instead
 * would cost a whole granule's copy per small write, 16 times the data
 * for 4 KiB random writes, and the lag would outrun the link.  With a
 * --bandwidth limit, for TRIM, or without memory, the write is left to
 * the bitmap. */
#define MAX_FWD_BYTES (64u << 20)
/* And no more than this many: each new write is checked against the
 * forwards in flight for overlaps, and libnbd looks up each reply among
 * its commands in flight, both by walking a list.  A queue of thousands
 * of small forwards made every write and every reply slower, the queue
 * longer, and the guest crawl. */
#define MAX_FWD_OPS 256

static uint64_t
fwd_cap (const struct mirror *m)
{
  return lag_limit (m) < MAX_FWD_BYTES ? lag_limit (m) : MAX_FWD_BYTES;
}

/* Would B overrun the queue?  An empty queue takes anything: a write
 * bigger than the cap must not wait for room that never comes. */
static bool
queue_full (const struct mirror *m, const struct blocked *b)
{
  return m->fwd_bytes > 0 && (m->fwd_bytes + b->len > fwd_cap (m)
                              || m->fwd_ops >= MAX_FWD_OPS);
}

static void detach_and_forward (struct mirror *m, struct blocked *b);

/* Congestion is write-blocking in all but name (SPEC §6.4), and logged
 * like it; it ends once the queue has drained to half, so a queue that
 * stays near full under a steady load is one episode, not thousands. */
static void
congestion_begins (struct mirror *m)
{
  if (m->congested)
    return;
  m->congested = true;
  log_info ("export %s: the target takes writes slower than they come "
            "(%u forwards, %llu bytes in flight): switching to write-blocking",
            m->exp->spec.name, m->fwd_ops, (unsigned long long) m->fwd_bytes);
}

static void
check_congestion_end (struct mirror *m)
{
  if (!m->congested || !list_empty (&m->fwd_held)
      || (m->up && (m->fwd_bytes > fwd_cap (m) / 2 || m->fwd_ops > MAX_FWD_OPS / 2)))
    return;
  m->congested = false;
  log_info ("export %s: mirror caught up: writes flow again", m->exp->spec.name);
}

/* Lets held writes go, in order, while the queue has room; once the
 * target cannot take them, they go to the bitmap. */
static void
admit_held (struct mirror *m)
{
  if (m->admitting)
    return;                     /* a forward failing at once calls back */
  m->admitting = true;
  while (!list_empty (&m->fwd_held)) {
    struct blocked *b = list_entry (m->fwd_held.next, struct blocked, node);
    bool can = m->up && !m->cancelling && active_for_writes (m);
    if (can && queue_full (m, b))
      break;                    /* the next forward to end calls again */
    list_del (&b->node);
    if (can)
      detach_and_forward (m, b);
    else
      throttle_or_done (b);     /* forwarded stays ENOTCONN: the bitmap */
  }
  m->admitting = false;
  check_congestion_end (m);
}

static void
forward_async (struct mirror *m, struct blocked *b)
{
  /* A --bandwidth limit is the bitmap's to keep: forwards would
   * bypass it (and writes coalesce in the bitmap on a slow link). */
  if (m->bandwidth || b->x->io.cmd == IMAGE_TRIM) {
    throttle_or_done (b);       /* forwarded stays ENOTCONN: the bitmap */
    return;
  }
  if (!list_empty (&m->fwd_held) || queue_full (m, b)) {
    congestion_begins (m);
    m->congestion_waits++;
    list_add_tail (&m->fwd_held, &b->node);
    return;
  }
  detach_and_forward (m, b);
}

static void
detach_and_forward (struct mirror *m, struct blocked *b)
{
  struct blocked *d = objcache_get (&blocked_cache);

  if (d == NULL) {
    throttle_or_done (b);
    return;
  }
  *d = *b;
  d->x = NULL;
  list_init (&d->node);
  if (b->cmd == IMAGE_WRITE) {
    if ((d->own_buf = bufpool_get (b->len)) == NULL) {
      objcache_put (&blocked_cache, d);
      throttle_or_done (b);
      return;
    }
    memcpy (d->own_buf, b->buf, b->len);
    d->buf = d->own_buf;
  }
  bitmap_store_share_intent (m->exp->bitmap, &d->in, b->x->intent);
  m->fwd_bytes += d->len;
  m->fwd_ops++;
  b->forwarded = 0;             /* D holds the region now */
  if (must_wait (m, d))
    list_add_tail (&m->fwd_waiting, &d->node);
  else
    forward (d);
  throttle_or_done (b);
}

uint64_t
mirror_target_heard_ns (const struct mirror *m)
{
  return m && m->tgt ? target_heard_ns (m->tgt) : 0;
}

uint64_t
mirror_pending_bytes (const struct mirror *m)
{
  return m ? m->fwd_bytes : 0;
}

bool
mirror_forwards_writes (const struct mirror *m)
{
  return m && !m->async && m->up && active_for_writes (m);
}

int
mirror_guest_write (struct mirror *m, struct blk_req *x, mirror_write_fn done)
{
  struct image_io *io = &x->io;
  struct blocked *b;

  if (m == NULL || !active_for_writes (m)
      || (b = objcache_get (&blocked_cache)) == NULL)
    return 0;
  b->x = x;
  b->done = done;
  b->m = m;
  b->forwarded = ENOTCONN;      /* until the target says otherwise */
  b->cmd = io->cmd;
  /* In sync mode a FUA write is stable on both sides before its ack
   * (async forwards are after it: FUA there buys nothing). */
  b->flags = (io->flags & IMAGE_FUA) && !m->async ? TARGET_FUA : 0;
  b->buf = io->buf;
  b->off = io->offset;
  b->len = io->count;
  list_init (&b->node);
  if (!m->up) {
    throttle_or_done (b);
    return 1;
  }
  if (m->fwd_flush_timer == NULL)
    m->fwd_flush_timer = loop_add_timer (m->loop, FWD_FLUSH_MS, FWD_FLUSH_MS,
                                         fwd_flush_tick, m);
  if (m->async) {
    forward_async (m, b);
    return 1;
  }
  if (must_wait (m, b)) {
    list_add_tail (&m->fwd_waiting, &b->node);
    return 1;
  }
  forward (b);
  return 1;
}

static void
flushed (void *opaque, int err)
{
  struct blocked *b = opaque;

  b->done (b->x, 0);
  objcache_put (&blocked_cache, b);
}

int
mirror_guest_flush (struct mirror *m, struct blk_req *x, mirror_write_fn done)
{
  struct blocked *b;

  if (m == NULL || m->async || !m->up || !active_for_writes (m)
      || (b = objcache_get (&blocked_cache)) == NULL)
    return 0;
  b->x = x;
  b->done = done;
  b->m = m;
  if (target_flush (m->tgt, flushed, b) == -1) {
    objcache_put (&blocked_cache, b);
    return 0;
  }
  return 1;
}

/* ---- Cut-over ---- */

/* Through the final flush too: a write let through then would be
 * acknowledged on the source and never reach the target. */
bool
mirror_holds_writes (const struct mirror *m)
{
  return m && m->state == MIRROR_CUTOVER;
}

/* The cut-over has its outcome: ERR is 0 (the export now refuses
 * writes) or an errno, WHY saying what happened.  Given up on with the
 * mirror still sound, the job goes back to what it was, every dirty bit
 * kept; either way the held writes go on (refused after a cut-over,
 * started otherwise), and only then does the admin hear of it. */
static void
cutover_end (struct mirror *m, int err, const char *why)
{
  mirror_cutover_fn done = m->cutover_done;
  double ms = (double) (loop_now_ns () - m->hold_start_ns) / 1e6;

  m->cutover_done = NULL;
  loop_source_remove (m->cutover_timer);
  m->cutover_timer = NULL;
  if (err == 0) {
    export_cut_over (m->exp);   /* writes are refused from now on */
    set_state (m, MIRROR_COMPLETED);
    job_forget (m);
    log_info ("export %s: cut over to %s; writes held %.1f ms",
              m->exp->spec.name, m->label, ms);
  }
  else if (m->state == MIRROR_CUTOVER) {
    set_state (m, m->before_cutover);
    mirror_kick (m);
  }
  export_release_held (m->exp);
  if (err)
    error_set (err, "%s", why);   /* for DONE; the errno's text follows */
  if (done)
    done (m->cutover_opaque, err, ms);
  if (err == 0) {
    m->cancelling = true;       /* the job is over: let the target go */
    pump (m);
  }
}

static void
final_flush_done (void *opaque, int err)
{
  struct mirror *m = opaque;
  char why[256];

  m->final_flush = false;
  if (m->cutover_done == NULL || m->flush_seq != m->cutover_seq) {
    /* The flush of a cut-over given up on meanwhile: it proves nothing
     * about what a newer one has to drain, so that one flushes anew. */
    check_cutover (m);
    return;
  }
  if (err) {
    snprintf (why, sizeof why, "cut-over given up, the target's final flush "
              "failed (%s); the mirror goes on (%s)", strerror (err),
              mirror_state_name (m->before_cutover));
    cutover_end (m, EIO, why);
    return;
  }
  if (dirty_bitmap_dirty_bytes (live (m)) == 0)
    bitmap_store_clear (m->exp->bitmap, 0, 0);
  cutover_end (m, 0, NULL);
}

/* What a cut-over still waits for, for the admin. */
static void
cutover_left (const struct mirror *m, char *buf, size_t len)
{
  char size[32];
  unsigned writes = m->exp->writes_in_flight;

  if (remaining (m) == 0 && writes == 0) {
    snprintf (buf, len, "nothing left to copy, the target's flush had not returned");
    return;
  }
  if (writes == 0)
    snprintf (buf, len, "%s (%llu bytes) still to copy",
              size_format (remaining (m), size, sizeof size),
              (unsigned long long) remaining (m));
  else
    snprintf (buf, len, "%s (%llu bytes) still to copy and %u guest write%s "
              "in flight", size_format (remaining (m), size, sizeof size),
              (unsigned long long) remaining (m), writes, writes == 1 ? "" : "s");
}

static void
cutover_expired (void *opaque)
{
  struct mirror *m = opaque;
  double s = (double) (loop_now_ns () - m->hold_start_ns) / 1e9;
  char left[160], why[384];

  cutover_left (m, left, sizeof left);
  log_warn ("export %s: cut-over to %s timed out after %.3g s with %s: "
            "held writes go on, the mirror stays %s", m->exp->spec.name,
            m->label, s, left, mirror_state_name (m->before_cutover));
  snprintf (why, sizeof why, "cut-over gave up after %.3g s with %s; writes "
            "flow again and the mirror goes on (%s)", s, left,
            mirror_state_name (m->before_cutover));
  cutover_end (m, ETIMEDOUT, why);
}

/* Cut-over is done when no guest write is in flight, nothing is dirty
 * and the target flushed. */
static void
check_cutover (struct mirror *m)
{
  char why[600];

  if (m->cutover_done == NULL || m->final_flush)
    return;
  if (m->state != MIRROR_CUTOVER) {
    set_error (m, "%s", m->error[0] ? m->error : "cut-over interrupted");
    snprintf (why, sizeof why, "cut-over failed: %s", m->error);
    cutover_end (m, ECANCELED, why);
    return;
  }
  if (m->in_pass || m->exp->writes_in_flight > 0 || m->fwd_bytes > 0)
    return;                     /* async forwards are data on its way */
  if (dirty_bitmap_dirty_bytes (live (m)) > 0) {
    mirror_kick (m);
    return;
  }
  m->final_flush = true;
  m->flush_seq = m->cutover_seq;
  if (target_flush (m->tgt, final_flush_done, m) == -1)
    final_flush_done (m, EIO);
}

int
mirror_cutover (struct mirror *m, unsigned timeout_ms, mirror_cutover_fn done,
                void *opaque)
{
  if (m->state != MIRROR_READY && m->state != MIRROR_SYNCING)
    return error_set (EINVAL, "mirror is %s, not ready", mirror_state_name (m->state));
  if (!m->up)
    return error_set (ENOTCONN, "mirror target is not connected");
  if (timeout_ms > 0) {
    m->cutover_timer = loop_add_timer (m->loop, timeout_ms, 0, cutover_expired, m);
    if (m->cutover_timer == NULL)
      return -1;
  }
  m->cutover_done = done;
  m->cutover_opaque = opaque;
  m->cutover_seq++;
  m->hold_start_ns = loop_now_ns ();
  m->before_cutover = m->state;
  set_state (m, MIRROR_CUTOVER);
  /* check_cutover() from the loop (a pass, or the end of the one
   * running, leads there): DONE never runs inside this call. */
  mirror_kick (m);
  return 0;
}

void
mirror_guest_write_done (struct mirror *m)
{
  if (m == NULL)
    return;
  if (m->state == MIRROR_CUTOVER)
    check_cutover (m);
  else
    mirror_kick (m);
}
