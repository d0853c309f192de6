/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

static const char *log_ident = "mirrord";
static bool log_syslog;
static int log_verbosity;

void
log_init (const char *ident, bool use_syslog, int verbosity)
{
  log_ident = ident;
  log_syslog = use_syslog;
  log_verbosity = verbosity;
  if (use_syslog)
    openlog (ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

bool
log_debug_enabled (void)
{
  return log_verbosity > 0;
}

static const char *
priority_name (int priority)
{
  switch (priority) {
  case LOG_ERR: return "error";
  case LOG_WARNING: return "warning";
  case LOG_INFO: return "info";
  default: return "debug";
  }
}

/* Writes one formatted line. */
static void
log_line (int priority, const char *line)
{
  if (log_syslog) {
    syslog (priority, "%s", line);
    return;
  }

  struct timespec ts;
  struct tm tm;
  char stamp[32];
  clock_gettime (CLOCK_REALTIME, &ts);
  localtime_r (&ts.tv_sec, &tm);
  strftime (stamp, sizeof stamp, "%H:%M:%S", &tm);
  /* One fprintf per line so lines from threads do not interleave. */
  fprintf (stderr, "%s.%03ld %s[%s]: %s\n", stamp, ts.tv_nsec / 1000000,
           log_ident, priority_name (priority), line);
}

void
log_msg (int priority, const char *fmt, ...)
{
  char line[2048];
  va_list ap;

  if (log_verbosity < 0)
    return;
  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  log_line (priority, line);
}

/* ---- Rate limiting ---- */

static pthread_mutex_t limit_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_limit *limits;        /* every limiter used so far */

static uint64_t
mono_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static uint64_t
interval_ns (const struct log_limit *l)
{
  return (uint64_t) (l->interval_ms ? l->interval_ms : LOG_LIMIT_INTERVAL_MS)
    * 1000000u;
}

/* Ends L's window if it is over at NOW (or ALL), reporting what it
 * held back. */
static void
window_end_locked (struct log_limit *l, uint64_t now, bool all)
{
  char line[2048];

  if (!all && now - l->window_start_ns < interval_ns (l))
    return;
  if (l->suppressed > 0) {
    snprintf (line, sizeof line, "suppressed %u similar message%s in %.3g s; "
              "the last: %s", l->suppressed, l->suppressed == 1 ? "" : "s",
              (double) (now - l->window_start_ns) / 1e9, l->last);
    log_line (l->priority, line);
  }
  l->window_start_ns = now;
  l->printed = l->suppressed = 0;
}

bool
log_limited (struct log_limit *l, int priority, const char *fmt, ...)
{
  char line[2048];
  uint64_t now = mono_ns ();
  unsigned burst = l->burst ? l->burst : LOG_LIMIT_BURST;
  bool print;
  va_list ap;

  if (log_verbosity < 0 || (priority == LOG_DEBUG && !log_debug_enabled ()))
    return false;
  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);

  pthread_mutex_lock (&limit_lock);
  if (!l->registered) {
    l->registered = true;
    l->next = limits;
    limits = l;
    l->window_start_ns = now;
  }
  window_end_locked (l, now, false);
  l->priority = priority;
  print = l->printed < burst;
  if (print) {
    l->printed++;
    log_line (priority, line);
  }
  else {
    size_t n = strnlen (line, sizeof l->last - 1);  /* the head says most */
    l->suppressed++;
    memcpy (l->last, line, n);
    l->last[n] = '\0';
  }
  pthread_mutex_unlock (&limit_lock);
  return print;
}

void
log_limits_flush (bool all)
{
  uint64_t now = mono_ns ();

  pthread_mutex_lock (&limit_lock);
  for (struct log_limit *l = limits; l; l = l->next)
    if (l->suppressed > 0)
      window_end_locked (l, now, all);
  pthread_mutex_unlock (&limit_lock);
}
