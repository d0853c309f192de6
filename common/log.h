/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_LOG_H
#define MIRRORD_COMMON_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

/* Logging: to stderr with a timestamp in the foreground, to syslog
 * (facility daemon) once daemonized.  Safe from any thread.
 * verbosity 0 logs up to LOG_INFO, 1 and more adds LOG_DEBUG; a negative
 * one logs nothing (the fuzz targets, which take error paths millions of
 * times). */
void log_init (const char *ident, bool use_syslog, int verbosity);
bool log_debug_enabled (void);

__attribute__ ((format (printf, 2, 3)))
void log_msg (int priority, const char *fmt, ...);

#define log_err(...)   log_msg (LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg (LOG_WARNING, __VA_ARGS__)
#define log_info(...)  log_msg (LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
  do { if (log_debug_enabled ()) log_msg (LOG_DEBUG, __VA_ARGS__); } while (0)

/* Rate limiting, for lines that a client can make us log as often as
 * it likes (a refused connection, a failed handshake, accept errors):
 * one limiter per call site lets BURST lines through in each window of
 * INTERVAL_MS and counts the rest.  The first line after the window,
 * or log_limits_flush() once the window is over, reports them:
 *   "suppressed 2041 similar messages in 10 s; the last: ..."
 * so a flood costs a few lines, and nothing is silently lost.
 * Limiters are safe from any thread (one lock); a limiter registers
 * itself on first use so the flush finds it. */
struct log_limit {
  unsigned interval_ms, burst;  /* 0: LOG_LIMIT_INTERVAL_MS, _BURST */
  /* State, zero to begin with. */
  struct log_limit *next;
  bool registered;
  int priority;
  uint64_t window_start_ns;
  unsigned printed, suppressed;
  char last[256];
};
#define LOG_LIMIT_INTERVAL_MS 10000
#define LOG_LIMIT_BURST 5

/* Logs like log_msg() unless L's window is full.  Returns true if the
 * line was logged. */
__attribute__ ((format (printf, 3, 4)))
bool log_limited (struct log_limit *l, int priority, const char *fmt, ...);
/* Reports the count of every limiter whose window is over (the daemon's
 * housekeeping tick calls it once a second), or with ALL, of every
 * limiter (at exit). */
void log_limits_flush (bool all);

/* A limiter of its own for this call site. */
#define log_ratelimit(priority, ...) \
  do { static struct log_limit log_limit_site_; \
       log_limited (&log_limit_site_, priority, __VA_ARGS__); } while (0)

#endif
