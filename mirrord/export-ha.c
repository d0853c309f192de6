/* SPDX-License-Identifier: MIT */
/* An export's HA pair, opened with what ha/ needs of the export: its
 * mirror job to the peer, its dirty bits, and the daemon's libnbd
 * plumbing for the peer link (ha.h's struct ha_host_ops, peer.h's
 * struct peer_nbd_client).  So ha/ includes nothing from mirrord/, and
 * the mirror job's own API stays the daemon's business. */
#include <config.h>

#include <errno.h>
#include <stdio.h>

#include "common/error.h"
#include "ha/ha.h"
#include "ha/peer.h"
#include "export.h"
#include "mirror.h"
#include "target.h"
#include "tls-worker.h"

static struct export *
of (void *host)
{
  return host;
}

static bool
mirror_connected (void *host)
{
  struct mirror *m = of (host)->mirror;

  return m && (mirror_state (m) == MIRROR_SYNCING
               || mirror_state (m) == MIRROR_READY);
}

static bool
mirror_ready (void *host)
{
  struct mirror *m = of (host)->mirror;

  return m && mirror_state (m) == MIRROR_READY;
}

static bool
active (void *host)
{
  struct mirror *m = of (host)->mirror;

  return m && mirror_active (m);
}

static bool
idle (void *host)
{
  struct mirror *m = of (host)->mirror;

  return m == NULL || mirror_idle (m);
}

static void
cancel (void *host)
{
  mirror_cancel (of (host)->mirror, false);
}

static uint64_t
pending_bytes (void *host)
{
  return mirror_pending_bytes (of (host)->mirror);
}

static uint64_t
heard_ns (void *host)
{
  return mirror_target_heard_ns (of (host)->mirror);
}

static int
start (void *host, const char *uri, const char *label, unsigned timeout_ms,
       bool resume)
{
  struct export *e = host;

  return export_mirror_start (e, uri, label, timeout_ms,
                              e->spec.mode == MODE_ASYNC, e->spec.bandwidth,
                              resume, NULL, NULL);
}

static void
plain_peer (void *host)
{
  export_mirror_plain_peer (host);
}

static uint64_t
dirty_bytes (void *host)
{
  return export_dirty_bytes (host);
}

static void
mark (void *host, uint64_t offset, uint64_t length)
{
  export_bitmap_mark (host, offset, length);
}

static void
clear (void *host, uint64_t offset, uint64_t length)
{
  export_bitmap_clear (host, offset, length);
}

static int
barrier (void *host, struct bitmap_intent *in)
{
  return bitmap_store_barrier (of (host)->bitmap, in);
}

static void
barrier_cancel (void *host, struct bitmap_intent *in)
{
  bitmap_store_barrier_cancel (of (host)->bitmap, in);
}

static bool
sync_window (void *host, bool on)
{
  struct export *e = of (host);

  if (e->mirror == NULL || e->spec.mode != MODE_ASYNC)
    return false;
  mirror_set_async (e->mirror, !on);
  return true;
}

static int
drain (void *host, unsigned timeout_ms, void (*done) (void *, int, double),
       void *opaque)
{
  struct export *e = of (host);

  if (e->mirror == NULL)
    return error_code (EINVAL, "export %s: not replicating", e->spec.name);
  return mirror_cutover (e->mirror, timeout_ms, done, opaque);
}

static void
end_cut_over (void *host)
{
  of (host)->cut_over = false;
}

static unsigned
guests (void *host)
{
  return of (host)->nr_guests;
}

static const struct ha_host_ops host_ops = {
  .mirror_connected = mirror_connected, .mirror_ready = mirror_ready,
  .mirror_active = active, .mirror_idle = idle, .mirror_cancel = cancel,
  .mirror_pending_bytes = pending_bytes, .mirror_heard_ns = heard_ns,
  .mirror_start = start, .mirror_plain_peer = plain_peer,
  .dirty_bytes = dirty_bytes, .mark = mark, .clear = clear,
  .barrier = barrier, .barrier_cancel = barrier_cancel,
  .mirror_sync_window = sync_window, .mirror_drain = drain,
  .end_cut_over = end_cut_over, .guests = guests,
};

static const struct peer_nbd_client nbd_client = {
  .setup_handle = target_setup_handle, .watch_handle = target_watch_handle,
  .handle_events = target_handle_events, .handle_errno = tls_worker_errno,
  .handle_error = tls_worker_error, .handshaking = tls_worker_busy,
  .close_handle = tls_worker_close,
};

int
export_open_ha (struct export *e, bool plaintext_claims)
{
  char path[4200], user[256];
  struct ha_opts o = {
    .name = e->spec.name, .size = e->img->size, .loop = ioq_loop (e->img->ioq),
    .host = &host_ops, .host_opaque = e,
    .state_path = path, .peer_uri = e->spec.peer,
    .initial_role = e->spec.role == ROLE_SECONDARY ? HA_SECONDARY : HA_PRIMARY,
    .timeout_ms = e->spec.peer_timeout_ms, .fence_hook = e->spec.fence_peer,
    .peer_user = e->spec.peer_user, .plaintext_claims = plaintext_claims,
  };

  peer_register_nbd_client (&nbd_client);
  /* Both sides describe the pair alike: by default the peer replicates
   * as the identity this side presents to it. */
  if (o.peer_user == NULL && target_tls_identity (e->spec.peer, user, sizeof user) == 0)
    o.peer_user = user;

  if (e->bitmap == NULL)
    return error_code (EINVAL, "a peer needs the dirty bitmap (bitmap=false)");
  if (e->state_prefix == NULL)
    return error_set (ENOMEM, "allocating");
  snprintf (path, sizeof path, "%s.ha", e->state_prefix);
  e->ha = ha_open (&o);
  return e->ha ? 0 : -1;
}
