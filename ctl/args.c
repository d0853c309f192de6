/* SPDX-License-Identifier: MIT */
/* Option parsing for one mirrorctl command.  Every command shares one
 * option table; a mask says which options the command accepts, so an
 * option given to the wrong command is a usage error.  Options may
 * appear before, between or after the positional arguments. */
#include <config.h>

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/size.h"
#include "ctl.h"

enum {
  OPT_FORMAT = 256, OPT_READONLY, OPT_MODE, OPT_BANDWIDTH, OPT_UNTIL,
  OPT_TIMEOUT, OPT_FORCE, OPT_JSON, OPT_OFFSET, OPT_LENGTH,
};

static const struct option options[] = {
  { "format", required_argument, NULL, OPT_FORMAT },
  { "readonly", no_argument, NULL, OPT_READONLY },
  { "mode", required_argument, NULL, OPT_MODE },
  { "bandwidth", required_argument, NULL, OPT_BANDWIDTH },
  { "until", required_argument, NULL, OPT_UNTIL },
  { "timeout", required_argument, NULL, OPT_TIMEOUT },
  { "force", no_argument, NULL, OPT_FORCE },
  { "offset", required_argument, NULL, OPT_OFFSET },
  { "length", required_argument, NULL, OPT_LENGTH },
  { "json", no_argument, NULL, OPT_JSON },
  { "socket", required_argument, NULL, 's' },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

/* The ARG_* bit of each command-specific option. */
static unsigned
option_bit (int opt)
{
  switch (opt) {
  case OPT_FORMAT: return ARG_FORMAT;
  case OPT_READONLY: return ARG_READONLY;
  case OPT_MODE: return ARG_MODE;
  case OPT_BANDWIDTH: return ARG_BANDWIDTH;
  case OPT_UNTIL: return ARG_UNTIL;
  case OPT_TIMEOUT: return ARG_TIMEOUT;
  case OPT_FORCE: return ARG_FORCE;
  case OPT_OFFSET: case OPT_LENGTH: return ARG_RANGE;
  default: return 0;
  }
}

static int
one_of (const char *opt, const char *value, const char *const *choices)
{
  for (size_t i = 0; choices[i]; i++)
    if (strcmp (value, choices[i]) == 0)
      return 0;
  return error_set (0, "invalid --%s '%s'", opt, value);
}

static int
parse_seconds (const char *str, double *out)
{
  char *end;
  double v;

  v = strtod (str, &end);
  if (end == str || *end != '\0' || !isfinite (v) || v < 0 || v > 1e9)
    return error_set (0, "invalid --timeout '%s': expected seconds", str);
  *out = v;
  return 0;
}

static int
set_option (struct ctl *ctl, int opt, const char *val, struct ctl_args *a)
{
  static const char *const formats[] = { "raw", "qcow2", "auto", NULL };
  static const char *const modes[] = { "sync", "async", NULL };
  static const char *const untils[] = { "ready", "completed", NULL };

  switch (opt) {
  case OPT_FORMAT: a->format = val; return one_of ("format", val, formats);
  case OPT_READONLY: a->readonly = true; return 0;
  case OPT_MODE: a->mode = val; return one_of ("mode", val, modes);
  case OPT_BANDWIDTH:
    a->have_bandwidth = true;
    return size_parse (val, &a->bandwidth);
  case OPT_UNTIL: a->until = val; return one_of ("until", val, untils);
  case OPT_TIMEOUT:
    a->have_timeout = true;
    return parse_seconds (val, &a->timeout);
  case OPT_FORCE: a->force = true; return 0;
  case OPT_OFFSET:
    a->have_offset = true;
    return size_parse (val, &a->offset);
  case OPT_LENGTH:
    a->have_length = true;
    return size_parse (val, &a->length);
  case OPT_JSON: ctl->json = true; return 0;
  case 's': ctl->socket_path = val; return 0;
  case 'h': a->help = true; return 0;
  default: return error_set (0, "internal error: option %d", opt);
  }
}

static int
bad_option (int opt, char **argv)
{
  const char *arg = argv[optind - 1];

  for (size_t i = 0; options[i].name; i++)
    if (options[i].val == opt)
      return error_set (0, "option '--%s' is not valid here", options[i].name);
  if (optopt > 0 && optopt < 256)
    return error_set (0, opt == ':' ? "option '-%c' requires an argument"
                      : "unknown option '-%c'", optopt);
  if (opt == ':')
    return error_set (0, "option '%s' requires an argument", arg);
  return error_set (0, "unknown option '%s'", arg);
}

static int
take_positionals (int argc, char **argv, int min_pos, int max_pos,
                  struct ctl_args *a)
{
  int n = argc - optind;

  if (a->help)
    return 0;
  if (n < min_pos)
    return error_set (0, "missing argument");
  if (n > max_pos)
    return error_set (0, "unexpected argument '%s'", argv[optind + max_pos]);
  for (a->npos = 0; a->npos < n; a->npos++)
    a->pos[a->npos] = argv[optind + a->npos];
  return 0;
}

int
args_parse (struct ctl *ctl, int argc, char **argv, unsigned allowed,
            int min_pos, int max_pos, struct ctl_args *a)
{
  int opt;

  *a = (struct ctl_args) { .until = "ready" };
  optind = 0;           /* reinitialize getopt for this argument vector */
  opterr = 0;
  while ((opt = getopt_long (argc, argv, ":s:h", options, NULL)) != -1) {
    unsigned bit = option_bit (opt);
    if (opt == '?' || opt == ':' || (bit && !(allowed & bit)))
      return bad_option (opt, argv);
    if (set_option (ctl, opt, optarg, a) == -1)
      return -1;
  }
  return take_positionals (argc, argv, min_pos, max_pos, a);
}
