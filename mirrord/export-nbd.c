/* SPDX-License-Identifier: MIT */
/* The registry as the NBD server sees it (nbd/backend.h): the lookup
 * callback, client attachment, LIST, and the meta contexts the daemon
 * adds to base:allocation.
 *
 * Design note.  The server knows nothing of roles: whether a name is a
 * plain export name or the HA peer's replication claim (ha.h) is
 * decided here, by ha/'s claim parser and its judgement of the claim
 * against the client's TLS identity.  An ordinary client gets the
 * export's stack (gate, tracker, replicate, image); the peer gets the
 * peer gate straight over the image.  Each answer is a session: a
 * reference on the export plus whether it is the peer's, which
 * detach() needs (a peer that vanished without a goodbye is asked
 * about at once).
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/ha.h"
#include "export.h"

struct session {
  struct export *e;
  bool peer;
};

static struct export *
find_for_client (const char *name)
{
  if (name[0] == '\0')
    return export_count () == 1 ? export_first () : NULL;
  return export_find (name);
}

/* A claim in NAME is judged (not for meta-context options): 0 an
 * ordinary client, 1 the peer, -1 refused (WHY). */
static int
judge_claim (struct export *e, const char *name, const char *tls_user,
             char *why, size_t len)
{
  if (e->ha == NULL) {
    snprintf (why, len, "export %s has no HA peer", e->spec.name);
    return -1;
  }
  return ha_accept_claim (e->ha, name, tls_user, why, len) == 0 ? 1 : -1;
}

static int
lookup (const char *name, const char *tls_user, bool meta,
        struct server_export *out, char *why, size_t len)
{
  char base[4200];
  bool claim = ha_parse_claim_name (name, base, sizeof base);
  struct export *e = find_for_client (claim ? base : name);
  struct session *s;
  int peer = 0;

  if (e == NULL)
    return SERVER_LOOKUP_UNKNOWN;
  if (claim && !meta && (peer = judge_claim (e, name, tls_user, why, len)) == -1)
    return SERVER_LOOKUP_REFUSED;
  if ((s = malloc (sizeof *s)) == NULL) {
    snprintf (why, len, "out of memory");
    return SERVER_LOOKUP_REFUSED;
  }
  s->e = e;
  s->peer = peer == 1;
  export_ref (e);
  out->handle = s;
  out->blk = s->peer ? export_peer_blk (e) : export_blk (e);
  snprintf (out->name, sizeof out->name, "%s", e->spec.name);
  export_describe (e, out->description, sizeof out->description);
  return SERVER_LOOKUP_OK;
}

static void
release (void *handle)
{
  struct session *s = handle;

  export_unref (s->e);
  free (s);
}

static void
attach (void *handle, struct server_client *c)
{
  struct session *s = handle;

  export_attach (s->e, c, s->peer);
}

static void
detach (void *handle, struct server_client *c)
{
  struct session *s = handle;

  export_detach (s->e, c, s->peer);
}

static void
list (void (*fn) (void *arg, const char *name), void *arg)
{
  for (struct export *e = export_first (); e; e = export_next (e))
    fn (arg, e->spec.name);
}

const struct server_backend export_server_backend = {
  .lookup = lookup, .release = release, .attach = attach, .detach = detach,
  .list = list,
};

/* ---- qemu:dirty-bitmap:EXPORT, the live dirty bitmap ---- */

static int
dirty_name (void *handle, const char *export, char *buf, size_t len)
{
  struct export *e = ((struct session *) handle)->e;

  if (e->bitmap == NULL)
    return -1;                  /* bitmap=false: nothing to offer */
  snprintf (buf, len, "qemu:dirty-bitmap:%s", e->spec.name);
  return 0;
}

static int
dirty_extents (void *handle, uint64_t offset, uint64_t count,
               struct image_extents *out)
{
  struct export *e = ((struct session *) handle)->e;

  return tracker_dirty_extents (export_tracker (e), offset, count, out);
}

static const struct server_meta_provider dirty_bitmap = {
  .name = dirty_name, .listed_by_default = true, .extents = dirty_extents,
};

/* ---- mirrord:peer-state:STATE ----
 * The HA peer's heartbeat lists "mirrord:" and reads our state in the
 * name of the one context it gets back (LIST only: it is not a context
 * that BLOCK_STATUS can serve). */

#define PEER_STATE "mirrord:peer-state:"

static int
peer_state_name (void *handle, const char *export, char *buf, size_t len)
{
  struct export *e = ((struct session *) handle)->e;
  size_t n = strlen (PEER_STATE);

  if (e->ha == NULL || len <= n)
    return -1;
  memcpy (buf, PEER_STATE, n);
  return ha_peer_state (e->ha, buf + n, len - n);
}

static bool
peer_state_match (const char *name, const uint8_t *q, uint32_t len, bool list)
{
  return (len == 8 && memcmp (q, "mirrord:", 8) == 0)
    || (len == strlen (PEER_STATE) && memcmp (q, PEER_STATE, len) == 0);
}

static const struct server_meta_provider peer_state = {
  .name = peer_state_name, .match = peer_state_match, .list_only = true,
};

const struct server_meta_provider *const export_meta_providers[EXPORT_NR_META] = {
  &dirty_bitmap, &peer_state,
};
