/* SPDX-License-Identifier: MIT */
/* The mirrorctl commands: a table from command words to argument rules
 * and a run function that builds the JSON request, sends it and
 * prints the result.  `mirror wait` is client-side (wait.c). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/size.h"
#include "ctl.h"

typedef int (*run_fn) (struct ctl *ctl, const struct ctl_args *a);

struct command {
  const char *word;           /* "status", "export", "mirror", ... */
  const char *sub;            /* "add", "start", ... or NULL */
  int min_pos, max_pos;
  unsigned allowed;           /* ARG_* bits */
  run_fn run;
  const char *usage;
};

static void
add_str (json_object *req, const char *key, const char *val)
{
  if (req && val)
    json_object_object_add (req, key, json_object_new_string (val));
}

static void
add_bool (json_object *req, const char *key, bool val)
{
  if (req)
    json_object_object_add (req, key, json_object_new_boolean (val));
}

/* Whole seconds as an integer, fractions as a double. */
static void
add_seconds (json_object *req, const char *key, double val)
{
  if (req == NULL)
    return;
  if (val == (double) (int64_t) val)
    json_object_object_add (req, key, json_object_new_int64 ((int64_t) val));
  else
    json_object_object_add (req, key, json_object_new_double (val));
}

static int
run_status (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *result;
  int r;

  r = ctl_call (ctl, ctl_request ("status", "export", a->pos[0]), 0, &result);
  if (r != CTL_OK)
    return r;
  if (ctl->json)
    ctl_print_json (result);
  else
    print_status (result);
  json_object_put (result);
  return CTL_OK;
}

static int
run_export_add (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *req = ctl_request ("export-add", "name", a->pos[0]);
  json_object *result;
  char size[32];
  int r;

  add_str (req, "path", a->pos[1]);
  add_str (req, "format", a->format ? a->format : "auto");
  add_bool (req, "readonly", a->readonly);
  if ((r = ctl_call (ctl, req, 0, &result)) != CTL_OK)
    return r;
  size_format (field_u64 (result, "size"), size, sizeof size);
  return ctl_done (ctl, result, "added export %s: %s %s %s%s", a->pos[0],
                   or_default (field_str (result, "format"), "?"), size,
                   or_default (field_str (result, "path"), a->pos[1]),
                   field_bool (result, "readonly") ? " (readonly)" : "");
}

static int
run_export_remove (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *result;
  int r;

  r = ctl_call (ctl, ctl_request ("export-remove", "name", a->pos[0]), 0, &result);
  if (r != CTL_OK)
    return r;
  return ctl_done (ctl, result, "removed export %s", a->pos[0]);
}

static int
run_mirror_start (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *req = ctl_request ("mirror-start", "export", a->pos[0]);
  json_object *result;
  int r;

  add_str (req, "uri", a->pos[1]);
  add_str (req, "mode", a->mode);
  if (req && a->have_bandwidth)
    json_object_object_add (req, "bandwidth",
                            json_object_new_uint64 (a->bandwidth));
  if ((r = ctl_call (ctl, req, 0, &result)) != CTL_OK)
    return r;
  return ctl_done (ctl, result, "started mirror of %s to %s", a->pos[0],
                   a->pos[1]);
}

/* The daemon enforces the cut-over --timeout; the client allows a grace
 * period for the reply before it gives up itself. */
#define CUTOVER_GRACE_MS 10000

static int
run_mirror_cutover (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *req = ctl_request ("mirror-cutover", "export", a->pos[0]);
  json_object *result;
  int64_t deadline = 0;
  int r;

  if (a->have_timeout) {
    add_seconds (req, "timeout", a->timeout);
    deadline = ctl_now_ms () + (int64_t) (a->timeout * 1000) + CUTOVER_GRACE_MS;
  }
  r = ctl_call (ctl, req, deadline, &result);
  if (r == CTL_FAILED && a->have_timeout && ctl->daemon_errno == ETIMEDOUT)
    return CTL_TIMEOUT;
  if (r != CTL_OK)
    return r;
  return ctl_done (ctl, result, "cut over %s", a->pos[0]);
}

static int
run_simple (struct ctl *ctl, const char *command, const char *export,
            const char *done)
{
  json_object *result;
  int r;

  r = ctl_call (ctl, ctl_request (command, "export", export), 0, &result);
  if (r != CTL_OK)
    return r;
  return ctl_done (ctl, result, "%s: %s", export, done);
}

static int
run_mirror_cancel (struct ctl *ctl, const struct ctl_args *a)
{
  return run_simple (ctl, "mirror-cancel", a->pos[0], "mirror cancelled");
}

static int
run_demote (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *req = ctl_request ("demote", "export", a->pos[0]);
  json_object *result;
  int r;

  add_bool (req, "force", a->force);
  if ((r = ctl_call (ctl, req, 0, &result)) != CTL_OK)
    return r;
  return ctl_done (ctl, result, "%s: demoted to secondary", a->pos[0]);
}

static int
run_promote (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *req = ctl_request ("promote", "export", a->pos[0]);
  json_object *result;
  int r;

  add_bool (req, "force", a->force);
  if ((r = ctl_call (ctl, req, 0, &result)) != CTL_OK)
    return r;
  return ctl_done (ctl, result, "%s: promoted to primary", a->pos[0]);
}

static int
run_verify (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *result;
  int r;

  r = ctl_call (ctl, ctl_request ("verify", "export", a->pos[0]), 0, &result);
  if (r != CTL_OK)
    return r;
  if (ctl->json)
    ctl_print_json (result);
  else
    print_verify (a->pos[0], result);
  json_object_put (result);
  return CTL_OK;
}

static int
run_bitmap_clear (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *req = ctl_request ("bitmap-clear", "export", a->pos[0]);
  json_object *result;
  int r;

  if (req && a->have_offset)
    json_object_object_add (req, "offset", json_object_new_int64 ((int64_t) a->offset));
  if (req && a->have_length)
    json_object_object_add (req, "length", json_object_new_int64 ((int64_t) a->length));
  r = ctl_call (ctl, req, 0, &result);
  if (r != CTL_OK)
    return r;
  return ctl_done (ctl, result, "cleared the dirty bitmap of %s", a->pos[0]);
}

/* migrate incoming|start|handover|abort: the daemon enforces --timeout
 * (start and handover answer when their step is over); the client
 * allows the cut-over's grace period on top. */
static int
run_migrate (struct ctl *ctl, const struct ctl_args *a, const char *command,
             const char *done)
{
  json_object *req = ctl_request (command, "export", a->pos[0]);
  json_object *result;
  int64_t deadline = 0;
  int r;

  if (a->have_timeout) {
    add_seconds (req, "timeout", a->timeout);
    deadline = ctl_now_ms () + (int64_t) (a->timeout * 1000) + CUTOVER_GRACE_MS;
  }
  r = ctl_call (ctl, req, deadline, &result);
  if (r == CTL_FAILED && ctl->daemon_errno == ETIMEDOUT)
    return CTL_TIMEOUT;
  if (r != CTL_OK)
    return r;
  return ctl_done (ctl, result, "%s: %s", a->pos[0], done);
}

static int
run_migrate_incoming (struct ctl *ctl, const struct ctl_args *a)
{
  return run_migrate (ctl, a, "migrate-incoming",
                      "migration window open (writes refused until the hand-over)");
}

static int
run_migrate_start (struct ctl *ctl, const struct ctl_args *a)
{
  return run_migrate (ctl, a, "migrate-start", "ready to hand over");
}

static int
run_migrate_handover (struct ctl *ctl, const struct ctl_args *a)
{
  return run_migrate (ctl, a, "migrate-handover", "handed over to the peer");
}

static int
run_migrate_abort (struct ctl *ctl, const struct ctl_args *a)
{
  return run_simple (ctl, "migrate-abort", a->pos[0], "migration aborted");
}

static const struct command commands[] = {
  { "status", NULL, 0, 1, 0, run_status, "status [EXPORT]" },
  { "export", "add", 2, 2, ARG_FORMAT | ARG_READONLY, run_export_add,
    "export add NAME PATH [--format raw|qcow2|auto] [--readonly]" },
  { "export", "remove", 1, 1, 0, run_export_remove, "export remove NAME" },
  { "mirror", "start", 2, 2, ARG_MODE | ARG_BANDWIDTH, run_mirror_start,
    "mirror start EXPORT URI [--mode sync|async] [--bandwidth BYTES_PER_S]" },
  { "mirror", "wait", 1, 1, ARG_UNTIL | ARG_TIMEOUT, wait_run,
    "mirror wait EXPORT [--until ready|completed] [--timeout SECONDS]" },
  { "mirror", "cutover", 1, 1, ARG_TIMEOUT, run_mirror_cutover,
    "mirror cutover EXPORT [--timeout SECONDS]" },
  { "mirror", "cancel", 1, 1, 0, run_mirror_cancel, "mirror cancel EXPORT" },
  { "promote", NULL, 1, 1, ARG_FORCE, run_promote, "promote EXPORT [--force]" },
  { "demote", NULL, 1, 1, ARG_FORCE, run_demote, "demote EXPORT [--force]" },
  { "verify", NULL, 1, 1, 0, run_verify, "verify EXPORT" },
  { "bitmap", "clear", 1, 1, ARG_RANGE, run_bitmap_clear,
    "bitmap clear EXPORT [--offset BYTES] [--length BYTES]" },
  { "migrate", "incoming", 1, 1, ARG_TIMEOUT, run_migrate_incoming,
    "migrate incoming EXPORT [--timeout SECONDS]" },
  { "migrate", "start", 1, 1, ARG_TIMEOUT, run_migrate_start,
    "migrate start EXPORT [--timeout SECONDS]" },
  { "migrate", "handover", 1, 1, ARG_TIMEOUT, run_migrate_handover,
    "migrate handover EXPORT [--timeout SECONDS]" },
  { "migrate", "abort", 1, 1, 0, run_migrate_abort, "migrate abort EXPORT" },
};

#define NR_COMMANDS (sizeof commands / sizeof commands[0])

void
commands_usage (FILE *fp)
{
  for (size_t i = 0; i < NR_COMMANDS; i++)
    fprintf (fp, "  %s\n", commands[i].usage);
}

/* Finds the command named by ARGV; *SUB_USED says whether it took a
 * second word.  Returns NULL with error_set() if there is none. */
static const struct command *
lookup (int argc, char **argv, bool *sub_used)
{
  bool group = false;

  for (size_t i = 0; i < NR_COMMANDS; i++) {
    const struct command *c = &commands[i];
    if (strcmp (argv[0], c->word) != 0)
      continue;
    group = c->sub != NULL;
    *sub_used = group;
    if (!group || (argc > 1 && strcmp (argv[1], c->sub) == 0))
      return c;
  }
  if (group && argc > 1)
    error_set (0, "unknown command '%s %s'", argv[0], argv[1]);
  else if (group)
    error_set (0, "'%s' needs a subcommand", argv[0]);
  else
    error_set (0, "unknown command '%s'", argv[0]);
  return NULL;
}

int
commands_run (struct ctl *ctl, int argc, char **argv)
{
  const struct command *c;
  struct ctl_args a;
  bool sub_used;

  if ((c = lookup (argc, argv, &sub_used)) == NULL)
    return CTL_USAGE;
  ctl->usage = c->usage;
  argc -= sub_used;
  argv += sub_used;
  if (args_parse (ctl, argc, argv, c->allowed, c->min_pos, c->max_pos, &a) == -1)
    return CTL_USAGE;
  if (a.help) {
    printf ("Usage: mirrorctl [-s CONTROL_SOCKET] [--json] %s\n", c->usage);
    return CTL_OK;
  }
  return c->run (ctl, &a);
}
