/* SPDX-License-Identifier: MIT */
/* The mirror's cut-over (mirror-cutover.h). */
#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/size.h"
#include "export.h"
#include "mirror-copy.h"
#include "mirror-cutover.h"
#include "mirror-int.h"
#include "mirror-job.h"
#include "target.h"

/* Through the final flush too: a write let through then would be
 * acknowledged on the source and never reach the target. */
bool
mirror_holds_writes (const struct mirror *m)
{
  return m && mirror_at (m) == MF_CUTOVER;
}

static void
answer_completed (struct mirror_job_wait *w)
{
  struct mirror *m = (struct mirror *) ((char *) w - offsetof (struct mirror, cut.wait));
  mirror_cutover_fn fn = m->cut.answer;

  m->cut.answer = NULL;
  if (fn)
    fn (m->cut.answer_opaque, 0, m->cut.downtime_ms);
}

/* The cut-over has its outcome: ERR is 0 (the export now refuses
 * writes) or an errno, WHY saying what happened (REASON, shorter, for
 * the state change).  Given up on with the mirror still sound, the job
 * goes back to what it was, every dirty bit kept; either way the held
 * writes go on (refused after a cut-over, started otherwise), and only
 * then does the admin hear of it. */
static void
cutover_end (struct mirror *m, int err, const char *why, const char *reason)
{
  mirror_cutover_fn done = m->cut.done;
  void *opaque = m->cut.opaque;
  double ms = (double) (loop_now_ns () - m->cut.hold_start_ns) / 1e6;

  m->cut.done = NULL;
  loop_source_remove (m->cut.timer);
  m->cut.timer = NULL;
  if (err == 0) {
    export_cut_over (m->exp);   /* writes are refused from now on */
    mirror_go (m, MF_COMPLETED, "cut over");
    mirror_job_forget (m);
    log_info ("export %s: cut over to %s; writes held %.1f ms",
              m->exp->spec.name, m->label, ms);
  }
  else if (mirror_at (m) == MF_CUTOVER) {
    mirror_go (m, m->cut.before, reason);
    mirror_kick (m);
  }
  export_release_held (m->exp);
  if (err) {
    error_set (err, "%s", why);   /* for DONE; the errno's text follows */
    if (done)
      done (opaque, err, ms);
    return;
  }
  if (done) {
    m->cut.answer = done;
    m->cut.answer_opaque = opaque;
    m->cut.downtime_ms = ms;
    m->cut.wait.fn = answer_completed;
    mirror_job_when_durable (m, &m->cut.wait);
  }
  mirror_copy_pump (m);         /* the job is over: let the target go */
}

static void
final_flush_done (void *opaque, int err)
{
  struct mirror *m = opaque;
  char why[256];

  m->cut.final_flush = false;
  if (m->cut.done == NULL || m->cut.flush_seq != m->cut.seq) {
    /* The flush of a cut-over given up on meanwhile: it proves nothing
     * about what a newer one has to drain, so that one flushes anew. */
    mirror_cutover_check (m);
    return;
  }
  if (err) {
    snprintf (why, sizeof why, "cut-over given up, the target's final flush "
              "failed (%s); the mirror goes on (%s)", strerror (err),
              mirror_fsm_name (m->cut.before));
    cutover_end (m, EIO, why, "the target's final flush failed");
    return;
  }
  if (mirror_bits_dirty (m) == 0)
    mirror_bits_clear_all (m);
  cutover_end (m, 0, NULL, NULL);
}

/* What a cut-over still waits for, for the admin. */
static void
cutover_left (const struct mirror *m, char *buf, size_t len)
{
  char size[32];
  unsigned writes = m->exp->writes_in_flight;
  uint64_t rem = mirror_copy_remaining (m);

  if (rem == 0 && writes == 0) {
    snprintf (buf, len, "nothing left to copy, the target's flush had not returned");
    return;
  }
  if (writes == 0)
    snprintf (buf, len, "%s (%llu bytes) still to copy",
              size_format (rem, size, sizeof size), (unsigned long long) rem);
  else
    snprintf (buf, len, "%s (%llu bytes) still to copy and %u guest write%s "
              "in flight", size_format (rem, size, sizeof size),
              (unsigned long long) rem, writes, writes == 1 ? "" : "s");
}

static void
cutover_expired (void *opaque)
{
  struct mirror *m = opaque;
  double s = (double) (loop_now_ns () - m->cut.hold_start_ns) / 1e9;
  const char *before = mirror_fsm_name (m->cut.before);
  char left[160], why[384];

  cutover_left (m, left, sizeof left);
  log_warn ("export %s: cut-over to %s timed out after %.3g s with %s: "
            "held writes go on, the mirror stays %s", m->exp->spec.name,
            m->label, s, left, before);
  snprintf (why, sizeof why, "cut-over gave up after %.3g s with %s; writes "
            "flow again and the mirror goes on (%s)", s, left, before);
  cutover_end (m, ETIMEDOUT, why, "cut-over timed out");
}

/* Cut-over is done when no guest write is in flight, nothing is dirty
 * and the target flushed. */
void
mirror_cutover_check (struct mirror *m)
{
  char why[600];

  if (m->cut.done == NULL || m->cut.final_flush)
    return;
  if (mirror_at (m) != MF_CUTOVER) {
    if (m->error[0] == '\0')
      mirror_set_error (m, "cut-over interrupted");
    snprintf (why, sizeof why, "cut-over failed: %s", m->error);
    cutover_end (m, ECANCELED, why, NULL);
    return;
  }
  if (mirror_copy_in_pass (m) || m->exp->writes_in_flight > 0 || m->fwd.bytes > 0)
    return;                     /* async forwards are data on its way */
  if (mirror_bits_dirty (m) > 0) {
    mirror_kick (m);
    return;
  }
  m->cut.final_flush = true;
  m->cut.flush_seq = m->cut.seq;
  if (target_flush (m->tgt, final_flush_done, m) == -1)
    final_flush_done (m, EIO);
}

int
mirror_cutover (struct mirror *m, unsigned timeout_ms, mirror_cutover_fn done,
                void *opaque)
{
  enum mirror_fsm_state st = mirror_at (m);

  if (mirror_fsm_public (st) != MIRROR_READY
      && mirror_fsm_public (st) != MIRROR_SYNCING)
    return error_code (EINVAL, "mirror is %s, not ready",
                      mirror_state_name (mirror_fsm_public (st)));
  if (!m->up)
    return error_code (ENOTCONN, "mirror target is not connected");
  if (timeout_ms > 0) {
    m->cut.timer = loop_add_timer (m->loop, timeout_ms, 0, cutover_expired, m);
    if (m->cut.timer == NULL)
      return -1;
  }
  m->cut.done = done;
  m->cut.opaque = opaque;
  m->cut.seq++;
  m->cut.hold_start_ns = loop_now_ns ();
  m->cut.before = st;
  mirror_go (m, MF_CUTOVER, "cut-over asked");
  /* mirror_cutover_check() from the loop (a pass, or the end of the one
   * running, leads there): DONE never runs inside this call. */
  mirror_kick (m);
  return 0;
}

void
mirror_guest_write_done (struct mirror *m)
{
  if (m == NULL)
    return;
  if (mirror_at (m) == MF_CUTOVER)
    mirror_cutover_check (m);
  else
    mirror_kick (m);
}

void
mirror_cutover_free (struct mirror *m)
{
  loop_source_remove (m->cut.timer);
  m->cut.timer = NULL;
  mirror_job_wait_cancel (m, &m->cut.wait);
}
