/* SPDX-License-Identifier: MIT */
/* The mirror job: start, cancel, lifetime, state (mirror.h has the
 * design, mirror-int.h the map of the mirror-*.c files). */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "export.h"
#include "mirror-copy.h"
#include "mirror-cutover.h"
#include "mirror-fwd.h"
#include "mirror-int.h"
#include "mirror-job.h"
#include "mirror-link.h"
#include "target.h"

/* A target that answers nothing for this long is dropped (and
 * reconnected): long enough for a slow disk, short enough that a
 * partition does not hang sync-mode guests for TCP's minutes. */
#define DEFAULT_TARGET_TIMEOUT_MS 30000

enum mirror_state
mirror_state (const struct mirror *m)
{
  return mirror_fsm_public (m->fsm.state);
}

const char *
mirror_error (const struct mirror *m)
{
  return m->error;
}

bool
mirror_active (const struct mirror *m)
{
  return !mirror_stopping (m);
}

void
mirror_set_error (struct mirror *m, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (m->error, sizeof m->error, fmt, ap);
  va_end (ap);
}

void
mirror_go (struct mirror *m, enum mirror_fsm_state to, const char *why)
{
  mirror_fsm_go (&m->fsm, to, why, m->error);
  if (mirror_stopping (m))
    mirror_link_stop (m);       /* no reconnecting a stopped job */
}

/* ---- Whoever waits for the start ---- */

static void
started_durably (struct mirror_job_wait *w)
{
  struct mirror *m = (struct mirror *) ((char *) w - offsetof (struct mirror, started_wait));
  mirror_started_fn fn = m->started;

  m->started = NULL;
  if (fn)
    fn (m->started_opaque, m->started_err);
}

/* The outcome is told once the job file says the same: a start
 * answered 0 resumes after a crash, one answered with an error does
 * not.  Always from the loop, never inside mirror_start(). */
void
mirror_report_started (struct mirror *m, int err)
{
  if (m->started == NULL || m->started_wait.fn != NULL)
    return;
  m->started_err = err;
  m->started_wait.fn = started_durably;
  mirror_job_when_durable (m, &m->started_wait);
}

/* ---- Lifetime (mirror-int.h: the export owns the mirror) ---- */

/* Stopped, and nothing of ours in flight. */
static bool
finished (const struct mirror *m)
{
  return mirror_stopping (m) && !mirror_copy_busy (m) && !m->marking
    && (m->tgt == NULL || target_in_flight (m->tgt) == 0)
    && mirror_fwd_idle (m) && mirror_job_idle (m)
    && (m->tgt != NULL || m->pinned);
}

/* Lets the target go, then the export: from the loop's top level, and
 * the unref is the last thing done (it may free the export, and the
 * export frees M). */
static void
release (void *opaque)
{
  struct mirror *m = opaque;

  if (!finished (m))
    return;
  mirror_link_close (m);
  if (m->pinned) {
    m->pinned = false;
    export_unref (m->exp);
  }
}

void
mirror_release_if_done (struct mirror *m)
{
  /* Never inline: this runs inside the target's and the job file's
   * callbacks, which must not see the mirror freed. */
  if (finished (m))
    loop_defer (m->loop, &m->release_later, release, m);   /* once */
}

void
mirror_fail (struct mirror *m, int err, const char *why)
{
  mirror_go (m, MF_FAILED, why);
  mirror_job_forget (m);
  mirror_report_started (m, err);
  mirror_copy_pump (m);         /* last: it may let the export go */
}

/* ---- Start ---- */

static void
on_tick (void *opaque)
{
  struct mirror *m = opaque;

  mirror_copy_tick (m);
  mirror_fwd_tick (m);
  if (mirror_copy_in_pass (m))
    mirror_copy_pump (m);
  else if (mirror_bits_dirty (m) > 0)
    mirror_kick (m);
}

static void
begin (struct mirror *m)
{
  m->copy.total_bytes = mirror_bits_dirty (m);
  mirror_job_save (m);
  mirror_link_connect (m);
}

static void
mark_all_ready (struct bitmap_intent *in, int err)
{
  struct mirror *m = in->opaque;

  mirror_bits_intent_end (m, &m->mark_all, false);      /* marks it all live */
  m->marking = false;
  if (mirror_stopping (m)) {
    mirror_copy_pump (m);       /* cancelled meanwhile: it may let go */
    return;
  }
  if (err) {
    mirror_set_error (m, "recording the full sync in the bitmap failed: %s",
                      strerror (err));
    mirror_fail (m, err, "full-sync marks failed");
    return;
  }
  mirror_go (m, MF_CONNECTING, "full-sync marks on disk");
  begin (m);
}

static struct mirror *
mirror_new (struct export *e, const struct mirror_opts *o)
{
  struct mirror *m = calloc (1, sizeof *m);

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
  m->started = o->started;
  m->started_opaque = o->opaque;
  mirror_fsm_init (&m->fsm, o->resume ? MF_CONNECTING : MF_MARKING,
                   e->spec.name, m->label);
  mirror_copy_init (m, o->bandwidth);
  mirror_fwd_init (m);
  mirror_job_init (m);
  m->tick = loop_add_timer (m->loop, MIRROR_TICK_MS, MIRROR_TICK_MS, on_tick, m);
  if (m->tick == NULL) {
    free (m->uri);
    free (m->label);
    free (m);
    return NULL;
  }
  return m;
}

struct mirror *
mirror_start (struct export *e, const struct mirror_opts *o)
{
  struct mirror *m;

  if (mirror_bits_check (e) == -1 || (m = mirror_new (e, o)) == NULL)
    return NULL;
  export_ref (e);
  m->pinned = true;
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
  if (mirror_bits_mark_all (m, &m->mark_all) == 1)
    mark_all_ready (&m->mark_all, 0);
  return m;
}

/* ---- Cancel, free ---- */

void
mirror_set_async (struct mirror *m, bool async)
{
  if (m->async == async)
    return;
  m->async = async;
  log_info ("export %s: mirror to %s: now %s", m->exp->spec.name, m->label,
            async ? "async" : "sync");
}

void
mirror_cancel (struct mirror *m, bool keep_job)
{
  if (m == NULL || mirror_stopping (m))
    return;
  if (m->started)
    mirror_set_error (m, "cancelled");  /* for whoever waits for the start */
  mirror_go (m, MF_CANCELLED, keep_job ? "stopped, to resume" : "cancelled");
  if (!keep_job)
    mirror_job_forget (m);
  if (m->started) {
    /* It hears of the cancel instead (once the job file agrees). */
    mirror_job_wait_cancel (m, &m->started_wait);
    m->started_wait.fn = NULL;
    mirror_report_started (m, ECANCELED);
  }
  mirror_fwd_release (m);
  mirror_fwd_retry (m);         /* waiting ones go back to the bitmap */
  mirror_cutover_check (m);
  mirror_copy_pump (m);
}

struct durable_wait {
  struct mirror_job_wait w;     /* first: the job hands it back */
  mirror_durable_fn done;
  void *opaque;
};

static void
durable_now (struct mirror_job_wait *w)
{
  struct durable_wait *d = (struct durable_wait *) w;
  mirror_durable_fn done = d->done;
  void *opaque = d->opaque;

  free (d);
  done (opaque);
}

int
mirror_when_durable (struct mirror *m, mirror_durable_fn done, void *opaque)
{
  struct durable_wait *d = malloc (sizeof *d);

  if (d == NULL)
    return error_set (ENOMEM, "allocating");
  d->w.fn = durable_now;
  d->done = done;
  d->opaque = opaque;
  mirror_job_when_durable (m, &d->w);
  return 0;
}

bool
mirror_idle (const struct mirror *m)
{
  return m == NULL || !m->pinned;
}

void
mirror_free (struct mirror *m)
{
  if (m == NULL)
    return;
  /* Only the export frees its mirror, and only an idle one. */
  assert (mirror_idle (m) && !mirror_copy_busy (m) && !m->job.busy);
  m->started = NULL;
  mirror_job_wait_cancel (m, &m->started_wait);
  mirror_cutover_free (m);
  loop_source_remove (m->tick);
  mirror_fwd_free (m);
  mirror_link_stop (m);
  loop_cancel_deferred (m->loop, &m->release_later);
  mirror_copy_free (m);
  mirror_job_free (m);
  mirror_link_close (m);
  free (m->uri);
  free (m->label);
  free (m);
}
