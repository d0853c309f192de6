/* SPDX-License-Identifier: MIT */
/* The mirror's copy engine (mirror-copy.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/log.h"
#include "export.h"
#include "mirror-copy.h"
#include "mirror-cutover.h"
#include "mirror-fwd.h"
#include "mirror-int.h"
#include "target.h"

#define MAX_OPS 16                    /* copies in flight */
#define MAX_CHUNK (4u << 20)          /* bytes per copy */
#define MAX_EXTENTS 64
#define READY_BUDGET_NS 50000000u     /* what remains drains in 50 ms */
#define READY_MIN (4u << 20)

struct copy {
  struct mirror *m;
  struct list node;             /* m->copy.copying */
  uint64_t off, len;
  struct image_extents ext;
  void *buf;
  size_t buf_size;
  uint64_t target_zero;         /* bytes from OFF the target reads as zero */
  unsigned pending;             /* target commands in flight */
  int err;
  struct image_io io;
};

void
mirror_copy_init (struct mirror *m, uint64_t bandwidth)
{
  m->copy.tokens = (int64_t) bandwidth;
  m->copy.window_start_ns = loop_now_ns ();
  list_init (&m->copy.copying);
}

void
mirror_copy_free (struct mirror *m)
{
  loop_cancel_deferred (m->loop, &m->copy.kick_later);
  free (m->copy.copied);
  m->copy.copied = NULL;
}

bool
mirror_copy_in_pass (const struct mirror *m)
{
  return m->copy.pass != PASS_IDLE;
}

bool
mirror_copy_busy (const struct mirror *m)
{
  return m->copy.pass != PASS_IDLE || m->copy.ops > 0;
}

uint64_t
mirror_copy_remaining (const struct mirror *m)
{
  uint64_t d = mirror_bits_dirty (m);
  return d > m->copy.pass_copied ? d - m->copy.pass_copied : 0;
}

bool
mirror_copy_overlaps (const struct mirror *m, uint64_t off, uint64_t len)
{
  const struct list *pos;

  for (pos = m->copy.copying.next; pos != &m->copy.copying; pos = pos->next) {
    const struct copy *c = list_entry (pos, struct copy, node);
    if (c->off < off + len && off < c->off + c->len)
      return true;
  }
  return false;
}

/* ---- Copies ---- */

/* Remembers a copied range; it is cleared once the target flushed. */
static void
note_copied (struct mirror *m, uint64_t off, uint64_t len)
{
  struct mirror_copy_state *s = &m->copy;

  if (s->nr_copied > 0) {
    struct mirror_range *last = &s->copied[s->nr_copied - 1];
    if (last->off + last->len == off) {
      last->len += len;
      return;
    }
  }
  if (s->nr_copied == s->cap_copied) {
    size_t cap = s->cap_copied ? s->cap_copied * 2 : 64;
    void *n = realloc (s->copied, cap * sizeof *s->copied);
    if (n == NULL) {
      /* Not remembered: it stays dirty and is copied again. */
      mirror_bits_mark (m, off, len);
      return;
    }
    s->copied = n;
    s->cap_copied = cap;
  }
  s->copied[s->nr_copied].off = off;
  s->copied[s->nr_copied].len = len;
  s->nr_copied++;
}

static void
copy_end (struct copy *c, int err)
{
  struct mirror *m = c->m;

  if (err) {
    /* Copy it again in a later pass: the mark lands in the successor. */
    mirror_bits_mark (m, c->off, c->len);
    if (m->up)
      log_debug ("mirror %s: copy %llu+%llu failed: %s", m->label,
                 (unsigned long long) c->off, (unsigned long long) c->len,
                 strerror (err));
  }
  else {
    m->copy.done_bytes += c->len;
    m->copy.window_bytes += c->len;
    m->copy.pass_copied += c->len;
    note_copied (m, c->off, c->len);
  }
  bufpool_put (c->buf, c->buf_size);
  image_extents_free (&c->ext);
  list_del (&c->node);
  free (c);
  m->copy.ops--;
  mirror_fwd_retry (m);
  mirror_copy_pump (m);
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
  return target_can_fast_zero (m->tgt) && !m->link.fast_zero_slow;
}

static void
fast_zero_done (void *opaque, int err)
{
  struct fast_zero *z = opaque;
  struct copy *c = z->c;
  struct mirror *m = c->m;

  if (err == ENOTSUP) {
    if (!m->link.fast_zero_slow)
      log_info ("export %s: mirror target %s zeroes slowly (FAST_ZERO refused): "
                "plain WRITE_ZEROES from now on", m->exp->spec.name, m->label);
    m->link.fast_zero_slow = true;
    err = target_zero (m->tgt, z->len, z->pos, 0, piece_done, c) == 0 ? 0 : EIO;
    if (err == 0) {
      free (z);
      return;                   /* piece_done() follows */
    }
  }
  else if (err == 0)
    m->copy.fast_zero_bytes += z->len;
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
    m->copy.tokens += (int64_t) len;    /* reserved by copy_start(); not data */
  if (zero && pos + len <= c->off + c->target_zero) {
    m->copy.zeroes_skipped += len;      /* already zero there: nothing to send */
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

static void
copy_start (struct mirror *m, uint64_t off, uint64_t len)
{
  struct copy *c;

  /* A guest write being sent to the target at the same time as to the
   * image (sync mode): this copy could read the image before that write
   * lands and reach the target after it.  Leave the range to the next
   * pass. */
  if (mirror_fwd_overlaps (m, off, len)) {
    mirror_bits_mark (m, off, len);
    return;
  }
  c = calloc (1, sizeof *c);
  m->copy.ops++;
  if (c == NULL || (c->buf = bufpool_get (len)) == NULL) {
    free (c);
    m->copy.ops--;
    mirror_bits_mark (m, off, len);
    return;
  }
  /* --bandwidth counts the data sent.  A copy reserves its length when
   * it starts, or the copies started before the first one sends would
   * all spend the same budget (16 of them: a burst 16 times too big);
   * what turns out to be zeroes is given back. */
  if (m->bandwidth)
    m->copy.tokens -= (int64_t) len;
  c->m = m;
  c->off = off;
  c->len = len;
  list_add_tail (&m->copy.copying, &c->node);
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
forget_pass (struct mirror *m)
{
  m->copy.pass = PASS_IDLE;
  m->copy.nr_copied = 0;
  m->copy.pass_copied = 0;
}

/* Syncing, and what is left would drain within the cut-over budget at
 * the measured rate? */
static bool
converged (const struct mirror *m)
{
  return mirror_bits_dirty (m)
    <= (uint64_t) (m->copy.rate * READY_BUDGET_NS / 1e9) + READY_MIN;
}

static void
pass_end (void *opaque, int err)
{
  struct mirror *m = opaque;

  if (err == 0)   /* the target has these copies on stable storage */
    mirror_bits_pass_commit (m, m->copy.copied, m->copy.nr_copied);
  else
    mirror_bits_pass_abandon (m);
  forget_pass (m);
  m->copy.passes++;
  mirror_fwd_caught_up (m);
  if (mirror_stopping (m) || !m->up) {
    mirror_copy_pump (m);
    return;
  }
  if (mirror_at (m) == MF_SYNCING && converged (m))
    mirror_go (m, MF_READY, "converged");
  if (mirror_at (m) == MF_CUTOVER) {
    mirror_cutover_check (m);
    return;
  }
  if (mirror_bits_dirty (m) > 0)
    mirror_kick (m);
}

static uint64_t
chunk_size (const struct mirror *m)
{
  return m->up && target_max_request (m->tgt) < MAX_CHUNK
    ? target_max_request (m->tgt) : MAX_CHUNK;
}

/* Starts copies while the pass has room and budget. */
static void
fill_pass (struct mirror *m)
{
  struct mirror_copy_state *s = &m->copy;
  uint64_t size = export_size (m->exp), chunk = chunk_size (m), start, len;

  while (m->up && !mirror_stopping (m) && s->ops < MAX_OPS && s->cursor < size
         && (m->bandwidth == 0 || s->tokens > 0)) {
    if (mirror_bits_next_pending (m, s->cursor, size - s->cursor, &start, &len) == 1) {
      s->cursor = size;
      break;
    }
    if (len > chunk)
      len = chunk;
    /* Under --bandwidth no copy is much bigger than the budget left;
     * whole granules, or their bits could never be cleared. */
    if (m->bandwidth && len > (uint64_t) s->tokens) {
      uint64_t g = mirror_bits_granularity (m);
      uint64_t budget = (uint64_t) s->tokens / g * g;
      len = budget < g ? g : budget;
    }
    s->cursor = start + len;
    copy_start (m, start, len);
  }
}

void
mirror_copy_pump (struct mirror *m)
{
  if (m->copy.pass != PASS_COPYING)
    goto idle;
  fill_pass (m);
  if (m->copy.ops > 0 || m->copy.pass != PASS_COPYING)
    return;
  if (m->copy.cursor >= export_size (m->exp) && m->up && !mirror_stopping (m)) {
    m->copy.pass = PASS_FLUSHING;
    if (target_flush (m->tgt, pass_end, m) == -1)
      pass_end (m, EIO);
    return;
  }
  if (mirror_stopping (m) || !m->up) {
    mirror_bits_pass_abandon (m);       /* keep every bit */
    forget_pass (m);
  }
 idle:
  mirror_release_if_done (m);
}

static void
pass_start (void *opaque)
{
  struct mirror *m = opaque;
  enum mirror_fsm_state st = mirror_at (m);

  m->copy.kick_queued = false;
  if (m->copy.pass != PASS_IDLE || !m->up
      || (st != MF_SYNCING && st != MF_READY && st != MF_CUTOVER))
    return;
  if (mirror_bits_dirty (m) == 0) {
    if (st == MF_SYNCING)
      mirror_go (m, MF_READY, "nothing dirty");
    if (st == MF_CUTOVER)
      mirror_cutover_check (m);
    return;
  }
  if (mirror_bits_pass_begin (m) == -1) {
    log_err ("mirror %s: %s", m->label, error_get ());
    return;
  }
  m->copy.pass = PASS_COPYING;
  m->copy.cursor = 0;
  m->copy.pass_copied = 0;
  m->copy.nr_copied = 0;
  mirror_copy_pump (m);
}

void
mirror_kick (struct mirror *m)
{
  if (m == NULL || m->copy.kick_queued || m->copy.pass != PASS_IDLE)
    return;
  m->copy.kick_queued = true;
  memset (&m->copy.kick_later, 0, sizeof m->copy.kick_later);
  loop_defer (m->loop, &m->copy.kick_later, pass_start, m);
}

void
mirror_copy_tick (struct mirror *m)
{
  struct mirror_copy_state *s = &m->copy;
  uint64_t now = loop_now_ns ();
  double dt = (double) (now - s->window_start_ns) / 1e9;

  if (dt >= 1.0) {
    double inst = (double) s->window_bytes / dt;
    s->rate = s->rate == 0 ? inst : 0.5 * s->rate + 0.5 * inst;
    s->window_bytes = 0;
    s->window_start_ns = now;
  }
  if (m->bandwidth) {
    s->tokens += (int64_t) (m->bandwidth * MIRROR_TICK_MS / 1000);
    if (s->tokens > (int64_t) m->bandwidth)
      s->tokens = (int64_t) m->bandwidth;
  }
}
