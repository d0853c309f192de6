/* SPDX-License-Identifier: MIT */
/* mirrorctl: parses the global options, runs one command, reports its
 * error once and exits with its code (enum ctl_exit). */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "client.h"
#include "ctl.h"

static void
usage (FILE *fp)
{
  fprintf (fp,
           "Usage: mirrorctl [-s CONTROL_SOCKET] [--json] COMMAND ...\n"
           "Commands:\n");
  commands_usage (fp);
  fprintf (fp,
           "Options:\n"
           "  -s, --socket PATH  control socket (default $" CTL_SOCKET_ENV
           " or " CTL_DEFAULT_SOCKET ")\n"
           "  --json             print the result as one JSON document\n"
           "  -h, --help         print this help\n"
           "  -V, --version      print the version\n"
           "'mirrorctl COMMAND --help' describes a command.\n"
           "Sizes take suffixes (64K, 100M, 1G).  Exit status: 0 ok, 1 the daemon\n"
           "refused or failed, 2 usage, 3 daemon not reachable, 4 --timeout expired.\n");
}

/* Returns -1 to go on with a command, else the exit code. */
static int
parse_global (struct ctl *ctl, int argc, char **argv)
{
  static const struct option opts[] = {
    { "socket", required_argument, NULL, 's' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  int opt;

  opterr = 0;
  while ((opt = getopt_long (argc, argv, "+:s:hV", opts, NULL)) != -1) {
    switch (opt) {
    case 's': ctl->socket_path = optarg; break;
    case 'j': ctl->json = true; break;
    case 'h': usage (stdout); return CTL_OK;
    case 'V': printf ("mirrorctl %s\n", PACKAGE_VERSION); return CTL_OK;
    case ':':
      error_set (0, "option '%s' requires an argument", argv[optind - 1]);
      return CTL_USAGE;
    default:
      error_set (0, "unknown option '%s'", argv[optind - 1]);
      return CTL_USAGE;
    }
  }
  if (optind >= argc) {
    error_set (0, "no command given");
    return CTL_USAGE;
  }
  return -1;
}

static const char *
default_socket (void)
{
  const char *env = getenv (CTL_SOCKET_ENV);

  return env && *env ? env : CTL_DEFAULT_SOCKET;
}

/* With --json a failure is a document too, so a program reads one
 * place: {"error": {"code": EXIT, "errno": N, "message": TEXT}}, where
 * code is the exit status and errno the daemon's (0 for none). */
static void
report_json (const struct ctl *ctl, int code)
{
  json_object *err = json_object_new_object ();
  json_object *doc = json_object_new_object ();

  if (err == NULL || doc == NULL) {
    json_object_put (err);
    json_object_put (doc);
    return;
  }
  json_object_object_add (err, "code", json_object_new_int (code));
  json_object_object_add (err, "errno", json_object_new_int (ctl->daemon_errno));
  json_object_object_add (err, "message", json_object_new_string (error_get ()));
  json_object_object_add (doc, "error", err);
  ctl_print_json (doc);
  fflush (stdout);
  json_object_put (doc);
}

/* Reports the failure of a command, once (on stderr, and with --json
 * also as a document on stdout). */
static void
report (const struct ctl *ctl, int code)
{
  if (ctl->json)
    report_json (ctl, code);
  fprintf (stderr, "mirrorctl: %s\n", error_get ());
  if (code != CTL_USAGE)
    return;
  if (ctl->usage)
    fprintf (stderr, "Usage: mirrorctl [-s CONTROL_SOCKET] [--json] %s\n",
             ctl->usage);
  else
    fprintf (stderr, "Try 'mirrorctl --help' for more information.\n");
}

int
main (int argc, char **argv)
{
  struct ctl ctl = { .socket_path = default_socket () };
  int code;

  signal (SIGPIPE, SIG_IGN);
  code = parse_global (&ctl, argc, argv);
  if (code == -1)
    code = commands_run (&ctl, argc - optind, argv + optind);
  client_close (ctl.client);
  if ((fflush (stdout) == EOF || ferror (stdout)) && code == CTL_OK) {
    error_set (errno, "writing the output");
    code = CTL_FAILED;
  }
  if (code != CTL_OK)
    report (&ctl, code);
  return code;
}
