/* SPDX-License-Identifier: MIT */
/* An export's block stack (export.h): built here, in one place, from
 * what the spec opened — the image, the bitmap — and the gates' view
 * of the export's role.
 *
 * Design note.  Each layer knows only the one below it and answers to
 * the block interface; what a layer needs to know of the export (is it
 * writable now? is a cut-over holding writes? which mirror job runs?)
 * it asks through the host operations given here, so the layers have
 * no include of mirrord/ and are tested alone (tests/unit/test-*-layer).
 * The layers live inside struct export: they are built once, when the
 * export is added, and die with it; the job they consult (e->mirror)
 * changes under them, which replicate reads through a pointer.
 */
#include <config.h>

#include "ha/ha.h"
#include "export.h"
#include "mirror.h"

bool
export_writable (const struct export *e)
{
  return !e->spec.readonly && !e->img->readonly && !e->cut_over
    && (e->ha ? ha_is_primary (e->ha) : e->spec.role == ROLE_PRIMARY);
}

bool
export_writable_by_peer (const struct export *e)
{
  return !e->spec.readonly && !e->img->readonly && e->ha
    && !ha_is_primary (e->ha);
}

uint64_t
export_size (const struct export *e)
{
  return e->img->size;
}

struct blk *
export_blk (struct export *e)
{
  return &e->gate.blk;
}

struct blk *
export_peer_blk (struct export *e)
{
  return &e->peer_gate.blk;
}

/* ---- The clients' gate ---- */

static bool
client_writable (void *host)
{
  return export_writable (host);
}

static bool
client_holding (void *host)
{
  return mirror_holds_writes (((struct export *) host)->mirror);
}

/* A primary's first write without its peer starts a generation (ha.h). */
static int
client_before_write (void *host)
{
  struct export *e = host;

  return e->ha ? ha_before_client_write (e->ha) : 0;
}

static void
client_write_begin (void *host)
{
  ((struct export *) host)->writes_in_flight++;
}

static void
client_write_end (void *host)
{
  struct export *e = host;

  e->writes_in_flight--;
  mirror_guest_write_done (e->mirror);  /* a cut-over waits for the last */
}

static bool
client_looks_writable (void *host)
{
  struct export *e = host;

  return e->ha && ha_looks_writable (e->ha) && !e->spec.readonly && !e->img->readonly;
}

static const struct gate_ops client_gate_ops = {
  .looks_writable = client_looks_writable,
  .writable = client_writable, .holding = client_holding,
  .before_write = client_before_write,
  .write_begin = client_write_begin, .write_end = client_write_end,
};

/* ---- The HA peer's gate ---- */

static bool
peer_writable (void *host)
{
  return export_writable_by_peer (host);
}

static const struct gate_ops peer_gate_ops = {
  .writable = peer_writable,
};

void
export_build_stack (struct export *e)
{
  struct blk *below;

  blk_image_init (&e->base, e->img);
  replicate_init (&e->rep, &e->base.blk, &e->mirror);
  below = &e->rep.blk;
  if (e->bitmap) {
    tracker_init (&e->trk, below, e->bitmap, e->spec.name);
    below = &e->trk.blk;
  }
  gate_init (&e->gate, below, &client_gate_ops, e, &e->stats, true);
  /* Replication into a secondary: the primary tracks these regions in
   * its own bitmap; ours only counts our own clients' writes. */
  gate_init (&e->peer_gate, &e->base.blk, &peer_gate_ops, e, &e->stats, false);
}
