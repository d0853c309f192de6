/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_LOG_H
#define MIRRORD_COMMON_LOG_H

#include <stdbool.h>
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

#endif
