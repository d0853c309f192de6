/* SPDX-License-Identifier: MIT */
/* The HA pair: heartbeat, decisions, promotion (ha.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitmap/store.h"
#include "common/error.h"
#include "common/log.h"
#include "ha-int.h"
#include "state.h"

extern char **environ;

int
ha_save (struct ha *ha)
{
  if (ha_state_save (ha->state_path, &ha->self) == -1) {
    log_err ("export %s: %s", ha->name, error_get ());
    return -1;
  }
  return 0;
}

static void
log_gens (struct ha *ha, const char *what)
{
  log_warn ("export %s: %s (local cur=%016" PRIx64 " bm=%016" PRIx64
            ", peer cur=%016" PRIx64 " bm=%016" PRIx64 ")", ha->name,
            what, ha->self.gen.current, ha->self.gen.bitmap,
            ha->peer.gen.current, ha->peer.gen.bitmap);
}

/* ---- The mirror to the peer ---- */

static bool
mirror_connected (const struct ha *ha)
{
  return ha->host->mirror_connected (ha->hd);
}

/* Is the peer known to hold everything we hold?  "ready" alone is not
 * enough: it means what remains fits the cut-over budget, and a sync
 * mode pass may still be copying.  Nothing dirty means every region
 * reached the peer and a flush there covered it. */
bool
ha_in_sync (const struct ha *ha)
{
  return ha->self.role == HA_PRIMARY && ha->host->mirror_ready (ha->hd)
    && ha->host->dirty_bytes (ha->hd) == 0
    && ha->host->mirror_pending_bytes (ha->hd) == 0;
}

/* The peer URI with VIEW as the claim in its export name:
 * nbd://host/vm1 -> nbd://host/vm1@@mirrord-peer,role=primary,cur=... */
int
ha_claim_uri_for (struct ha *ha, const struct ha_view *v, char *buf, size_t len)
{
  char view[300];
  const char *q = strchr (ha->peer_uri, '?');
  size_t head = q ? (size_t) (q - ha->peer_uri) : strlen (ha->peer_uri);

  if (ha_view_format (v, view, sizeof view) == -1)
    return -1;
  for (char *p = view; *p; p++)
    if (*p == ' ')
      *p = ',';
  if (snprintf (buf, len, "%.*s" CLAIM_MARK "%s%s", (int) head, ha->peer_uri,
                view, q ? q : "") >= (int) len)
    return error_set (ENAMETOOLONG, "peer URI too long");
  return 0;
}

/* Our claim on the replication connections. */
static int
claim_uri (struct ha *ha, char *buf, size_t len)
{
  struct ha_view v = ha->self;

  v.in_sync = false;
  return ha_claim_uri_for (ha, &v, buf, len);
}

void
ha_stop_mirror (struct ha *ha)
{
  if (ha->fetch) {
    peer_op_cancel (ha->fetch);
    ha->fetch = NULL;
  }
  if (ha->merging) {
    ha->host->barrier_cancel (ha->hd, &ha->merge);
    ha->merging = false;
  }
  if (ha->host->mirror_active (ha->hd))
    ha->host->mirror_cancel (ha->hd);
  ha->resync_set = false;
}

static void
start_mirror (struct ha *ha, bool full)
{
  char uri[4096];

  if (claim_uri (ha, uri, sizeof uri) == -1
      || ha->host->mirror_start (ha->hd, uri, ha->peer_uri, ha->timeout_ms,
                                 !full) == -1) {
    log_err ("export %s: replicating to %s: %s", ha->name,
             ha->peer_uri, error_get ());
    return;
  }
  log_info ("export %s: replicating to %s (%s)", ha->name,
            ha->peer_uri, full ? "full sync" : "from the bitmap");
}

static void
peer_dirty (void *opaque, uint64_t offset, uint64_t length)
{
  struct ha *ha = opaque;

  ha->host->mark (ha->hd, offset, length);
}

/* The peer's regions are on disk in our bitmap: a crash from now on
 * cannot lose them, so the resync may begin. */
static void
peer_marks_durable (struct bitmap_intent *in, int err)
{
  struct ha *ha = in->opaque;

  ha->merging = false;
  if (err) {
    log_err ("export %s: recording the peer's dirty regions failed: %s; "
             "retrying", ha->name, strerror (err));
    ha->last_start_ns = loop_now_ns () - RESTART_BACKOFF_NS + RETRY_FETCH_NS;
    return;
  }
  log_info ("export %s: merged the peer's dirty regions (%" PRIu64
            " bytes dirty now)", ha->name, ha->host->dirty_bytes (ha->hd));
  start_mirror (ha, false);
}

static void
peer_bitmap_done (void *opaque, int err)
{
  struct ha *ha = opaque;

  ha->fetch = NULL;
  if (err == ENOTSUP) {
    /* Without the peer's regions a bitmap resync could miss some:
     * copy everything instead. */
    log_warn ("export %s: the peer has no dirty bitmap; resyncing in full",
              ha->name);
    start_mirror (ha, true);
    return;
  }
  if (err) {
    /* The link again: try once more after the back-off. */
    log_warn ("export %s: reading the peer's dirty bitmap: %s",
              ha->name, strerror (err));
    ha->last_start_ns = loop_now_ns () - RESTART_BACKOFF_NS + RETRY_FETCH_NS;
    return;
  }
  ha->merge.ready = peer_marks_durable;
  ha->merge.opaque = ha;
  ha->merging = true;
  if (ha->host->barrier (ha->hd, &ha->merge) == 1)
    peer_marks_durable (&ha->merge, 0);
}

/* The export name in an NBD URI: its path after the authority, up to
 * the query ("nbd://host:10809/vm1", "nbd+unix:///vm1?socket=..."). */
static void
uri_export_name (const char *uri, char *buf, size_t len)
{
  const char *p = strstr (uri, "://");
  size_t n;

  p = p ? strchr (p + 3, '/') : NULL;
  if (p == NULL || p > uri + strcspn (uri, "?")) {
    snprintf (buf, len, "%s", "");
    return;
  }
  p++;
  n = strcspn (p, "?#");
  snprintf (buf, len, "%.*s", (int) n, p);
}

/* Sets up replication for the current decision.  A resync (bitmap or
 * full) is set up once per peer generation, a union of bitmaps with the
 * peer's bitmap fetched first; once the peer is in sync, the running
 * mirror simply goes on. */
static void
ensure_replication (struct ha *ha)
{
  bool resync = ha_decision_is_source (ha->decision);
  bool same = ha->resync_set && ha->resync_decision == ha->decision
    && memcmp (&ha->resync_for, &ha->peer.gen, sizeof ha->resync_for) == 0;
  bool running = ha->fetch || ha->merging || ha->host->mirror_active (ha->hd);
  uint64_t now = loop_now_ns ();
  char ctx[300], name[256];

  if (running && (!resync || same))
    return;
  if (!running && ha->resync_set && now - ha->last_start_ns < RESTART_BACKOFF_NS)
    return;                     /* it failed or is stopping: not in a tight loop */
  ha_stop_mirror (ha);
  if (!ha->host->mirror_idle (ha->hd))
    return;                     /* the old one is still stopping */
  ha->resync_for = ha->peer.gen;
  ha->resync_decision = ha->decision;
  ha->resync_set = true;
  ha->last_start_ns = now;
  if (ha->decision != HA_SOURCE_BITMAP) {
    start_mirror (ha, ha->decision == HA_SOURCE_FULL);
    return;
  }
  uri_export_name (ha->peer_uri, name, sizeof name);
  snprintf (ctx, sizeof ctx, "qemu:dirty-bitmap:%s", name);
  ha->fetch = peer_fetch_bitmap (ha->loop, ha->peer_uri, ctx,
                                 ha->size, ha->timeout_ms * 4,
                                 peer_dirty, peer_bitmap_done, ha);
  if (ha->fetch == NULL)
    peer_bitmap_done (ha, EIO);
}

/* ---- Decisions ---- */

static void
become_splitbrain (struct ha *ha, const char *what)
{
  ha_stop_mirror (ha);
  if (ha->self.disk != DISK_SPLITBRAIN) {
    ha->self.disk = DISK_SPLITBRAIN;
    ha_save (ha);
    log_gens (ha, what);
    log_err ("export %s: nothing is overwritten until an admin demotes the "
             "side whose changes are to be discarded", ha->name);
  }
}

/* The peer is newer: a primary here was failed over. */
static void
become_target (struct ha *ha)
{
  if (ha->self.role == HA_PRIMARY) {
    ha_stop_mirror (ha);
    ha->self.role = HA_SECONDARY;
    log_gens (ha, "the peer holds a newer generation: becoming secondary");
  }
  if (ha->self.disk == DISK_UPTODATE || ha->self.disk == DISK_SPLITBRAIN) {
    ha->self.disk = DISK_OUTDATED;
    ha_save (ha);
  }
  /* The primary has copied everything to us: take its generation. */
  if (ha->peer.role == HA_PRIMARY && ha->peer.in_sync
      && ha->self.disk != DISK_SPLITBRAIN) {
    ha_gen_adopt (&ha->self.gen, &ha->peer.gen);
    ha->self.disk = DISK_UPTODATE;
    ha->self.discard = false;
    if (ha_save (ha) == 0) {
      ha->host->clear (ha->hd, 0, ha->size);
      log_info ("export %s: in sync with the primary at generation %016"
                PRIx64, ha->name, ha->self.gen.current);
    }
  }
}

static void
as_source (struct ha *ha)
{
  if (ha->self.disk == DISK_SPLITBRAIN) {
    /* The peer chose to discard its side: ours is the data now. */
    ha->self.disk = DISK_UPTODATE;
    ha_save (ha);
    log_info ("export %s: split-brain resolved: the peer discards its "
              "changes and takes ours", ha->name);
  }
  if (ha->self.role != HA_PRIMARY)
    return;                     /* newer, but only a primary pushes */
  ensure_replication (ha);
  /* The peer took our generation: the bitmap no longer needs to
   * reach back further. */
  if (ha->peer.gen.current == ha->self.gen.current && ha->self.gen.bitmap) {
    ha->self.gen.bitmap = 0;
    ha_save (ha);
  }
}

static void
evaluate (struct ha *ha)
{
  enum ha_decision d;

  if (ha_migrate_busy (ha))
    return;                     /* the hand-over moves the roles itself */
  d = ha_decide (&ha->self, &ha->peer);

  if (d != ha->decision || !ha->logged_decision) {
    log_info ("export %s: peer is %s/%s: %s", ha->name,
              ha_role_name (ha->peer.role), ha_disk_name (ha->peer.disk),
              ha_decision_name (d));
    ha->logged_decision = true;
  }
  ha->decision = d;
  switch (d) {
  case HA_SPLITBRAIN:
    become_splitbrain (ha, "split-brain: both sides wrote since they diverged");
    break;
  case HA_UNRELATED:
    become_splitbrain (ha, "unrelated data on both sides and no primary to prefer");
    break;
  case HA_TARGET_BITMAP:
  case HA_TARGET_FULL:
    become_target (ha);
    break;
  case HA_SOURCE_BITMAP:
  case HA_SOURCE_FULL:
    as_source (ha);
    break;
  case HA_NO_RESYNC:
    if (ha->self.role == HA_PRIMARY)
      as_source (ha);
    else if (ha->self.disk != DISK_UPTODATE)
      become_target (ha);
    break;
  }
}

/* ---- Heartbeat ---- */

/* Nothing listens where the peer was: its process is gone (a host
 * that died or a partition answers nothing, and waits for the
 * timeout). */
static bool
peer_process_gone (int err)
{
  return err == ECONNREFUSED || err == ENOENT;
}

static void
peer_down (struct ha *ha, const char *why)
{
  if (!ha->peer_alive)
    return;
  ha->peer_alive = false;
  log_warn ("export %s: peer %s %s: considered down (last known %s/%s)",
            ha->name, ha->peer_uri, why, ha_role_name (ha->peer.role),
            ha_disk_name (ha->peer.disk));
  ha_migrate_peer_down (ha);
}

static void probe (struct ha *ha);

static void
recheck_now (void *opaque)
{
  struct ha *ha = opaque;

  loop_source_remove (ha->recheck);
  ha->recheck = NULL;
  if (ha->probe == NULL) {
    ha->probe_urgent = true;
    probe (ha);
  }
}

/* An urgent probe that neither reached the peer nor learnt it is gone
 * (a reset, an end of file during the handshake): once more soon. */
static void
schedule_recheck (struct ha *ha, bool urgent, int err)
{
  if (!urgent || err == ETIMEDOUT || ha->rechecks == 0 || ha->recheck)
    return;
  ha->rechecks--;
  ha->recheck = loop_add_timer (ha->loop, RECHECK_MS, 0, recheck_now, ha);
}

static void
heard (void *opaque, int err, const char *state)
{
  struct ha *ha = opaque;
  struct ha_view v;
  char why[128];
  bool urgent = ha->probe_urgent;

  ha->probe = NULL;
  ha->probe_urgent = false;
  if (err == ENODATA) {
    /* It answered, without HA state: a plain NBD server (or a mirrord
     * export without peer=).  A primary just mirrors to it. */
    if (!ha->peer_plain)
      log_info ("export %s: peer %s has no HA state: mirroring to it as "
                "a plain NBD target", ha->name, ha->peer_uri);
    ha->peer_plain = true;
    ha->last_heard_ns = loop_now_ns ();
    if (ha->self.role == HA_PRIMARY)
      ha->host->mirror_plain_peer (ha->hd);
    return;
  }
  if (peer_process_gone (err)) {
    snprintf (why, sizeof why, "is gone (%s)", strerror (err));
    peer_down (ha, why);
    return;
  }
  if (err || ha_view_parse (state, &v) == -1) {
    if (!err)
      log_warn ("export %s: peer sent a bad state: %s", ha->name,
                error_get ());
    schedule_recheck (ha, urgent, err);
    return;
  }
  if (!ha->peer_alive)
    log_info ("export %s: peer %s is up (%s/%s)", ha->name,
              ha->peer_uri, ha_role_name (v.role), ha_disk_name (v.disk));
  ha->peer = v;
  ha->peer_plain = false;
  ha->peer_known = ha->peer_alive = true;
  ha->last_heard_ns = ha->last_state_ns = loop_now_ns ();
  evaluate (ha);
  ha_migrate_heard (ha);
}

static void
probe (struct ha *ha)
{
  char why[128];

  ha->probe = peer_probe (ha->loop, ha->peer_uri, ha->timeout_ms, heard, ha);
  if (ha->probe == NULL && peer_process_gone (error_errno ())) {
    snprintf (why, sizeof why, "is gone (%s)", strerror (error_errno ()));
    peer_down (ha, why);
  }
}

void
ha_probe_now (struct ha *ha)
{
  if (ha->probe == NULL)
    probe (ha);
}

static void
tick (void *opaque)
{
  struct ha *ha = opaque;
  uint64_t now = loop_now_ns ();
  uint64_t last = ha->last_heard_ns;

  /* Replication that gets answers is a sign of life too: on a saturated
   * link a heartbeat (a new TLS connection, several round trips through
   * a full queue) can take longer than the timeout while the
   * replication connection keeps moving. */
  if (mirror_connected (ha) && ha->host->mirror_heard_ns (ha->hd) > last)
    last = ha->last_heard_ns = ha->host->mirror_heard_ns (ha->hd);
  if (ha->peer_alive && now - last > ha->timeout_ms * 1000000ull) {
    char why[64];
    snprintf (why, sizeof why, "silent for %u ms", ha->timeout_ms);
    peer_down (ha, why);
  }
  if (ha->probe == NULL)
    probe (ha);
}

void
ha_replication_lost (struct ha *ha)
{
  if (ha->probe_urgent)
    return;                     /* its other connections went too */
  log_info ("export %s: a replication connection from the peer closed "
            "without a goodbye: asking the peer now", ha->name);
  peer_op_cancel (ha->probe);
  ha->probe_urgent = true;
  ha->rechecks = RECHECKS;
  probe (ha);
  if (ha->probe == NULL)
    ha->probe_urgent = false;
}

/* ---- Claims: replication into a secondary ---- */

bool
ha_parse_claim_name (const char *name, char *base, size_t len)
{
  const char *m = strstr (name, CLAIM_MARK);

  if (m == NULL)
    return false;
  snprintf (base, len, "%.*s", (int) (m - name), name);
  return true;
}

/* Is the connection the peer's?  0, or -1 with WHY. */
static int
claim_from_peer (const struct ha *ha, const char *tls_user, char *why,
                 size_t len)
{
  if (tls_user == NULL && !ha->plaintext_claims) {
    snprintf (why, len, "replication needs a TLS-PSK authenticated "
              "connection from the peer (give both sides --tls-psk and an "
              "nbds:// peer, or --insecure to allow plaintext)");
    return -1;
  }
  if (tls_user && ha->peer_user && strcmp (tls_user, ha->peer_user) != 0) {
    snprintf (why, len, "replication refused from TLS-PSK user '%.64s': the "
              "peer of export %s replicates as '%.64s' (peer-user=)",
              tls_user, ha->name, ha->peer_user);
    return -1;
  }
  return 0;
}

int
ha_accept_claim (struct ha *ha, const char *name, const char *tls_user,
                 char *why, size_t len)
{
  const char *m = strstr (name, CLAIM_MARK);
  char view[512];
  struct ha_view claim;
  enum ha_decision d;

  if (claim_from_peer (ha, tls_user, why, len) == -1)
    return -1;
  snprintf (view, sizeof view, "%s", m ? m + strlen (CLAIM_MARK) : "");
  for (char *p = view; *p; p++)
    if (*p == ',')
      *p = ' ';
  if (ha_view_parse (view, &claim) == -1) {
    snprintf (why, len, "malformed replication claim: %s", error_get ());
    return -1;
  }
  if (ha->self.role != HA_SECONDARY || claim.role != HA_PRIMARY) {
    snprintf (why, len, "replication needs a primary writing to a secondary "
              "(this side is %s)", ha_role_name (ha->self.role));
    return -1;
  }
  if (claim.handover)
    return ha_migrate_take_over (ha, &claim, why, len);
  d = ha_decide (&ha->self, &claim);
  if (d != HA_NO_RESYNC && !ha_decision_is_target (d)) {
    snprintf (why, len, "refusing replication from generation %016" PRIx64
              ": %s (this side cur=%016" PRIx64 " bm=%016" PRIx64 ")",
              claim.gen.current, ha_decision_name (d), ha->self.gen.current,
              ha->self.gen.bitmap);
    log_warn ("export %s: %s", ha->name, why);
    return -1;
  }
  if (ha_decision_is_target (d) && ha->self.disk != DISK_INCONSISTENT) {
    /* Its writes make this disk a mix of two generations until the
     * resync completes: it must not be promoted meanwhile. */
    ha->self.disk = DISK_INCONSISTENT;
    if (ha_save (ha) == -1) {
      snprintf (why, len, "cannot save the disk state");
      return -1;
    }
  }
  return 0;
}

/* ---- Client writes on a primary ---- */

int
ha_before_client_write (struct ha *ha)
{
  if (ha->self.role != HA_PRIMARY || ha->self.gen.bitmap != 0
      || mirror_connected (ha))
    return 0;
  /* The first write the peer will not see: a new generation, saved
   * before the write is acknowledged. */
  ha_gen_advance (&ha->self.gen);
  if (ha_state_save (ha->state_path, &ha->self) == -1)
    return error_prefix ("export %s: new generation", ha->name);
  log_info ("export %s: writing without the peer: generation %016" PRIx64
            " (bitmap from %016" PRIx64 ")", ha->name,
            ha->self.gen.current, ha->self.gen.bitmap);
  return 0;
}

/* ---- Status ---- */

int
ha_peer_state (struct ha *ha, char *buf, size_t len)
{
  struct ha_view v = ha->self;

  v.in_sync = ha_in_sync (ha);
  ha_migrate_view (ha, &v);
  return ha_view_format (&v, buf, len);
}

static json_object *
gen_json (const struct ha_gen *g)
{
  json_object *o = json_object_new_object ();
  char b[32];

  snprintf (b, sizeof b, "%016" PRIx64, g->current);
  json_object_object_add (o, "current", json_object_new_string (b));
  snprintf (b, sizeof b, "%016" PRIx64, g->bitmap);
  json_object_object_add (o, "bitmap", json_object_new_string (b));
  return o;
}

/* The peer as status shows it: what it said last, and whether that is
 * its state now (connected, and heard within the timeout) or only the
 * last known one — never a ghost passed off as current. */
static json_object *
peer_json (const struct ha *ha)
{
  json_object *p = json_object_new_object ();
  uint64_t now = loop_now_ns ();
  bool fresh = ha->peer_alive
    && now - ha->last_state_ns <= ha->timeout_ms * 1000000ull;

  json_object_object_add (p, "connected", json_object_new_boolean (ha->peer_alive));
  if (!ha->peer_known) {
    json_object_object_add (p, "role", NULL);
    json_object_object_add (p, "disk", NULL);
    json_object_object_add (p, "last_known", json_object_new_boolean (false));
    json_object_object_add (p, "last_seen_s", NULL);
    json_object_object_add (p, "uri", json_object_new_string (ha->peer_uri));
    return p;
  }
  json_object_object_add (p, "role", json_object_new_string (ha_role_name (ha->peer.role)));
  json_object_object_add (p, "disk", json_object_new_string (ha_disk_name (ha->peer.disk)));
  json_object_object_add (p, "last_known", json_object_new_boolean (!fresh));
  json_object_object_add (p, "last_seen_s", json_object_new_double
                          ((double) (now - ha->last_state_ns) / 1e9));
  json_object_object_add (p, "generation", gen_json (&ha->peer.gen));
  json_object_object_add (p, "in_sync", json_object_new_boolean (fresh && ha->peer.in_sync));
  json_object_object_add (p, "decision", json_object_new_string (ha_decision_name (ha->decision)));
  json_object_object_add (p, "uri", json_object_new_string (ha->peer_uri));
  return p;
}

void
ha_status (struct ha *ha, json_object *o)
{
  json_object_object_add (o, "role", json_object_new_string (ha_role_name (ha->self.role)));
  json_object_object_add (o, "disk", json_object_new_string (ha_disk_name (ha->self.disk)));
  json_object_object_add (o, "generation", gen_json (&ha->self.gen));
  json_object_object_add (o, "peer", peer_json (ha));
  ha_migrate_status (ha, o);
}

bool
ha_is_primary (const struct ha *ha)
{
  return ha->self.role == HA_PRIMARY;
}

/* ---- Promote and demote ---- */

void
ha_do_promote (struct ha *ha, bool forced)
{
  ha->self.role = HA_PRIMARY;
  ha_gen_advance (&ha->self.gen);
  if (ha->self.disk != DISK_UPTODATE)
    log_warn ("export %s: promoted with disk %s%s", ha->name,
              ha_disk_name (ha->self.disk), forced ? " (--force)" : "");
  ha->self.disk = DISK_UPTODATE;
  ha->self.discard = false;
  ha_save (ha);
  ha->resync_set = false;
  log_info ("export %s: promoted to primary, generation %016" PRIx64
            " (bitmap from %016" PRIx64 ")", ha->name,
            ha->self.gen.current, ha->self.gen.bitmap);
}

static void
fence_poll (void *opaque)
{
  struct ha *ha = opaque;
  int status;
  pid_t r = waitpid (ha->fence_pid, &status, WNOHANG);
  char msg[200];
  int err = 0;

  if (r == 0 && loop_now_ns () < ha->fence_deadline_ns)
    return;
  if (r == 0) {
    kill (ha->fence_pid, SIGKILL);
    waitpid (ha->fence_pid, &status, 0);
    snprintf (msg, sizeof msg, "fence-peer hook %s timed out", ha->fence_hook);
    err = ETIMEDOUT;
  }
  else if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
    snprintf (msg, sizeof msg, "promoted (fence-peer hook allowed it)");
  else {
    snprintf (msg, sizeof msg, "fence-peer hook %s forbids the promotion "
              "(exit %d)", ha->fence_hook,
              WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status));
    err = EPERM;
  }
  loop_source_remove (ha->fence_timer);
  ha->fence_timer = NULL;
  ha->fence_pid = 0;
  if (err == 0)
    ha_do_promote (ha, false);
  else
    log_warn ("export %s: %s", ha->name, msg);
  ha->fence_done (ha->fence_opaque, err, msg);
}

static int
run_fence_hook (struct ha *ha, ha_reply_fn done, void *opaque)
{
  char *argv[] = { ha->fence_hook, (char *) ha->name, ha->peer_uri, NULL };
  int r;

  setenv ("MIRRORD_EXPORT", ha->name, 1);
  setenv ("MIRRORD_PEER", ha->peer_uri, 1);
  r = posix_spawn (&ha->fence_pid, ha->fence_hook, NULL, NULL, argv, environ);
  if (r != 0)
    return error_set (r, "fence-peer hook %s", ha->fence_hook);
  ha->fence_done = done;
  ha->fence_opaque = opaque;
  ha->fence_deadline_ns = loop_now_ns () + FENCE_TIMEOUT_MS * 1000000ull;
  ha->fence_timer = loop_add_timer (ha->loop, 20, 20, fence_poll, ha);
  log_info ("export %s: peer unreachable: asking fence-peer hook %s",
            ha->name, ha->fence_hook);
  return 0;
}

int
ha_promote (struct ha *ha, bool force, ha_reply_fn done, void *opaque)
{
  if (ha->self.role == HA_PRIMARY)
    return error_code (EINVAL, "export %s is already primary", ha->name);
  if (ha_migrate_window_open (ha) || ha_migrate_busy (ha))
    return error_code (EBUSY, "export %s is in a live migration; migrate "
                       "abort first", ha->name);
  if (ha->fence_pid)
    return error_code (EBUSY, "a promotion is already waiting for the "
                       "fence-peer hook");
  if (!force && ha->self.disk == DISK_INCONSISTENT)
    return error_code (EPERM, "export %s is inconsistent (a sync into it "
                      "never completed); --force to promote anyway",
                      ha->name);
  if (!force && ha->self.disk == DISK_SPLITBRAIN)
    return error_code (EPERM, "export %s is in split-brain; demote the side to "
                      "discard, or --force", ha->name);
  if (!force && ha->peer_alive && ha->peer.role == HA_PRIMARY)
    return error_code (EPERM, "the peer %s is a connected primary; demote it "
                       "first, or --force", ha->peer_uri);
  if (force) {
    log_warn ("export %s: promotion forced (disk %s, peer %s)",
              ha->name, ha_disk_name (ha->self.disk),
              ha->peer_alive ? ha_role_name (ha->peer.role) : "unreachable");
    ha_do_promote (ha, true);
    done (opaque, 0, "promoted (forced)");
    return 0;
  }
  if (!ha->peer_alive && ha->fence_hook)
    return run_fence_hook (ha, done, opaque);
  ha_do_promote (ha, false);
  done (opaque, 0, "promoted");
  return 0;
}

int
ha_demote (struct ha *ha, bool force, unsigned clients)
{
  if (ha->self.role == HA_SECONDARY && ha->self.disk != DISK_SPLITBRAIN)
    return error_code (EINVAL, "export %s is already secondary", ha->name);
  if (ha_migrate_busy (ha))
    return error_code (EBUSY, "export %s is handing over to its peer",
                       ha->name);
  if (clients && !force)
    return error_code (EBUSY, "export %s has %u NBD client%s connected; stop "
                      "them first", ha->name, clients,
                      clients == 1 ? "" : "s");
  ha_stop_mirror (ha);
  ha->self.role = HA_SECONDARY;
  if (ha->self.disk == DISK_SPLITBRAIN) {
    /* Resolving a split-brain: this side's changes go. */
    ha->self.discard = true;
    ha->self.disk = DISK_OUTDATED;
    log_warn ("export %s: demoted to resolve the split-brain: its changes "
              "since the divergence will be overwritten by the peer's",
              ha->name);
  }
  else
    log_info ("export %s: demoted to secondary", ha->name);
  return ha_save (ha);
}

/* ---- Open and close ---- */

static int
load_or_init (struct ha *ha, enum ha_role initial)
{
  int r = ha_state_load (ha->state_path, &ha->self);

  if (r == -1)
    return -1;
  if (r == 0) {
    if (ha->self.role != initial)
      log_info ("export %s: %s (saved role; the configured %s applies only "
                "the first time)", ha->name,
                ha_role_name (ha->self.role), ha_role_name (initial));
    return 0;
  }
  memset (&ha->self, 0, sizeof ha->self);
  ha->self.role = initial;
  if (initial == HA_PRIMARY) {
    ha->self.gen.current = ha_gen_new ();
    ha->self.disk = DISK_UPTODATE;
  }
  else
    ha->self.disk = DISK_INCONSISTENT;   /* nothing synced into it yet */
  return ha_state_save (ha->state_path, &ha->self);
}

struct ha *
ha_open (const struct ha_opts *o)
{
  struct ha *ha = calloc (1, sizeof *ha);
  unsigned interval;

  if (ha == NULL || (ha->state_path = strdup (o->state_path)) == NULL
      || (ha->name = strdup (o->name)) == NULL
      || (ha->peer_uri = strdup (o->peer_uri)) == NULL
      || (o->fence_hook && (ha->fence_hook = strdup (o->fence_hook)) == NULL)
      || (o->peer_user && (ha->peer_user = strdup (o->peer_user)) == NULL)) {
    error_set (ENOMEM, "allocating HA state");
    goto err;
  }
  ha->size = o->size;
  ha->host = o->host;
  ha->hd = o->host_opaque;
  ha->loop = o->loop;
  ha->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
  ha->plaintext_claims = o->plaintext_claims;
  if (load_or_init (ha, o->initial_role) == -1)
    goto err;
  interval = ha->timeout_ms / 5;
  if (interval < 100)
    interval = 100;
  if (interval > 1000)
    interval = 1000;
  ha->timer = loop_add_timer (ha->loop, 1, interval, tick, ha);
  if (ha->timer == NULL)
    goto err;
  log_info ("export %s: %s, disk %s, generation %016" PRIx64 ", peer %s",
            ha->name, ha_role_name (ha->self.role),
            ha_disk_name (ha->self.disk), ha->self.gen.current, ha->peer_uri);
  return ha;
 err:
  ha_close (ha);
  return NULL;
}

void
ha_close (struct ha *ha)
{
  if (ha == NULL)
    return;
  if (ha->timer)
    loop_source_remove (ha->timer);
  if (ha->recheck)
    loop_source_remove (ha->recheck);
  if (ha->fence_timer) {
    /* The export goes while its fence-peer hook runs: stop the hook
     * and answer whoever asked for the promotion. */
    int status;
    loop_source_remove (ha->fence_timer);
    kill (ha->fence_pid, SIGKILL);
    waitpid (ha->fence_pid, &status, 0);
    ha->fence_done (ha->fence_opaque, ECANCELED,
                    "the export was removed during the promotion");
  }
  ha_migrate_close (ha);
  peer_op_cancel (ha->probe);
  peer_op_cancel (ha->fetch);
  if (ha->merging)
    ha->host->barrier_cancel (ha->hd, &ha->merge);
  free (ha->name);
  free (ha->state_path);
  free (ha->peer_uri);
  free (ha->fence_hook);
  free (ha->peer_user);
  free (ha);
}
