/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "common/error.h"
#include "mirrord/config.h"  /* not autoconf's <config.h> */

#define DEFAULT_NBD_SOCKET "/run/mirrord/nbd.sock"
#define DEFAULT_CONTROL "/run/mirrord/control.sock"
#define DEFAULT_STATE_DIR "/var/lib/mirrord"
/* Unix-socket clients are the hypervisor's disks: room for many VMs.
 * TCP clients are peers and tools: a few per host, a few hosts. */
#define DEFAULT_MAX_CONNECTIONS_UNIX 1024
#define DEFAULT_MAX_CONNECTIONS_TCP 256
#define DEFAULT_MAX_CONNECTIONS_PER_HOST 32
/* Negotiation (TLS included) takes milliseconds; a client that has not
 * chosen an export by then holds a slot for nothing. */
#define DEFAULT_HANDSHAKE_TIMEOUT 10

/* ---- The INI file ---- */

/* Debian's inih does not stop at the first error, so neither do we:
 * every bad line is reported, each with its own message. */
#define CONFIG_MAX_ERRORS 8

struct file_parse {
  struct config *cfg;
  const char *file;
  FILE *fp;
  int line;                     /* counted by our reader */
  bool have_key;                /* a key since the section: inih reads an
                                 * indented line as its continuation */
  struct export_spec *cur;      /* the [export NAME] being read */
  int *section_line;            /* line of each export's section */
  unsigned nr_errors;
  int error_lines[CONFIG_MAX_ERRORS];
  char errors[900];             /* "FILE:LINE: message" lines */
};

/* Records an error at LINE (past CONFIG_MAX_ERRORS, only counted). */
static void
add_error (struct file_parse *p, int line, const char *msg)
{
  size_t len = strlen (p->errors);

  if (p->nr_errors < CONFIG_MAX_ERRORS) {
    p->error_lines[p->nr_errors] = line;
    snprintf (p->errors + len, sizeof p->errors - len, "%s%s:%d: %s",
              len ? "\n" : "", p->file, line, msg);
  }
  p->nr_errors++;
}

static bool
error_at (const struct file_parse *p, int line)
{
  for (unsigned i = 0; i < p->nr_errors && i < CONFIG_MAX_ERRORS; i++)
    if (p->error_lines[i] == line)
      return true;
  return false;
}

#define SYNTAX_ERROR "syntax error (expected [section], key = value, " \
  "or a ; or # comment)"

/* The lines inih refuses without telling its handler: a section header
 * without "]", and a line that is neither a key nor a continuation. */
static void
check_syntax (struct file_parse *p, const char *line)
{
  const char *start = line;

  while (*start == ' ' || *start == '\t')
    start++;
  if (*start == '\0' || *start == '\n' || *start == '\r' || *start == ';'
      || *start == '#')
    return;
  if (*start == '[') {
    if (strchr (start, ']') == NULL)
      add_error (p, p->line, SYNTAX_ERROR);
    p->have_key = false;
    return;
  }
  if (start > line && p->have_key)
    return;                     /* a continuation of the key above */
  if (strpbrk (start, "=:") == NULL)
    add_error (p, p->line, SYNTAX_ERROR);
}

static int new_export_section (struct file_parse *p, const char *name);
static const char *export_section_name (const char *section);

/* Sees section headers before inih does, so an [export NAME] with no
 * keys still exists (and is then reported for its missing path). */
static void
section_header (struct file_parse *p, const char *line)
{
  char name[512];
  const char *start = line, *end, *ename;

  while (*start == ' ' || *start == '\t')
    start++;
  if (*start != '[' || (end = strchr (start, ']')) == NULL
      || (size_t) (end - start) >= sizeof name)
    return;
  snprintf (name, sizeof name, "%.*s", (int) (end - start - 1), start + 1);
  ename = export_section_name (name);
  p->cur = NULL;
  if (ename != NULL && new_export_section (p, ename) == -1)
    add_error (p, p->line, error_get ());
}

/* inih calls this for each line, so we always know the line number. */
static char *
read_line (char *str, int num, void *stream)
{
  struct file_parse *p = stream;
  char *r = fgets (str, num, p->fp);

  if (r) {
    p->line++;
    check_syntax (p, r);
    section_header (p, r);
  }
  return r;
}

static int
set_string (char **dst, const char *v)
{
  free (*dst);
  *dst = strdup (v);
  return *dst ? 0 : error_set (ENOMEM, "strdup");
}

static int
set_uint (unsigned *dst, const char *key, const char *v)
{
  char *end;
  unsigned long n;

  errno = 0;
  n = strtoul (v, &end, 10);
  if (errno || end == v || *end || n > 1000000)
    return error_set (0, "%s: expected a number, not '%s'", key, v);
  *dst = (unsigned) n;
  return 0;
}

/* The [mirrord] keys: set_global() reads this table and --help prints
 * it.  Most are long options too (the command line wins). */
enum key_kind { KEY_STRING, KEY_UINT, KEY_BOOL, KEY_LISTEN };

struct global_key {
  const char *name;
  enum key_kind kind;
  size_t offset;                /* of the member in struct config */
  const char *value, *help;     /* help only for keys that are no option */
};

#define MEMBER(m) offsetof (struct config, m)
static const struct global_key global_keys[] = {
  { "nbd-socket", KEY_STRING, MEMBER (nbd_socket), NULL, NULL },
  { "nbd-listen", KEY_LISTEN, 0, NULL, NULL },
  { "control", KEY_STRING, MEMBER (control), NULL, NULL },
  { "state-dir", KEY_STRING, MEMBER (state_dir), NULL, NULL },
  { "tls-psk", KEY_STRING, MEMBER (tls_psk), NULL, NULL },
  { "insecure", KEY_BOOL, MEMBER (insecure), NULL, NULL },
  { "pid-file", KEY_STRING, MEMBER (pid_file), NULL, NULL },
  { "max-connections-unix", KEY_UINT, MEMBER (max_connections_unix), "N",
    "NBD clients on unix sockets at once (default 1024)" },
  { "max-connections-tcp", KEY_UINT, MEMBER (max_connections_tcp), "N",
    "NBD clients over TCP at once (default 256, at most half of the open "
    "files limit)" },
  { "max-connections-per-host", KEY_UINT, MEMBER (max_connections_per_host),
    "N", "TCP clients from one address at once (default 32)" },
  { "max-connections", KEY_UINT, MEMBER (max_connections), "N",
    "the default of the two max-connections-... above (the older key)" },
  { "handshake-timeout", KEY_UINT, MEMBER (handshake_timeout), "SECONDS",
    "for a client to finish negotiating, TLS included (default 10)" },
};
#define NR_GLOBAL_KEYS (sizeof global_keys / sizeof global_keys[0])

static int
set_listen (struct config *cfg, const char *v)
{
  if (cfg->nr_listen == CONFIG_MAX_LISTEN)
    return error_set (0, "too many nbd-listen addresses");
  cfg->nbd_listen[cfg->nr_listen] = strdup (v);
  if (cfg->nbd_listen[cfg->nr_listen] == NULL)
    return error_set (ENOMEM, "strdup");
  cfg->nr_listen++;
  return 0;
}

static int
set_bool (bool *dst, const char *key, const char *v)
{
  if (strcmp (v, "true") == 0 || strcmp (v, "yes") == 0 || strcmp (v, "1") == 0)
    *dst = true;
  else if (strcmp (v, "false") == 0 || strcmp (v, "no") == 0 || strcmp (v, "0") == 0)
    *dst = false;
  else
    return error_set (0, "%s: expected true or false, not '%s'", key, v);
  return 0;
}

static int
set_global (struct config *cfg, const char *key, const char *v)
{
  char *base = (char *) cfg;

  for (size_t i = 0; i < NR_GLOBAL_KEYS; i++) {
    const struct global_key *k = &global_keys[i];
    if (strcmp (key, k->name) != 0)
      continue;
    switch (k->kind) {
    case KEY_STRING: return set_string ((char **) (base + k->offset), v);
    case KEY_UINT: return set_uint ((unsigned *) (base + k->offset), key, v);
    case KEY_BOOL: return set_bool ((bool *) (base + k->offset), key, v);
    case KEY_LISTEN: return set_listen (cfg, v);
    }
  }
  return error_set (0, "unknown key '%s' in [mirrord]", key);
}

static int
new_export_section (struct file_parse *p, const char *name)
{
  struct config *cfg = p->cfg;
  struct export_spec *n;

  for (size_t i = 0; i < cfg->nr_exports; i++)
    if (strcmp (cfg->exports[i].name, name) == 0)
      return error_set (0, "export '%s' is defined twice", name);
  int *lines = realloc (p->section_line, (cfg->nr_exports + 1) * sizeof *lines);
  if (lines == NULL)
    return error_set (ENOMEM, "realloc");
  p->section_line = lines;
  lines[cfg->nr_exports] = p->line;
  n = realloc (cfg->exports, (cfg->nr_exports + 1) * sizeof *n);
  if (n == NULL)
    return error_set (ENOMEM, "realloc");
  cfg->exports = n;
  p->cur = &n[cfg->nr_exports++];
  export_spec_init (p->cur);
  p->cur->name = strdup (name);
  return p->cur->name ? 0 : error_set (ENOMEM, "strdup");
}

/* Section "export NAME" -> NAME, or NULL. */
static const char *
export_section_name (const char *section)
{
  if (strncmp (section, "export", 6) != 0 || (section[6] != ' ' && section[6] != '\t'))
    return NULL;
  section += 6;
  while (*section == ' ' || *section == '\t')
    section++;
  return *section ? section : NULL;
}

static int
on_key (void *user, const char *section, const char *key, const char *value)
{
  struct file_parse *p = user;
  const char *ename;
  int r;

  p->have_key = true;
  if (strcmp (section, "mirrord") == 0)
    r = set_global (p->cfg, key, value);
  else if ((ename = export_section_name (section)) != NULL && p->cur)
    r = export_spec_set (p->cur, key, value);
  else if (ename != NULL)
    r = 0;                      /* its header's error is reported */
  else if (section[0] == '\0')
    r = error_set (0, "'%s' is outside any section ([mirrord] or [export NAME])", key);
  else
    r = error_set (0, "unknown section [%s] (expected [mirrord] or [export NAME])",
                   section);
  if (r == -1)
    add_error (p, p->line, error_get ());
  return 1;                     /* on to the next line: all errors count */
}

/* Validates the exports read, naming the line of each section. */
static void
validate_exports (struct file_parse *p, size_t first)
{
  for (size_t i = first; i < p->cfg->nr_exports; i++)
    if (export_spec_validate (&p->cfg->exports[i]) == -1)
      add_error (p, p->section_line[i], error_get ());
}

/* All of P's errors as one message, a line each. */
static int
parse_failed (struct file_parse *p)
{
  free (p->section_line);
  if (p->nr_errors > CONFIG_MAX_ERRORS)
    return error_set (0, "%s\n%s: %u more errors", p->errors, p->file,
                      p->nr_errors - CONFIG_MAX_ERRORS);
  return error_set (0, "%s", p->errors);
}

int
config_parse_file (struct config *cfg, const char *file)
{
  struct file_parse p = { .cfg = cfg, .file = file };
  size_t first = cfg->nr_exports;
  int r;

  p.fp = fopen (file, "r");
  if (p.fp == NULL)
    return error_set (errno, "%s", file);
  r = ini_parse_stream (read_line, &p, on_key, &p);
  fclose (p.fp);
  if (r < 0) {
    free (p.section_line);
    return error_set (ENOMEM, "%s", file);
  }
  /* A line inih refused that our reader did not see as wrong. */
  if (r > 0 && !error_at (&p, r))
    add_error (&p, r, SYNTAX_ERROR);
  if (p.nr_errors == 0)
    validate_exports (&p, first);
  if (p.nr_errors)
    return parse_failed (&p);
  free (p.section_line);
  return 0;
}

int
config_read_exports (const char *file, struct export_spec **exports, size_t *nr)
{
  struct config tmp = { 0 };

  if (config_parse_file (&tmp, file) == -1) {
    config_free (&tmp);
    return -1;
  }
  *exports = tmp.exports;
  *nr = tmp.nr_exports;
  tmp.exports = NULL;
  tmp.nr_exports = 0;
  config_free (&tmp);
  return 0;
}

/* ---- The command line ---- */

enum {
  OPT_EXPORT = 256, OPT_NBD_SOCKET, OPT_NBD_LISTEN, OPT_CONTROL,
  OPT_STATE_DIR, OPT_TLS_PSK, OPT_INSECURE, OPT_VERSION, OPT_PID_FILE,
};

/* The options: getopt's table and --help are both made from this one,
 * so the help lists exactly what the parser takes. */
struct cli_opt {
  const char *name;
  int has_arg;
  int val;                      /* the short option's letter, or OPT_* */
  const char *arg, *help;
};

static const struct cli_opt cli_opts[] = {
  { "config", required_argument, 'c', "FILE",
    "INI configuration: [mirrord] and [export NAME] sections" },
  { "foreground", no_argument, 'f', NULL, "stay in the foreground, log to stderr" },
  { "export", required_argument, OPT_EXPORT, "SPEC",
    "NAME=PATH[,KEY=VALUE|,readonly]...: an export, with the keys below "
    "(repeatable)" },
  { "nbd-socket", required_argument, OPT_NBD_SOCKET, "PATH",
    "NBD unix socket (default " DEFAULT_NBD_SOCKET ")" },
  { "nbd-listen", required_argument, OPT_NBD_LISTEN, "HOST:PORT",
    "also serve NBD over TCP (needs --tls-psk, or --insecure for "
    "plaintext; repeatable)" },
  { "control", required_argument, OPT_CONTROL, "PATH",
    "control socket (default " DEFAULT_CONTROL ")" },
  { "state-dir", required_argument, OPT_STATE_DIR, "DIR",
    "dirty bitmaps and HA state (default " DEFAULT_STATE_DIR ")" },
  { "tls-psk", required_argument, OPT_TLS_PSK, "FILE",
    "TLS-PSK keys (psktool's format): every TCP connection must use TLS" },
  { "insecure", no_argument, OPT_INSECURE, NULL,
    "allow plaintext TCP, and HA replication without TLS-PSK (logged as "
    "a warning)" },
  { "pid-file", required_argument, OPT_PID_FILE, "FILE",
    "write the daemon's pid there once it serves" },
  { "verbose", no_argument, 'v', NULL, "debug logging" },
  { "version", no_argument, OPT_VERSION, NULL, "print the version and exit" },
  { "help", no_argument, 'h', NULL, "print this help and exit" },
};
#define NR_CLI_OPTS (sizeof cli_opts / sizeof cli_opts[0])

/* getopt_long's tables, from cli_opts. */
static void
make_getopt (struct option *longs, char *shorts)
{
  *shorts++ = ':';
  for (size_t i = 0; i < NR_CLI_OPTS; i++) {
    longs[i] = (struct option) { cli_opts[i].name, cli_opts[i].has_arg,
                                 NULL, cli_opts[i].val };
    if (cli_opts[i].val < 256) {
      *shorts++ = (char) cli_opts[i].val;
      if (cli_opts[i].has_arg)
        *shorts++ = ':';
    }
  }
  longs[NR_CLI_OPTS] = (struct option) { NULL, 0, NULL, 0 };
  *shorts = '\0';
}

#define HELP_COLUMN 29
#define HELP_WIDTH 79

/* "  NAME  HELP", HELP wrapped in its column, and starting on the next
 * line when NAME is too long for its own. */
static void
help_line (FILE *fp, const char *name, const char *help)
{
  int col = fprintf (fp, "  %s", name);

  while (*help) {
    size_t room = HELP_WIDTH - HELP_COLUMN, n = strlen (help);
    if (n > room) {             /* break at the last blank that fits */
      n = room;
      while (n > 0 && help[n] != ' ')
        n--;
      if (n == 0)
        n = strcspn (help, " ");
    }
    if (col >= HELP_COLUMN) {
      fputc ('\n', fp);
      col = 0;
    }
    fprintf (fp, "%*s%.*s", HELP_COLUMN - col, "", (int) n, help);
    col = HELP_COLUMN + (int) n;
    help += n;
    while (*help == ' ')
      help++;
  }
  fputc ('\n', fp);
}

static void
usage (FILE *fp)
{
  char name[128];
  const char *key, *value, *help;

  fprintf (fp, "Usage: mirrord [OPTION]...\n"
           "Serves disk images over NBD, tracks writes in persistent dirty "
           "bitmaps\nand mirrors them to a peer.  See mirrord(8).\n\nOptions:\n");
  for (size_t i = 0; i < NR_CLI_OPTS; i++) {
    const struct cli_opt *o = &cli_opts[i];
    if (o->val < 256)
      snprintf (name, sizeof name, "-%c, --%s%s%s", o->val, o->name,
                o->arg ? " " : "", o->arg ? o->arg : "");
    else
      snprintf (name, sizeof name, "    --%s%s%s", o->name,
                o->arg ? " " : "", o->arg ? o->arg : "");
    help_line (fp, name, o->help);
  }
  fprintf (fp, "\nKeys of the file's [mirrord] section (mirrord.conf(5)):\n ");
  for (size_t i = 0; i < NR_GLOBAL_KEYS; i++)
    if (global_keys[i].help == NULL)
      fprintf (fp, " %s", global_keys[i].name);
  fputc ('\n', fp);
  help_line (fp, "", "as the options of the same name");
  for (size_t i = 0; i < NR_GLOBAL_KEYS; i++)
    if (global_keys[i].help) {
      snprintf (name, sizeof name, "%s = %s", global_keys[i].name,
                global_keys[i].value);
      help_line (fp, name, global_keys[i].help);
    }
  fprintf (fp, "\nExport keys ([export NAME] in the file, KEY=VALUE in "
           "--export):\n");
  for (size_t i = 0; export_spec_key (i, &key, &value, &help); i++) {
    snprintf (name, sizeof name, "%s = %s", key, value);
    help_line (fp, name, help);
  }
  fprintf (fp, "\nSizes take suffixes (64K, 100M, 1G).  Exit status: 0 ok, "
           "1 runtime error,\n2 usage or configuration error.\n");
}

/* Command-line values, applied over the file's. */
struct cli {
  struct config set;
  bool insecure_set;
  struct export_spec *exports;
  size_t nr_exports;
};

static int
cli_option (struct cli *cli, int c, const char *arg)
{
  struct config *s = &cli->set;

  switch (c) {
  case 'c': return set_string (&s->config_file, arg);
  case 'f': s->foreground = true; return 0;
  case 'v': s->verbose++; return 0;
  case OPT_NBD_SOCKET: return set_string (&s->nbd_socket, arg);
  case OPT_NBD_LISTEN: return set_listen (s, arg);
  case OPT_CONTROL: return set_string (&s->control, arg);
  case OPT_STATE_DIR: return set_string (&s->state_dir, arg);
  case OPT_TLS_PSK: return set_string (&s->tls_psk, arg);
  case OPT_PID_FILE: return set_string (&s->pid_file, arg);
  case OPT_INSECURE: cli->insecure_set = true; return 0;
  case OPT_EXPORT: {
    struct export_spec *n = realloc (cli->exports,
                                     (cli->nr_exports + 1) * sizeof *n);
    if (n == NULL)
      return error_set (ENOMEM, "realloc");
    cli->exports = n;
    export_spec_init (&n[cli->nr_exports]);
    cli->nr_exports++;
    return export_spec_parse (&n[cli->nr_exports - 1], arg) == -1
      ? error_prefix ("--export") : 0;
  }
  default:
    return error_set (0, "unknown option");
  }
}

static void
take_string (char **dst, char **src)
{
  if (*src) {
    free (*dst);
    *dst = *src;
    *src = NULL;
  }
}

static int
apply_defaults (struct config *cfg)
{
  if ((!cfg->nbd_socket && set_string (&cfg->nbd_socket, DEFAULT_NBD_SOCKET) == -1)
      || (!cfg->control && set_string (&cfg->control, DEFAULT_CONTROL) == -1)
      || (!cfg->state_dir && set_string (&cfg->state_dir, DEFAULT_STATE_DIR) == -1))
    return -1;
  /* max-connections, the older key, is the default of both budgets. */
  if (cfg->max_connections_unix == 0)
    cfg->max_connections_unix = cfg->max_connections
      ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS_UNIX;
  if (cfg->max_connections_tcp == 0)
    cfg->max_connections_tcp = cfg->max_connections
      ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS_TCP;
  if (cfg->max_connections_per_host == 0)
    cfg->max_connections_per_host = DEFAULT_MAX_CONNECTIONS_PER_HOST;
  if (cfg->handshake_timeout == 0)
    cfg->handshake_timeout = DEFAULT_HANDSHAKE_TIMEOUT;
  return 0;
}

/* Command-line values win over the file's. */
static int
merge (struct config *cfg, struct cli *cli)
{
  struct config *s = &cli->set;

  take_string (&cfg->nbd_socket, &s->nbd_socket);
  take_string (&cfg->control, &s->control);
  take_string (&cfg->state_dir, &s->state_dir);
  take_string (&cfg->tls_psk, &s->tls_psk);
  take_string (&cfg->pid_file, &s->pid_file);
  cfg->foreground = s->foreground;
  cfg->verbose = s->verbose;
  if (cli->insecure_set)
    cfg->insecure = true;
  if (s->nr_listen) {
    for (size_t i = 0; i < cfg->nr_listen; i++)
      free (cfg->nbd_listen[i]);
    memcpy (cfg->nbd_listen, s->nbd_listen, sizeof s->nbd_listen);
    cfg->nr_listen = s->nr_listen;
    s->nr_listen = 0;
  }
  for (size_t i = 0; i < cli->nr_exports; i++) {
    struct export_spec *n;
    for (size_t k = 0; k < cfg->nr_exports; k++)
      if (strcmp (cfg->exports[k].name, cli->exports[i].name) == 0)
        return error_set (0, "--export %s: also defined in %s",
                          cli->exports[i].name, cfg->config_file);
    n = realloc (cfg->exports, (cfg->nr_exports + 1) * sizeof *n);
    if (n == NULL)
      return error_set (ENOMEM, "realloc");
    cfg->exports = n;
    n[cfg->nr_exports++] = cli->exports[i];
    export_spec_init (&cli->exports[i]);
  }
  return 0;
}

static void
cli_free (struct cli *cli)
{
  config_free (&cli->set);
  config_free_exports (cli->exports, cli->nr_exports);
}

enum config_result
config_load (struct config *cfg, int argc, char **argv)
{
  struct cli cli = { 0 };
  enum config_result res = CONFIG_ERROR;
  struct option long_options[NR_CLI_OPTS + 1];
  char short_options[2 * NR_CLI_OPTS + 2];
  int c;

  memset (cfg, 0, sizeof *cfg);
  make_getopt (long_options, short_options);
  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, short_options, long_options, NULL)) != -1) {
    if (c == 'h') {
      usage (stdout);
      res = CONFIG_EXIT_OK;
      goto out;
    }
    if (c == OPT_VERSION) {
      printf ("mirrord %s\n", PACKAGE_VERSION);
      res = CONFIG_EXIT_OK;
      goto out;
    }
    if (c == '?' || c == ':') {
      error_set (0, "%s '%s' (see mirrord --help)",
                 c == ':' ? "missing argument for" : "unknown option",
                 argv[optind - 1]);
      goto out;
    }
    if (cli_option (&cli, c, optarg) == -1)
      goto out;
  }
  if (optind < argc) {
    error_set (0, "unexpected argument '%s' (see mirrord --help)", argv[optind]);
    goto out;
  }
  take_string (&cfg->config_file, &cli.set.config_file);
  if (cfg->config_file && config_parse_file (cfg, cfg->config_file) == -1)
    goto out;
  cfg->nr_file_exports = cfg->nr_exports;
  if (merge (cfg, &cli) == -1 || apply_defaults (cfg) == -1)
    goto out;
  res = CONFIG_OK;
 out:
  cli_free (&cli);
  return res;
}

void
config_free_exports (struct export_spec *exports, size_t nr)
{
  for (size_t i = 0; i < nr; i++)
    export_spec_clear (&exports[i]);
  free (exports);
}

void
config_free (struct config *cfg)
{
  free (cfg->config_file);
  free (cfg->nbd_socket);
  for (size_t i = 0; i < cfg->nr_listen; i++)
    free (cfg->nbd_listen[i]);
  free (cfg->control);
  free (cfg->state_dir);
  free (cfg->tls_psk);
  free (cfg->pid_file);
  config_free_exports (cfg->exports, cfg->nr_exports);
  memset (cfg, 0, sizeof *cfg);
}
