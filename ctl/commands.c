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
  const char *help;           /* what it does, for --help */
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

/* COMMAND on the export, with the --timeout the daemon enforces; the
 * client allows a grace period for the reply on top.  ETIMEDOUT from
 * the daemon is exit 4. */
static int
timed_call (struct ctl *ctl, const struct ctl_args *a, const char *command,
            json_object **result)
{
  json_object *req = ctl_request (command, "export", a->pos[0]);
  int64_t deadline = 0;
  int r;

  if (a->have_timeout) {
    add_seconds (req, "timeout", a->timeout);
    deadline = ctl_now_ms () + (int64_t) (a->timeout * 1000) + CUTOVER_GRACE_MS;
  }
  r = ctl_call (ctl, req, deadline, result);
  if (r == CTL_FAILED && ctl->daemon_errno == ETIMEDOUT)
    return CTL_TIMEOUT;
  return r;
}

static int
run_mirror_cutover (struct ctl *ctl, const struct ctl_args *a)
{
  json_object *result;
  int r = timed_call (ctl, a, "mirror-cutover", &result);

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
  char dirty[32], off[32], len[32];
  int r;

  if (req && a->have_offset)
    json_object_object_add (req, "offset", json_object_new_int64 ((int64_t) a->offset));
  if (req && a->have_length)
    json_object_object_add (req, "length", json_object_new_int64 ((int64_t) a->length));
  r = ctl_call (ctl, req, 0, &result);
  if (r != CTL_OK)
    return r;
  size_format (field_u64 (result, "dirty_bytes"), dirty, sizeof dirty);
  if (!a->have_offset && (!a->have_length || a->length == 0))
    return ctl_done (ctl, result, "cleared the dirty bitmap of %s (%s dirty now)",
                     a->pos[0], dirty);
  size_format (a->have_offset ? a->offset : 0, off, sizeof off);
  if (a->have_length && a->length)
    size_format (a->length, len, sizeof len);
  else
    snprintf (len, sizeof len, "the rest");
  return ctl_done (ctl, result, "cleared the dirty bitmap of %s for %s at offset "
                   "%s (%s dirty now)", a->pos[0], len, off, dirty);
}

/* migrate incoming|start|handover|abort: start and handover answer
 * when their step is over. */
static int
run_migrate (struct ctl *ctl, const struct ctl_args *a, const char *command,
             const char *done)
{
  json_object *result;
  int r = timed_call (ctl, a, command, &result);

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
  { "status", NULL, 0, 1, 0, run_status, "status [EXPORT]",
    "Shows every export (or EXPORT): role, disk state, dirty bytes, mirror\n"
    "and peer." },
  { "export", "add", 2, 2, ARG_FORMAT | ARG_READONLY, run_export_add,
    "export add NAME PATH [--format raw|qcow2|auto] [--readonly]",
    "Serves the image at PATH as export NAME until it is removed or the\n"
    "daemon stops (not written to the configuration file)." },
  { "export", "remove", 1, 1, 0, run_export_remove, "export remove NAME",
    "Stops serving NAME: its clients are disconnected once their requests\n"
    "are done; its dirty bitmap is kept in the state directory." },
  { "mirror", "start", 2, 2, ARG_MODE | ARG_BANDWIDTH, run_mirror_start,
    "mirror start EXPORT URI [--mode sync|async] [--bandwidth BYTES_PER_S]",
    "Copies EXPORT to the NBD server at URI (nbd://HOST:PORT/NAME,\n"
    "nbds:// for TLS, nbd+unix:///NAME?socket=PATH), then keeps it in sync." },
  { "mirror", "wait", 1, 1, ARG_UNTIL | ARG_TIMEOUT, wait_run,
    "mirror wait EXPORT [--until ready|completed] [--timeout SECONDS]",
    "Waits until the mirror of EXPORT is ready (in sync) or completed (cut\n"
    "over), with a progress bar on a terminal; exit 4 if --timeout passes." },
  { "mirror", "cutover", 1, 1, ARG_TIMEOUT, run_mirror_cutover,
    "mirror cutover EXPORT [--timeout SECONDS]",
    "Holds guest writes, drains the mirror and flushes the target; from\n"
    "then on EXPORT refuses writes.  Exit 4 (nothing changed) if --timeout\n"
    "passes first." },
  { "mirror", "cancel", 1, 1, 0, run_mirror_cancel, "mirror cancel EXPORT",
    "Stops the mirror of EXPORT; the target keeps what it got." },
  { "promote", NULL, 1, 1, ARG_FORCE, run_promote, "promote EXPORT [--force]",
    "Makes this side of the HA pair primary (writable).  Refused when the\n"
    "disk is inconsistent or in split-brain, or the peer is a connected\n"
    "primary, unless --force." },
  { "demote", NULL, 1, 1, ARG_FORCE, run_demote, "demote EXPORT [--force]",
    "Makes this side secondary; it then resyncs from the peer.  Refused\n"
    "while NBD clients are connected, unless --force." },
  { "verify", NULL, 1, 1, 0, run_verify, "verify EXPORT",
    "Reads EXPORT and its peer side by side and reports the blocks that\n"
    "differ." },
  { "bitmap", "clear", 1, 1, ARG_RANGE, run_bitmap_clear,
    "bitmap clear EXPORT [--offset BYTES] [--length BYTES]",
    "Forgets the dirty regions of EXPORT (all, or the range given), e.g.\n"
    "after a backup copied them." },
  { "migrate", "incoming", 1, 1, ARG_TIMEOUT, run_migrate_incoming,
    "migrate incoming EXPORT [--timeout SECONDS]",
    "On the destination of a live migration (the pair's secondary): opens\n"
    "the window.  Clients see EXPORT writable; their writes are refused\n"
    "until the hand-over.  Closes by itself after --timeout (600 s), when\n"
    "its clients all leave, or when the source goes away." },
  { "migrate", "start", 1, 1, ARG_TIMEOUT, run_migrate_start,
    "migrate start EXPORT [--timeout SECONDS]",
    "On the source (the primary): waits until the peer holds everything and\n"
    "its window is open (an async pair runs sync meanwhile)." },
  { "migrate", "handover", 1, 1, ARG_TIMEOUT, run_migrate_handover,
    "migrate handover EXPORT [--timeout SECONDS]",
    "On the source, with its QEMU paused (pre-switchover): drains and\n"
    "flushes to the peer, becomes secondary, and the peer primary (10 s)." },
  { "migrate", "abort", 1, 1, 0, run_migrate_abort, "migrate abort EXPORT",
    "Closes the migration window on either side without a hand-over." },
};

/* The help of each command-specific option. */
static const struct {
  unsigned bit;
  const char *text;
} option_help[] = {
  { ARG_FORMAT, "  --format FMT       raw, qcow2 or auto (default: probed)" },
  { ARG_READONLY, "  --readonly         refuse client writes" },
  { ARG_MODE, "  --mode MODE        sync (writes wait for the target) or async" },
  { ARG_BANDWIDTH, "  --bandwidth SIZE   copy at most SIZE bytes per second" },
  { ARG_UNTIL, "  --until STATE      ready (default) or completed" },
  { ARG_TIMEOUT, "  --timeout SECONDS  give up after that long (exit 4)" },
  { ARG_FORCE, "  --force            skip the safety checks (logged)" },
  { ARG_RANGE, "  --offset SIZE      start of the range (default 0)\n"
               "  --length SIZE      its length (default: to the end)" },
};

#define NR_COMMANDS (sizeof commands / sizeof commands[0])

void
commands_usage (FILE *fp)
{
  for (size_t i = 0; i < NR_COMMANDS; i++)
    fprintf (fp, "  %s\n", commands[i].usage);
}

static int
command_help (const struct command *c)
{
  printf ("Usage: mirrorctl [-s CONTROL_SOCKET] [--json] %s\n%s\nOptions:\n",
          c->usage, c->help);
  for (size_t i = 0; i < sizeof option_help / sizeof option_help[0]; i++)
    if (c->allowed & option_help[i].bit)
      printf ("%s\n", option_help[i].text);
  printf ("  --json             print the result (or the error) as JSON\n"
          "  -s, --socket PATH  the daemon's control socket\n"
          "  -h, --help         print this help\n");
  return CTL_OK;
}

/* "mirrorctl mirror --help": the subcommands of WORD. */
static bool
group_help (int argc, char **argv)
{
  bool any = false;

  if (argc < 2 || (strcmp (argv[1], "--help") != 0 && strcmp (argv[1], "-h") != 0))
    return false;
  for (size_t i = 0; i < NR_COMMANDS; i++)
    if (commands[i].sub && strcmp (commands[i].word, argv[0]) == 0) {
      printf ("%s  %s\n", any ? "" : "Usage: mirrorctl [-s CONTROL_SOCKET] "
              "[--json] COMMAND\nCommands:\n", commands[i].usage);
      any = true;
    }
  if (any)
    printf ("'mirrorctl %s SUBCOMMAND --help' describes one.\n", argv[0]);
  return any;
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

  if (group_help (argc, argv))
    return CTL_OK;
  if ((c = lookup (argc, argv, &sub_used)) == NULL)
    return CTL_USAGE;
  ctl->usage = c->usage;
  argc -= sub_used;
  argv += sub_used;
  if (args_parse (ctl, argc, argv, c->allowed, c->min_pos, c->max_pos, &a) == -1)
    return CTL_USAGE;
  if (a.help)
    return command_help (c);
  return c->run (ctl, &a);
}
