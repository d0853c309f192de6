/* SPDX-License-Identifier: MIT */
/* `mirror wait`, done client-side: poll `status EXPORT` until the
 * mirror reaches the --until state (ready or completed), fails, or
 * --timeout passes.  The interval starts at WAIT_POLL_FIRST_MS and
 * doubles up to WAIT_POLL_MS: a mirror that is ready in milliseconds
 * (a sparse or small disk) is seen in milliseconds, a long one costs
 * the daemon five status requests a second.  When stderr is a terminal a
 * one-line progress bar is redrawn there with \r after every poll. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/size.h"
#include "ctl.h"

#define WAIT_POLL_FIRST_MS 2
#define WAIT_POLL_MS 200
#define BAR_WIDTH 30

struct progress {
  bool tty;                   /* draw at all */
  bool drawn;                 /* a line is on screen, unterminated */
};

static void
progress_draw (struct progress *p, json_object *m)
{
  char done[32], total[32], rate[32], eta[32], bar[BAR_WIDTH + 1];
  uint64_t d = field_u64 (m, "done_bytes"), t = field_u64 (m, "total_bytes");
  double pct = print_percent (d, t);
  int fill = (int) (pct * BAR_WIDTH / 100);

  memset (bar, '#', (size_t) fill);
  memset (bar + fill, '.', (size_t) (BAR_WIDTH - fill));
  bar[BAR_WIDTH] = '\0';
  fprintf (stderr, "\r[%s] %5.1f%% %s/%s %s/s ETA %s %s\033[K", bar, pct,
           size_format (d, done, sizeof done), size_format (t, total, sizeof total),
           size_format (field_u64 (m, "rate_bytes_per_s"), rate, sizeof rate),
           print_eta (m, eta, sizeof eta),
           or_default (field_str (m, "state"), "?"));
  fflush (stderr);
  p->drawn = true;
}

static void
progress_end (struct progress *p)
{
  if (p->drawn)
    fputc ('\n', stderr);
  p->drawn = false;
}

/* The mirror object of EXPORT in a status result, or NULL. */
static json_object *
find_mirror (json_object *result, const char *export)
{
  json_object *exports, *e;
  size_t n = 0;

  if (json_object_object_get_ex (result, "exports", &exports)
      && json_object_is_type (exports, json_type_array))
    n = json_object_array_length (exports);
  for (size_t i = 0; i < n; i++) {
    e = json_object_array_get_idx (exports, i);
    if (n == 1 || strcmp (or_default (field_str (e, "name"), ""), export) == 0)
      return field_obj (e, "mirror");
  }
  return NULL;
}

static bool
reached (const char *state, const char *until)
{
  if (strcmp (state, until) == 0)
    return true;
  /* A mirror in cut-over or completed has been ready: it will not
   * become ready again, so waiting for ready is over. */
  return strcmp (until, "ready") == 0
         && (strcmp (state, "cutover") == 0 || strcmp (state, "completed") == 0);
}

/* Sets *DONE when the wait is over.  Returns an exit code. */
static int
check_mirror (const char *export, json_object *m, const char *until, bool *done)
{
  const char *state = or_default (field_str (m, "state"), "?");

  if (m == NULL) {
    error_set (0, "export %s has no mirror", export);
    return CTL_FAILED;
  }
  if (strcmp (state, "failed") == 0 || strcmp (state, "cancelled") == 0) {
    error_set (0, "mirror of %s %s: %s", export, state,
               or_default (field_str (m, "error"), "no error reported"));
    return CTL_FAILED;
  }
  *done = reached (state, until);
  return CTL_OK;
}

/* Sleeps *INTERVAL ms (then doubles it, up to WAIT_POLL_MS), or returns
 * CTL_TIMEOUT at the deadline. */
static int
pause_or_timeout (int64_t deadline_ms, int64_t *interval)
{
  int64_t now = ctl_now_ms (), ms = *interval;
  struct timespec ts;

  if (deadline_ms && now >= deadline_ms)
    return CTL_TIMEOUT;
  if (deadline_ms && deadline_ms - now < ms)
    ms = deadline_ms - now;
  *interval = *interval * 2 > WAIT_POLL_MS ? WAIT_POLL_MS : *interval * 2;
  ts = (struct timespec) { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000 };
  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
  return CTL_OK;
}

static int
poll_loop (struct ctl *ctl, const struct ctl_args *a, int64_t deadline,
           json_object **result)
{
  struct progress p = { .tty = isatty (STDERR_FILENO) };
  const char *export = a->pos[0];
  int64_t interval = WAIT_POLL_FIRST_MS;
  json_object *m;
  bool done = false;
  int r;

  do {
    json_object_put (*result);
    *result = NULL;
    r = ctl_call (ctl, ctl_request ("status", "export", export), deadline, result);
    if (r != CTL_OK)
      break;
    m = find_mirror (*result, export);
    if (p.tty && m)
      progress_draw (&p, m);
    r = check_mirror (export, m, a->until, &done);
    if (r == CTL_OK && !done)
      r = pause_or_timeout (deadline, &interval);
  } while (r == CTL_OK && !done);
  progress_end (&p);
  return r;
}

int
wait_run (struct ctl *ctl, const struct ctl_args *a)
{
  int64_t deadline = 0;
  json_object *result = NULL;
  int r;

  if (a->have_timeout)
    deadline = ctl_now_ms () + (int64_t) (a->timeout * 1000);
  r = poll_loop (ctl, a, deadline, &result);
  if (r == CTL_TIMEOUT)
    error_set (0, "timed out after %gs waiting for the mirror of %s to be %s",
               a->timeout, a->pos[0], a->until);
  if (r == CTL_OK)
    r = ctl_done (ctl, result, "%s: mirror %s", a->pos[0],
                  or_default (field_str (find_mirror (result, a->pos[0]), "state"),
                              a->until));
  else
    json_object_put (result);
  return r;
}
