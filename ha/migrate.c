/* SPDX-License-Identifier: MIT */
/* The live-migration window and hand-over (migrate.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "ha-int.h"
#include "state.h"

#define DEFAULT_WINDOW_S 600    /* incoming, start: QEMU's RAM phase */
#define DEFAULT_HANDOVER_S 10
#define POLL_MS 10              /* start: how often sync is looked at */

static const char *
name (const struct ha *ha)
{
  return ha->name;
}

static const char *
state_name (enum mig_state s)
{
  switch (s) {
  case MIG_NONE: return "none";
  case MIG_INCOMING: return "incoming";
  case MIG_STARTING: return "starting";
  case MIG_OUTGOING: return "outgoing";
  case MIG_HANDING_OVER: return "handing-over";
  case MIG_HANDED_OVER: return "handed-over";
  case MIG_ABORTED: return "aborted";
  case MIG_FAILED: return "failed";
  }
  return "?";
}

static bool
in_progress (enum mig_state s)
{
  return s == MIG_INCOMING || s == MIG_STARTING || s == MIG_OUTGOING
    || s == MIG_HANDING_OVER;
}

static void
disarm (struct ha_migration *m)
{
  if (m->timer) {
    loop_source_remove (m->timer);
    m->timer = NULL;
  }
}

/* The one place the state changes: logged, with the reason. */
static void
set_state (struct ha *ha, enum mig_state s, const char *why)
{
  struct ha_migration *m = &ha->mig;

  if (s == MIG_ABORTED || s == MIG_FAILED)
    snprintf (m->error, sizeof m->error, "%s", why);
  else if (s != m->state)
    m->error[0] = '\0';
  if (s == MIG_ABORTED || s == MIG_FAILED)
    log_warn ("export %s: migration: %s -> %s (%s)", name (ha),
              state_name (m->state), state_name (s), why);
  else
    log_info ("export %s: migration: %s -> %s (%s)", name (ha),
              state_name (m->state), state_name (s), why);
  m->state = s;
  if (!in_progress (s))
    disarm (m);
}

/* Answers the command waiting for this step, if any. */
static void
reply (struct ha *ha, int err, const char *msg)
{
  ha_mig_reply_fn done = ha->mig.done;

  ha->mig.done = NULL;
  if (done)
    done (ha->mig.opaque, err, msg);
}

static int
arm (struct ha *ha, unsigned ms, unsigned interval, void (*fn) (void *))
{
  disarm (&ha->mig);
  ha->mig.timer = loop_add_timer (ha->loop, ms, interval, fn, ha);
  return ha->mig.timer ? 0 : -1;
}

/* An async pair went sync for the window: back to async. */
static void
restore_mode (struct ha *ha)
{
  if (ha->mig.forced_sync)
    ha->host->mirror_sync_window (ha->hd, false);
  ha->mig.forced_sync = false;
}

/* Closes a window that did not hand over. */
static void
give_up (struct ha *ha, int err, const char *why)
{
  restore_mode (ha);
  set_state (ha, MIG_ABORTED, why);
  reply (ha, err, why);
}

/* ---- The destination's window ---- */

static void
window_expired (void *opaque)
{
  struct ha *ha = opaque;

  give_up (ha, ETIMEDOUT, "the window timed out before a hand-over");
}

int
ha_migrate_incoming (struct ha *ha, unsigned timeout_s)
{
  if (in_progress (ha->mig.state))
    return error_code (EBUSY, "export %s: a migration is already %s", name (ha),
                      state_name (ha->mig.state));
  if (ha->self.role != HA_SECONDARY)
    return error_code (EPERM, "export %s is primary: a migration comes into "
                      "the secondary of the pair", name (ha));
  if (ha->self.disk == DISK_SPLITBRAIN)
    return error_code (EPERM, "export %s is in split-brain", name (ha));
  if (!ha->peer_alive || ha->peer.role != HA_PRIMARY)
    return error_code (EHOSTUNREACH, "export %s: the source (a connected "
                      "primary peer) is not there", name (ha));
  if (arm (ha, (timeout_s ? timeout_s : DEFAULT_WINDOW_S) * 1000u, 0,
           window_expired) == -1)
    return -1;
  ha->mig.clients = ha->mig.peak_clients = ha->host->guests (ha->hd);
  ha->mig.handover_ms = 0;
  set_state (ha, MIG_INCOMING, "window open: clients see it writable, "
             "writes refused until the hand-over");
  ha_probe_now (ha);            /* the source learns of it sooner */
  return 0;
}

bool
ha_looks_writable (const struct ha *ha)
{
  return ha->mig.state == MIG_INCOMING;
}

/* The claim of a source handing over.  Everything it had reached us
 * and was flushed (in_sync), and it is secondary by now: take its
 * generation and become primary with a new one, saved first. */
int
ha_migrate_take_over (struct ha *ha, const struct ha_view *claim, char *why,
                      size_t len)
{
  struct ha_view v = ha->self;
  enum ha_decision d;

  if (ha->mig.state != MIG_INCOMING) {
    snprintf (why, len, "export %s has no migration window open (migrate "
              "incoming first)", name (ha));
    return -1;
  }
  d = ha_decide (&ha->self, claim);
  if (!claim->in_sync || (d != HA_NO_RESYNC && !ha_decision_is_target (d))) {
    snprintf (why, len, "export %s refuses the hand-over: %s", name (ha),
              claim->in_sync ? ha_decision_name (d) : "the source is not in sync");
    return -1;
  }
  ha_gen_adopt (&v.gen, &claim->gen);
  v.role = HA_PRIMARY;
  ha_gen_advance (&v.gen);
  v.disk = DISK_UPTODATE;
  v.discard = v.in_sync = false;
  if (ha_state_save (ha->state_path, &v) == -1) {
    snprintf (why, len, "export %s cannot save its new role: %s", name (ha),
              error_get ());
    return -1;
  }
  ha->self = v;
  ha->resync_set = false;
  ha->host->clear (ha->hd, 0, ha->size);
  log_info ("export %s: took over from the source: primary, generation %016"
            PRIx64 " (bitmap from %016" PRIx64 ")", name (ha), v.gen.current,
            v.gen.bitmap);
  set_state (ha, MIG_HANDED_OVER, "this side is primary");
  ha_probe_now (ha);            /* replicate back to the source at once */
  return 0;
}

void
ha_clients_changed (struct ha *ha, unsigned clients)
{
  struct ha_migration *m = &ha->mig;
  bool gone = clients == 0 && m->peak_clients > 0;

  m->clients = clients;
  if (clients > m->peak_clients)
    m->peak_clients = clients;
  if (gone && m->state == MIG_INCOMING)
    give_up (ha, ECONNRESET, "the destination's clients all disconnected "
             "(its QEMU is gone)");
  else if (gone && (m->state == MIG_STARTING || m->state == MIG_OUTGOING))
    give_up (ha, ECONNRESET, "the source's clients all disconnected "
             "(its QEMU is gone)");
}

/* ---- The source: start ---- */

static void
check_started (void *opaque)
{
  struct ha *ha = opaque;
  struct ha_migration *m = &ha->mig;

  if (m->state != MIG_STARTING)
    return;
  if (loop_now_ns () >= m->deadline_ns) {
    give_up (ha, ETIMEDOUT, "the peer was not in sync with its window open "
             "in time");
    return;
  }
  if (!ha_in_sync (ha) || !ha->peer_alive || !ha->peer.migrating)
    return;
  set_state (ha, MIG_OUTGOING, "in sync, the destination's window is open");
  arm (ha, DEFAULT_WINDOW_S * 1000u, 0, window_expired);
  reply (ha, 0, "ready to hand over");
}

int
ha_migrate_start (struct ha *ha, unsigned timeout_s, ha_reply_fn done,
                  void *opaque)
{
  struct ha_migration *m = &ha->mig;

  if (in_progress (m->state))
    return error_code (EBUSY, "export %s: a migration is already %s", name (ha),
                      state_name (m->state));
  if (ha->self.role != HA_PRIMARY)
    return error_code (EPERM, "export %s is secondary: a migration starts on "
                      "the primary", name (ha));
  if (!ha->peer_alive || ha->peer.role != HA_SECONDARY)
    return error_code (EHOSTUNREACH, "export %s: the destination (a connected "
                      "secondary peer) is not there", name (ha));
  m->deadline_ns = loop_now_ns ()
    + (uint64_t) (timeout_s ? timeout_s : DEFAULT_WINDOW_S) * 1000000000ull;
  if (arm (ha, POLL_MS, POLL_MS, check_started) == -1)
    return -1;
  m->forced_sync = ha->host->mirror_sync_window (ha->hd, true);
  if (m->forced_sync)
    log_info ("export %s: migration: sync mode for the window", name (ha));
  m->clients = m->peak_clients = ha->host->guests (ha->hd);
  m->handover_ms = 0;
  m->done = done;
  m->opaque = opaque;
  set_state (ha, MIG_STARTING, "waiting for sync and the destination's window");
  ha_probe_now (ha);
  return 0;
}

/* ---- The source: hand-over ---- */

static void
handed_over (struct ha *ha)
{
  struct ha_migration *m = &ha->mig;
  char msg[128];

  m->handover_ms = (double) (loop_now_ns () - m->started_ns) / 1e6;
  m->forced_sync = false;       /* the mirror is gone with the role */
  ha->host->end_cut_over (ha->hd);   /* a secondary refuses writes anyway */
  snprintf (msg, sizeof msg, "handed over in %.1f ms", m->handover_ms);
  set_state (ha, MIG_HANDED_OVER, msg);
  reply (ha, 0, msg);
}

/* The peer did not take over and says so: primary again, writable. */
static void
roll_back (struct ha *ha, const char *why)
{
  struct ha_view v = ha->self;
  char msg[sizeof ha->mig.error];

  v.role = HA_PRIMARY;
  if (ha_state_save (ha->state_path, &v) == -1) {
    snprintf (msg, sizeof msg, "the peer refused the hand-over (%s), and "
              "this side could not save its role back: %s", why, error_get ());
    set_state (ha, MIG_FAILED, msg);
    reply (ha, EIO, msg);
    return;
  }
  ha->self.role = HA_PRIMARY;
  ha->host->end_cut_over (ha->hd);
  ha->resync_set = false;       /* replication starts again */
  ha->mig.forced_sync = false;  /* the new mirror takes the configured mode */
  snprintf (msg, sizeof msg, "the peer refused the hand-over: %s; primary "
            "again", why);
  set_state (ha, MIG_ABORTED, msg);
  reply (ha, EPERM, msg);
  ha_probe_now (ha);
}

static void
unknown_outcome (struct ha *ha, const char *why)
{
  char msg[sizeof ha->mig.error];

  snprintf (msg, sizeof msg, "%s: this side stays secondary; if the peer "
            "is not primary, promote one side", why);
  set_state (ha, MIG_FAILED, msg);
  reply (ha, ETIMEDOUT, msg);
}

static void
handover_expired (void *opaque)
{
  struct ha *ha = opaque;

  unknown_outcome (ha, "the peer did not confirm the hand-over in time");
}

/* The peer's answer to the claim; its view, heard next, confirms. */
static void
answered (void *opaque, int err, const char *msg)
{
  struct ha *ha = opaque;
  struct ha_migration *m = &ha->mig;

  m->op = NULL;
  m->confirming = true;
  if (err)
    snprintf (m->error, sizeof m->error, "%s", msg ? msg : strerror (err));
  else
    m->error[0] = '\0';
  ha_probe_now (ha);
}

/* Drained and flushed: this side becomes secondary, then asks. */
static void
drained (void *opaque, int err, double downtime_ms)
{
  struct ha *ha = opaque;
  struct ha_migration *m = &ha->mig;
  struct ha_view v = ha->self, claim;
  char uri[4096];

  (void) downtime_ms;
  if (err) {
    /* The cut-over gave up: the held writes went on, nothing changed. */
    set_state (ha, MIG_OUTGOING, "the drain did not finish in time");
    reply (ha, err, error_get ());
    return;
  }
  m->gen_at_handover = v.gen.current;
  v.role = HA_SECONDARY;
  if (ha_state_save (ha->state_path, &v) == -1) {
    ha->host->end_cut_over (ha->hd);
    set_state (ha, MIG_OUTGOING, "could not save the secondary role");
    reply (ha, EIO, error_get ());
    return;
  }
  ha->self.role = HA_SECONDARY;
  ha_stop_mirror (ha);
  claim = ha->self;
  claim.role = HA_PRIMARY;      /* what we were, with all of it there */
  claim.in_sync = claim.handover = true;
  claim.migrating = false;
  m->confirming = false;
  if (ha_claim_uri_for (ha, &claim, uri, sizeof uri) == 0)
    m->op = peer_handover (ha->loop, uri, ha->timeout_ms, answered, ha);
  if (m->op == NULL)
    answered (ha, EIO, error_get ());
}

int
ha_migrate_handover (struct ha *ha, unsigned timeout_s, ha_reply_fn done,
                     void *opaque)
{
  struct ha_migration *m = &ha->mig;
  unsigned ms = (timeout_s ? timeout_s : DEFAULT_HANDOVER_S) * 1000u;

  if (m->state != MIG_OUTGOING)
    return error_code (EINVAL, "export %s: no migration ready to hand over "
                      "(it is %s; migrate start first)", name (ha),
                      state_name (m->state));
  m->started_ns = loop_now_ns ();
  if (ha->host->mirror_drain (ha->hd, ms, drained, ha) == -1)
    return -1;
  if (arm (ha, ms, 0, handover_expired) == -1)
    return -1;
  m->done = done;
  m->opaque = opaque;
  set_state (ha, MIG_HANDING_OVER, "draining to the destination");
  return 0;
}

/* ---- Hooks from ha.c ---- */

bool
ha_migrate_busy (const struct ha *ha)
{
  return ha->mig.state == MIG_HANDING_OVER;
}

bool
ha_migrate_window_open (const struct ha *ha)
{
  return ha->mig.state == MIG_INCOMING;
}

void
ha_migrate_view (const struct ha *ha, struct ha_view *v)
{
  v->migrating = ha->mig.state == MIG_INCOMING;
}

void
ha_migrate_heard (struct ha *ha)
{
  struct ha_migration *m = &ha->mig;

  if (m->state != MIG_HANDING_OVER || !m->confirming)
    return;
  if (ha->peer.role == HA_PRIMARY && ha->peer.gen.current != m->gen_at_handover)
    handed_over (ha);
  else if (ha->peer.role == HA_SECONDARY && m->error[0])
    roll_back (ha, m->error);
  /* Else the peer said yes and its view does not show it yet. */
}

void
ha_migrate_peer_down (struct ha *ha)
{
  switch (ha->mig.state) {
  case MIG_INCOMING:
    give_up (ha, ECONNRESET, "the source went away");
    break;
  case MIG_STARTING:
  case MIG_OUTGOING:
    give_up (ha, ECONNRESET, "the destination went away");
    break;
  case MIG_HANDING_OVER:
    if (ha->self.role == HA_SECONDARY)
      unknown_outcome (ha, "the peer went away during the hand-over");
    break;
  default:
    break;
  }
}

int
ha_migrate_abort (struct ha *ha)
{
  switch (ha->mig.state) {
  case MIG_INCOMING:
  case MIG_STARTING:
  case MIG_OUTGOING:
    give_up (ha, ECANCELED, "aborted by the operator");
    return 0;
  case MIG_HANDING_OVER:
    return error_code (EBUSY, "export %s: the hand-over is under way; its "
                      "answer comes within its timeout", name (ha));
  default:
    return error_code (EINVAL, "export %s: no migration in progress",
                      name (ha));
  }
}

json_object *
ha_migrate_json (const struct ha *ha)
{
  const struct ha_migration *m = &ha->mig;
  json_object *o;

  if (m->state == MIG_NONE)
    return NULL;
  o = json_object_new_object ();
  json_object_object_add (o, "state", json_object_new_string (state_name (m->state)));
  json_object_object_add (o, "handover_ms", m->state == MIG_HANDED_OVER
                          && m->handover_ms > 0
                          ? json_object_new_double (m->handover_ms) : NULL);
  json_object_object_add (o, "error", m->error[0]
                          ? json_object_new_string (m->error) : NULL);
  return o;
}

void
ha_migrate_status (const struct ha *ha, json_object *o)
{
  json_object_object_add (o, "migration", ha_migrate_json (ha));
}

void
ha_migrate_close (struct ha *ha)
{
  disarm (&ha->mig);
  peer_op_cancel (ha->mig.op);
  ha->mig.op = NULL;
  reply (ha, ECANCELED, "the export was removed during the migration");
}
