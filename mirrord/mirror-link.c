/* SPDX-License-Identifier: MIT */
/* The mirror's target connection (mirror-link.h). */
#include <config.h>

#include <errno.h>
#include <stdio.h>

#include "common/error.h"
#include "common/log.h"
#include "export.h"
#include "mirror-copy.h"
#include "mirror-cutover.h"
#include "mirror-fwd.h"
#include "mirror-int.h"
#include "mirror-link.h"
#include "target.h"

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 8000
#define TARGET_CONNS 4

static void
retry_now (void *opaque)
{
  struct mirror *m = opaque;

  loop_source_remove (m->link.retry);
  m->link.retry = NULL;
  if (mirror_stopping (m))
    return;
  if (m->tgt && target_in_flight (m->tgt) > 0) {
    m->link.retry = loop_add_timer (m->loop, 50, 0, retry_now, m);
    return;
  }
  mirror_link_close (m);
  mirror_link_connect (m);
}

static void
schedule_retry (struct mirror *m)
{
  if (m->link.retry || mirror_stopping (m))
    return;
  m->link.backoff_ms = m->link.backoff_ms ? m->link.backoff_ms * 2 : BACKOFF_MIN_MS;
  if (m->link.backoff_ms > BACKOFF_MAX_MS)
    m->link.backoff_ms = BACKOFF_MAX_MS;
  m->link.retry = loop_add_timer (m->loop, m->link.backoff_ms, 0, retry_now, m);
}

static bool
target_acceptable (struct mirror *m)
{
  /* Copying an export onto itself never converges (every copy is a
   * new write to mirror) and reads what it half overwrote. */
  if (export_is_described (m->exp, target_description (m->tgt))) {
    mirror_set_error (m, "target is export %s itself (its description carries "
               "this export's instance id): a mirror to itself is refused",
               m->exp->spec.name);
    return false;
  }
  if (target_size (m->tgt) != export_size (m->exp)) {
    mirror_set_error (m, "target size %llu differs from the export's %llu",
               (unsigned long long) target_size (m->tgt),
               (unsigned long long) export_size (m->exp));
    return false;
  }
  if (target_is_readonly (m->tgt)) {
    mirror_set_error (m, "target is read-only");
    return false;
  }
  return true;
}

static void
target_up (struct mirror *m)
{
  enum mirror_fsm_state st = mirror_at (m);

  if (mirror_stopping (m)) {
    m->up = true;               /* only to drain */
    mirror_copy_pump (m);
    return;
  }
  if (!target_acceptable (m)) {
    mirror_fail (m, EINVAL, "target refused");
    return;
  }
  m->up = true;
  m->link.backoff_ms = 0;
  m->link.fast_zero_slow = false;       /* a new connection: it may have changed */
  m->error[0] = '\0';
  mirror_go (m, MF_SYNCING, st == MF_DISCONNECTED ? "target back" : "target up");
  log_info ("export %s: mirror target %s up (%u connection%s)",
            m->exp->spec.name, m->label, target_connections (m->tgt),
            target_connections (m->tgt) == 1 ? "" : "s");
  mirror_report_started (m, 0);
  mirror_kick (m);
}

/* Down: keep tracking writes; in-flight copies fail and re-mark. */
static void
target_down (struct mirror *m)
{
  enum mirror_fsm_state st = mirror_at (m);

  m->up = false;
  mirror_set_error (m, "%s", target_error (m->tgt));
  if (mirror_start_unanswered (m)) {
    /* Never reached, and an admin waits: fail rather than retry. */
    mirror_fail (m, ENOTCONN, "target unreachable");
    return;
  }
  if (st == MF_CUTOVER) {
    mirror_go (m, MF_FAILED, "target lost during the cut-over");
    mirror_cutover_check (m);
  }
  else if (!mirror_stopping (m))
    mirror_go (m, MF_DISCONNECTED,
               st == MF_CONNECTING ? "target unreachable" : "target lost");
  mirror_fwd_retry (m);         /* waiting ones go back to the bitmap */
  schedule_retry (m);
  mirror_copy_pump (m);         /* last: it may let the export go */
}

static void
on_target (void *opaque, enum target_state st)
{
  struct mirror *m = opaque;

  if (st == TARGET_UP)
    target_up (m);
  else
    target_down (m);
}

void
mirror_link_connect (struct mirror *m)
{
  m->up = false;
  m->tgt = target_open (m->loop, m->uri, TARGET_CONNS, on_target, m);
  if (m->tgt) {
    target_set_timeout (m->tgt, m->timeout_ms);
    return;
  }
  mirror_set_error (m, "%s", error_get ());
  if (mirror_start_unanswered (m)) {
    mirror_fail (m, EINVAL, "target unusable");
    return;
  }
  mirror_go (m, MF_DISCONNECTED, "target unusable");
  mirror_fwd_retry (m);         /* waiting ones go back to the bitmap */
  schedule_retry (m);
}

void
mirror_link_stop (struct mirror *m)
{
  loop_source_remove (m->link.retry);
  m->link.retry = NULL;
}

void
mirror_link_close (struct mirror *m)
{
  target_free (m->tgt);
  m->tgt = NULL;
}

uint64_t
mirror_target_heard_ns (const struct mirror *m)
{
  return m && m->tgt ? target_heard_ns (m->tgt) : 0;
}
