/* SPDX-License-Identifier: MIT */
/* Guest writes through the mirror (mirror-fwd.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bufpool.h"
#include "common/log.h"
#include "common/objcache.h"
#include "export.h"
#include "mirror-copy.h"
#include "mirror-cutover.h"
#include "mirror-fwd.h"
#include "mirror-int.h"
#include "target.h"

#define LAG_LIMIT (256u << 20)        /* async: beyond this, block writes */

uint64_t
mirror_fwd_lag_limit (const struct mirror *m)
{
  return m->exp->spec.max_lag ? m->exp->spec.max_lag : LAG_LIMIT;
}

struct blocked {
  struct list node;
  struct blk_req *x;            /* NULL once detached (async) */
  mirror_write_fn done;
  struct mirror *m;
  int forwarded;                /* 0 once the target has the write */
  struct list fwd_node;         /* m->fwd.forwarding while at the target */
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

static void admit_held (struct mirror *m);

void
mirror_fwd_release (struct mirror *m)
{
  if (m->fwd.auto_blocking)
    log_info ("export %s: mirror caught up: writes flow again", m->exp->spec.name);
  m->fwd.auto_blocking = false;
  while (!list_empty (&m->fwd.throttled)) {
    struct blocked *b = list_entry (m->fwd.throttled.next, struct blocked, node);
    list_del (&b->node);
    b->done (b->x, b->forwarded);
    objcache_put (&blocked_cache, b);
  }
}

/* ---- The target's life ---- */
/* ---- Write blocking ---- */

/* Every state but the terminal ones mirrors guest writes. */
static bool
active_for_writes (const struct mirror *m)
{
  return !mirror_stopping (m);
}

/* The write is on the target (sync mode) or needs not be: hold its
 * acknowledgment while the lag is over the bound.  Guests are slowed
 * to the mirror's pace; the bound holds. */
static void
throttle_or_done (struct blocked *b)
{
  struct mirror *m = b->m;

  if (active_for_writes (m) && m->up && mirror_fwd_lag (m) > mirror_fwd_lag_limit (m)) {
    if (!m->fwd.auto_blocking)
      log_info ("export %s: mirror lags %llu bytes (max-lag %llu): "
                "switching to write-blocking", m->exp->spec.name,
                (unsigned long long) mirror_fwd_lag (m),
                (unsigned long long) mirror_fwd_lag_limit (m));
    m->fwd.auto_blocking = true;
    list_add_tail (&m->fwd.throttled, &b->node);
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

bool
mirror_fwd_overlaps (const struct mirror *m, uint64_t off, uint64_t len)
{
  const struct list *pos;

  for (pos = m->fwd.forwarding.next; pos != &m->fwd.forwarding; pos = pos->next) {
    const struct blocked *b = list_entry (pos, struct blocked, fwd_node);
    if (b->off < off + len && off < b->off + b->len)
      return true;
  }
  return false;
}

/* Lag counts forwards still on their way too: they are not in the
 * bitmap any more. */
uint64_t
mirror_fwd_lag (const struct mirror *m)
{
  return mirror_bits_dirty (m) + m->fwd.bytes;
}

/* An async forward is over: its region is clean if the target has it,
 * else back in the bitmap for a pass. */
static void
detached_done (struct blocked *b)
{
  struct mirror *m = b->m;

  m->fwd.bytes -= b->len;
  m->fwd.ops--;
  admit_held (m);               /* room in the queue now */
  mirror_bits_intent_end (m, &b->in, b->forwarded == 0);
  if (b->own_buf)
    bufpool_put (b->own_buf, b->len);
  objcache_put (&blocked_cache, b);
  mirror_fwd_caught_up (m);
  mirror_cutover_check (m);
  mirror_copy_pump (m);                     /* a cancelled mirror may now let go */
}


static void
target_has_it (void *opaque, int err)
{
  struct blocked *b = opaque;
  struct mirror *m = b->m;

  list_del (&b->fwd_node);
  b->forwarded = err;
  if (err == 0)
    m->fwd.unflushed = true;
  if (b->x == NULL)
    detached_done (b);
  else
    throttle_or_done (b);
  mirror_fwd_retry (m);           /* forwards that waited for this one */
  if (mirror_stopping (m))
    mirror_copy_pump (m);                   /* the last one out lets a cancelled mirror go */
}

static void
forward (struct blocked *b)
{
  struct mirror *m = b->m;
  int r = -1;

  if (m->up && !mirror_stopping (m) && active_for_writes (m))
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
  list_add_tail (&m->fwd.forwarding, &b->fwd_node);
}

/* Does B overlap a forward waiting ahead of it?  Overlapping forwards
 * reach the target in the guest's order. */
static bool
overlaps_waiting_before (const struct mirror *m, const struct blocked *b)
{
  const struct list *pos;

  for (pos = m->fwd.waiting.next; pos != &m->fwd.waiting; pos = pos->next) {
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
  return m->up && !mirror_stopping (m) && (mirror_copy_overlaps (m, b->off, b->len)
                   || mirror_fwd_overlaps (m, b->off, b->len)
                   || overlaps_waiting_before (m, b));
}

void
mirror_fwd_retry (struct mirror *m)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &m->fwd.waiting) {
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

  m->fwd.flushing = false;
  if (err)
    m->fwd.unflushed = true;
  if (mirror_stopping (m))
    mirror_copy_pump (m);                   /* the last one out lets a cancelled mirror go */
}

static void
fwd_flush_tick (void *opaque)
{
  struct mirror *m = opaque;

  if (!m->fwd.unflushed || m->fwd.flushing || !m->up || m->tgt == NULL
      || !target_can_flush (m->tgt))
    return;
  m->fwd.unflushed = false;
  m->fwd.flushing = true;
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
  return mirror_fwd_lag_limit (m) < MAX_FWD_BYTES ? mirror_fwd_lag_limit (m) : MAX_FWD_BYTES;
}

/* Would B overrun the queue?  An empty queue takes anything: a write
 * bigger than the cap must not wait for room that never comes. */
static bool
queue_full (const struct mirror *m, const struct blocked *b)
{
  return m->fwd.bytes > 0 && (m->fwd.bytes + b->len > fwd_cap (m)
                              || m->fwd.ops >= MAX_FWD_OPS);
}

static void detach_and_forward (struct mirror *m, struct blocked *b);

/* Congestion is write-blocking in all but name (SPEC §6.4), and logged
 * like it; it ends once the queue has drained to half, so a queue that
 * stays near full under a steady load is one episode, not thousands. */
static void
congestion_begins (struct mirror *m)
{
  if (m->fwd.congested)
    return;
  m->fwd.congested = true;
  log_info ("export %s: the target takes writes slower than they come "
            "(%u forwards, %llu bytes in flight): switching to write-blocking",
            m->exp->spec.name, m->fwd.ops, (unsigned long long) m->fwd.bytes);
}

static void
check_congestion_end (struct mirror *m)
{
  if (!m->fwd.congested || !list_empty (&m->fwd.held)
      || (m->up && (m->fwd.bytes > fwd_cap (m) / 2 || m->fwd.ops > MAX_FWD_OPS / 2)))
    return;
  m->fwd.congested = false;
  log_info ("export %s: mirror caught up: writes flow again", m->exp->spec.name);
}

/* Lets held writes go, in order, while the queue has room; once the
 * target cannot take them, they go to the bitmap. */
static void
admit_held (struct mirror *m)
{
  if (m->fwd.admitting)
    return;                     /* a forward failing at once calls back */
  m->fwd.admitting = true;
  while (!list_empty (&m->fwd.held)) {
    struct blocked *b = list_entry (m->fwd.held.next, struct blocked, node);
    bool can = m->up && !mirror_stopping (m) && active_for_writes (m);
    if (can && queue_full (m, b))
      break;                    /* the next forward to end calls again */
    list_del (&b->node);
    if (can)
      detach_and_forward (m, b);
    else
      throttle_or_done (b);     /* forwarded stays ENOTCONN: the bitmap */
  }
  m->fwd.admitting = false;
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
  if (!list_empty (&m->fwd.held) || queue_full (m, b)) {
    congestion_begins (m);
    m->fwd.congestion_waits++;
    list_add_tail (&m->fwd.held, &b->node);
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
  mirror_bits_intent_share (m, &d->in, b->x->intent);
  m->fwd.bytes += d->len;
  m->fwd.ops++;
  b->forwarded = 0;             /* D holds the region now */
  if (must_wait (m, d))
    list_add_tail (&m->fwd.waiting, &d->node);
  else
    forward (d);
  throttle_or_done (b);
}

uint64_t
mirror_pending_bytes (const struct mirror *m)
{
  return m ? m->fwd.bytes : 0;
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
  if (m->fwd.flush_timer == NULL)
    m->fwd.flush_timer = loop_add_timer (m->loop, FWD_FLUSH_MS, FWD_FLUSH_MS,
                                         fwd_flush_tick, m);
  if (m->async) {
    forward_async (m, b);
    return 1;
  }
  if (must_wait (m, b)) {
    list_add_tail (&m->fwd.waiting, &b->node);
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

void
mirror_fwd_init (struct mirror *m)
{
  list_init (&m->fwd.throttled);
  list_init (&m->fwd.held);
  list_init (&m->fwd.waiting);
  list_init (&m->fwd.forwarding);
}

void
mirror_fwd_free (struct mirror *m)
{
  loop_source_remove (m->fwd.flush_timer);
  m->fwd.flush_timer = NULL;
}

bool
mirror_fwd_idle (const struct mirror *m)
{
  return m->fwd.bytes == 0 && list_empty (&m->fwd.waiting);
}

/* Guarantee 4: writes held by an over-long lag go again once the mirror
 * has caught up (to half the bound, so it does not flap). */
void
mirror_fwd_caught_up (struct mirror *m)
{
  if (m->fwd.auto_blocking && mirror_fwd_lag (m) <= mirror_fwd_lag_limit (m) / 2)
    mirror_fwd_release (m);
}

void
mirror_fwd_tick (struct mirror *m)
{
  if (m->fwd.auto_blocking
      && (mirror_bits_dirty (m) <= mirror_fwd_lag_limit (m) / 2 || !m->up))
    mirror_fwd_release (m);
}
