/* SPDX-License-Identifier: MIT */
#include <config.h>

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
