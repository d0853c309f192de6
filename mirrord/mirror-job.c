/* SPDX-License-Identifier: MIT */
/* The mirror job file, saved off the loop (mirror-job.h). */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "common/statefile.h"
#include "export.h"
#include "mirror-int.h"
#include "mirror-job.h"

/* One change on a worker: everything the worker needs is copied in, so
 * it touches nothing of the mirror's. */
struct mirror_job_op {
  struct ioq_op op;
  struct mirror *m;
  uint64_t seq;
  bool save;
  bool too_long;                /* the content did not fit: not saved */
  char path[4096];
  char data[4200];
  size_t len;
  char msg[512];                /* the worker's error_get() */
};

static void submit (struct mirror *m);

void
mirror_job_init (struct mirror *m)
{
  list_init (&m->job.waits);
}

static ssize_t
job_work (struct ioq_op *op)
{
  struct mirror_job_op *j = op->opaque;
  int r;

  r = j->save ? statefile_write (j->path, j->data, j->len)
    : statefile_remove (j->path);
  if (r == -1) {
    snprintf (j->msg, sizeof j->msg, "%s", error_get ());
    return error_errno () ? -error_errno () : -EIO;
  }
  return 0;
}

static struct mirror_job_wait *
first_due (const struct mirror *m)
{
  const struct list *pos;

  for (pos = m->job.waits.next; pos != &m->job.waits; pos = pos->next) {
    struct mirror_job_wait *w = list_entry (pos, struct mirror_job_wait, node);
    if (w->seq <= m->job.done)
      return w;
  }
  return NULL;
}

/* Waiters whose changes are all done, from the loop. */
static void
wake (void *opaque)
{
  struct mirror *m = opaque;
  struct mirror_job_wait *w;

  /* One at a time, from the front: a callback may withdraw others. */
  while ((w = first_due (m)) != NULL) {
    list_del (&w->node);
    list_init (&w->node);
    w->fn (w);
  }
  /* The last waiter may have been what kept a stopped mirror. */
  if (mirror_job_idle (m))
    mirror_release_if_done (m);
}

static void
job_done (struct ioq_op *op, ssize_t result)
{
  struct mirror_job_op *j = op->opaque;
  struct mirror *m = j->m;

  m->job.busy = false;
  m->job.done = j->seq;
  if (result < 0 && j->save)
    log_warn ("export %s: %s: the mirror will not resume after a restart",
              m->exp->spec.name, j->msg);
  else if (result < 0)
    log_warn ("export %s: %s", m->exp->spec.name, j->msg);
  if (m->job.asked > m->job.done)
    submit (m);                 /* the newest content, once */
  wake (m);
}

static void
fill (struct mirror *m, struct mirror_job_op *j)
{
  int n;

  snprintf (j->path, sizeof j->path, "%s.mirror", export_state_prefix (m->exp));
  j->save = m->job.want_saved;
  j->too_long = false;
  j->msg[0] = '\0';
  if (!j->save)
    return;
  n = snprintf (j->data, sizeof j->data, "uri=%s\nmode=%s\nbandwidth=%llu\n",
                m->uri, m->async ? "async" : "sync",
                (unsigned long long) m->bandwidth);
  if (n < 0 || (size_t) n >= sizeof j->data)
    j->too_long = true;
  j->len = n < 0 ? 0 : (size_t) n;
}

static void
submit (struct mirror *m)
{
  struct mirror_job_op *j = m->job.op;

  assert (!m->job.busy);
  fill (m, j);
  j->seq = m->job.asked;
  if (j->save && j->too_long) {
    log_warn ("export %s: the mirror's URI is too long to save: it will not "
              "resume after a restart", m->exp->spec.name);
    m->job.done = j->seq;       /* nothing to write; waiters hear it */
    loop_defer (m->loop, &m->job.wake, wake, m);
    return;
  }
  m->job.busy = true;
  memset (&j->op, 0, sizeof j->op);
  j->op.done = job_done;
  j->op.opaque = j;
  ioq_work (m->exp->img->ioq, &j->op, job_work);
}

static void
change (struct mirror *m, bool save)
{
  if (m->job.op == NULL) {
    m->job.op = calloc (1, sizeof *m->job.op);
    if (m->job.op == NULL) {
      log_warn ("export %s: no memory to %s the mirror's job file",
                m->exp->spec.name, save ? "save" : "remove");
      return;
    }
    m->job.op->m = m;
  }
  m->job.want_saved = save;
  m->job.asked++;
  if (!m->job.busy)
    submit (m);
}

void
mirror_job_save (struct mirror *m)
{
  change (m, true);
}

void
mirror_job_forget (struct mirror *m)
{
  change (m, false);
}

void
mirror_job_when_durable (struct mirror *m, struct mirror_job_wait *w)
{
  w->seq = m->job.asked;
  list_add_tail (&m->job.waits, &w->node);
  if (w->seq <= m->job.done)
    loop_defer (m->loop, &m->job.wake, wake, m);
}

void
mirror_job_wait_cancel (struct mirror *m, struct mirror_job_wait *w)
{
  struct list *pos;

  for (pos = m->job.waits.next; pos != &m->job.waits; pos = pos->next)
    if (pos == &w->node) {
      list_del (&w->node);
      list_init (&w->node);
      return;
    }
}

bool
mirror_job_idle (const struct mirror *m)
{
  return !m->job.busy && list_empty (&m->job.waits) && !m->job.wake.queued;
}

void
mirror_job_free (struct mirror *m)
{
  assert (!m->job.busy);
  loop_cancel_deferred (m->loop, &m->job.wake);
  free (m->job.op);
  m->job.op = NULL;
}
