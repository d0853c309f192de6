/* SPDX-License-Identifier: MIT */
/* The role gate (gate.h).
 *
 * Design note.  The gate is where a write is admitted, and the only
 * such place: the writability test, the first-write hook and the hold
 * all run here, in this order, before any layer below has seen the
 * write, so a write refused or held has marked no dirty bit and
 * reached no mirror.  A write counted in flight (write_begin) stays
 * counted until its reply has gone up (write_end): a cut-over that saw
 * the count at zero knows no admitted write is still on its way down —
 * a write waiting below for its dirty bit to reach the disk included.
 * Held writes live on a list through req->held_node; gate_release()
 * empties it in order, and a hold that is still on (a new cut-over)
 * only concerns writes that arrive later.
 */
#include <config.h>

#include <errno.h>

#include "common/error.h"
#include "common/log.h"
#include "gate.h"

static struct gate *
of (struct blk *b)
{
  return (struct gate *) b;
}

static bool
writable (struct gate *g)
{
  return g->ops->writable (g->host);
}

static void
write_replied (struct image_io *io, int err)
{
  struct gate *g = io->opaque;
  void *host = g->host;
  void (*end) (void *) = g->ops->write_end;

  blk_req_return (blk_req_of (io), err);
  end (host);                   /* G's request may be freed: only HOST */
}

/* Admitted: down it goes. */
static void
pass (struct gate *g, struct blk_req *req)
{
  if (g->ops->write_begin && blk_req_writes_in (req, blk_size (&g->blk))) {
    g->ops->write_begin (g->host);
    blk_req_push (req, write_replied, g);
  }
  blk_submit_lower (&g->blk, req);
}

static void
gate_write (struct blk *b, struct blk_req *req)
{
  struct gate *g = of (b);

  g->stats->requests++;
  if (!writable (g)) {
    blk_complete_later (b, req, EPERM);
    return;
  }
  if (g->ops->before_write && g->ops->before_write (g->host) == -1) {
    log_err ("%s", error_get ());
    blk_complete_later (b, req, EIO);
    return;
  }
  if (req->io.cmd == IMAGE_WRITE)
    g->stats->bytes_written += req->io.count;
  if (g->ops->holding && g->ops->holding (g->host)
      && blk_req_writes_in (req, blk_size (b))) {
    list_add_tail (&g->held, &req->held_node);   /* a cut-over drains */
    g->nr_held++;
    return;
  }
  pass (g, req);
}

static void
gate_other (struct blk *b, struct blk_req *req)
{
  struct gate *g = of (b);

  g->stats->requests++;
  if (req->io.cmd == IMAGE_READ && g->count_reads)
    g->stats->bytes_read += req->io.count;
  blk_submit_lower (b, req);
}

static unsigned
gate_flags (struct blk *b)
{
  struct gate *g = of (b);
  unsigned f = blk_flags (b->lower);

  if (writable (g) || (g->ops->looks_writable && g->ops->looks_writable (g->host)))
    return f;
  return f | BLK_READ_ONLY;
}

static const struct blk_ops gate_ops = {
  .name = "gate",
  .read = gate_other, .write = gate_write, .zero = gate_write,
  .trim = gate_write, .flush = gate_other, .block_status = gate_other,
  .cache = gate_other, .flags = gate_flags,
};

void
gate_init (struct gate *g, struct blk *lower, const struct gate_ops *ops,
           void *host, struct gate_stats *stats, bool count_reads)
{
  blk_init (&g->blk, &gate_ops, lower, NULL);
  g->ops = ops;
  g->host = host;
  g->stats = stats;
  g->count_reads = count_reads;
  list_init (&g->held);
  g->nr_held = 0;
}

void
gate_release (struct gate *g)
{
  while (!list_empty (&g->held)) {
    struct blk_req *req = list_entry (g->held.next, struct blk_req, held_node);
    list_del (&req->held_node);
    g->nr_held--;
    if (!writable (g))
      blk_complete_later (&g->blk, req, EPERM);
    else
      pass (g, req);
  }
}
