/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_CTL_CTL_H
#define MIRRORD_CTL_CTL_H

/* mirrorctl: the command-line client of the mirrord control socket.
 *
 * Layout: mirrorctl.c parses the global options and reports the final
 * error; args.c parses one command's options; commands.c maps each
 * command to a JSON request; client.c speaks newline-delimited JSON
 * over the unix socket; wait.c is the client-side `mirror wait` loop;
 * print.c renders results as human-readable text; field.c reads
 * members of reply objects; ctl.c holds the request/print helpers.
 *
 * Error convention: every function that fails calls error_set() once
 * and returns an enum ctl_exit code (or -1 where only success/failure
 * matters).  main() prints error_get() once and exits with the code.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

enum ctl_exit {
  CTL_OK = 0,           /* success */
  CTL_FAILED = 1,       /* the daemon refused or failed, or a bad reply */
  CTL_USAGE = 2,        /* bad or missing arguments */
  CTL_UNREACHABLE = 3,  /* cannot connect, or closed without a reply */
  CTL_TIMEOUT = 4,      /* --timeout expired */
};

#define CTL_DEFAULT_SOCKET "/run/mirrord/control.sock"
#define CTL_SOCKET_ENV "MIRRORD_CONTROL"

struct client;

struct ctl {
  const char *socket_path;
  bool json;                  /* --json: print the result document */
  struct client *client;      /* connected on the first request */
  const char *usage;          /* usage line of the failing command */
  int daemon_errno;           /* "errno" of the last refusal, or 0 */
};

/* The options and positional arguments of one command. */
#define CTL_MAX_POS 2
struct ctl_args {
  const char *pos[CTL_MAX_POS];
  int npos;
  bool help;
  const char *format;         /* --format, NULL if not given */
  bool readonly;              /* --readonly */
  const char *mode;           /* --mode */
  bool have_bandwidth;
  uint64_t bandwidth;         /* --bandwidth, bytes per second */
  const char *until;          /* --until */
  bool have_timeout;
  double timeout;             /* --timeout, seconds */
  bool force;                 /* --force */
  bool have_offset, have_length;
  uint64_t offset, length;    /* --offset, --length (sizes) */
};

/* Which options a command accepts (--json, -s and --help always). */
enum {
  ARG_FORMAT = 1 << 0,
  ARG_READONLY = 1 << 1,
  ARG_MODE = 1 << 2,
  ARG_BANDWIDTH = 1 << 3,
  ARG_UNTIL = 1 << 4,
  ARG_TIMEOUT = 1 << 5,
  ARG_FORCE = 1 << 6,
  ARG_RANGE = 1 << 7,         /* --offset and --length */
};

/* args.c: parses ARGV (ARGV[0] is the command word) into A.  Returns 0,
 * or -1 with error_set() on a usage error. */
int args_parse (struct ctl *ctl, int argc, char **argv, unsigned allowed,
                int min_pos, int max_pos, struct ctl_args *a);

/* commands.c: runs the command in ARGV[0..].  Returns an exit code. */
int commands_run (struct ctl *ctl, int argc, char **argv);
void commands_usage (FILE *fp);

/* A request {"command": COMMAND, KEY: VALUE}, without KEY if VALUE is
 * NULL.  NULL when out of memory (ctl_call reports it). */
json_object *ctl_request (const char *command, const char *key,
                          const char *value);
/* Sends REQ (consumed) and returns its "result" in *RESULT (owned by
 * the caller).  DEADLINE_MS is a ctl_now_ms() time, 0 for none. */
int ctl_call (struct ctl *ctl, json_object *req, int64_t deadline_ms,
              json_object **result);
/* Prints RESULT (consumed) as JSON with --json, else the printf-style
 * confirmation line.  Returns an exit code. */
__attribute__ ((format (printf, 3, 4)))
int ctl_done (struct ctl *ctl, json_object *result, const char *fmt, ...);
void ctl_print_json (json_object *obj);
int64_t ctl_now_ms (void);

/* wait.c */
int wait_run (struct ctl *ctl, const struct ctl_args *a);

/* field.c: typed, NULL-safe reads of object members. */
const char *field_str (json_object *obj, const char *key);     /* or NULL */
uint64_t field_u64 (json_object *obj, const char *key);        /* or 0 */
bool field_has (json_object *obj, const char *key);            /* non-null */
json_object *field_obj (json_object *obj, const char *key);    /* or NULL */
bool field_bool (json_object *obj, const char *key);           /* or false */
static inline const char *
or_default (const char *s, const char *def)
{
  return s ? s : def;
}

/* print.c: human-readable output. */
void print_status (json_object *result);
void print_verify (const char *export, json_object *result);
/* The mirror M's "eta_s" as 1h02m03s, or "unknown" when null. */
const char *print_eta (json_object *m, char *buf, size_t len);
/* DONE of TOTAL in percent, rounded down to 0.1 (100 when TOTAL is 0). */
double print_percent (uint64_t done, uint64_t total);

#endif
