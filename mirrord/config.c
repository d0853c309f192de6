/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <errno.h>
#include <getopt.h>
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

struct file_parse {
  struct config *cfg;
  const char *file;
  FILE *fp;
  int line;                     /* counted by our reader */
  struct export_spec *cur;      /* the [export NAME] being read */
  int *section_line;            /* line of each export's section */
  int err_line;                 /* an error found by the reader */
  char msg[512];
};

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
  if (ename == NULL || p->err_line)
    return;
  if (new_export_section (p, ename) == -1) {
    snprintf (p->msg, sizeof p->msg, "%s", error_get ());
    p->err_line = p->line;
  }
}

/* inih calls this for each line, so we always know the line number. */
static char *
read_line (char *str, int num, void *stream)
{
  struct file_parse *p = stream;
  char *r = fgets (str, num, p->fp);

  if (r) {
    p->line++;
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

static int
set_global (struct config *cfg, const char *key, const char *v)
{
  if (strcmp (key, "nbd-socket") == 0)
    return set_string (&cfg->nbd_socket, v);
  if (strcmp (key, "nbd-listen") == 0) {
    if (cfg->nr_listen == CONFIG_MAX_LISTEN)
      return error_set (0, "too many nbd-listen addresses");
    cfg->nbd_listen[cfg->nr_listen] = strdup (v);
    if (cfg->nbd_listen[cfg->nr_listen] == NULL)
      return error_set (ENOMEM, "strdup");
    cfg->nr_listen++;
    return 0;
  }
  if (strcmp (key, "control") == 0)
    return set_string (&cfg->control, v);
  if (strcmp (key, "state-dir") == 0)
    return set_string (&cfg->state_dir, v);
  if (strcmp (key, "tls-psk") == 0)
    return set_string (&cfg->tls_psk, v);
  if (strcmp (key, "pid-file") == 0)
    return set_string (&cfg->pid_file, v);
  if (strcmp (key, "insecure") == 0) {
    if (strcmp (v, "true") == 0 || strcmp (v, "yes") == 0 || strcmp (v, "1") == 0)
      cfg->insecure = true;
    else if (strcmp (v, "false") == 0 || strcmp (v, "no") == 0 || strcmp (v, "0") == 0)
      cfg->insecure = false;
    else
      return error_set (0, "insecure: expected true or false, not '%s'", v);
    return 0;
  }
  if (strcmp (key, "max-connections") == 0)
    return set_uint (&cfg->max_connections, key, v);
  if (strcmp (key, "max-connections-unix") == 0)
    return set_uint (&cfg->max_connections_unix, key, v);
  if (strcmp (key, "max-connections-tcp") == 0)
    return set_uint (&cfg->max_connections_tcp, key, v);
  if (strcmp (key, "max-connections-per-host") == 0)
    return set_uint (&cfg->max_connections_per_host, key, v);
  if (strcmp (key, "handshake-timeout") == 0)
    return set_uint (&cfg->handshake_timeout, key, v);
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

  if (p->err_line)
    return 0;                   /* the reader already failed */
  if (strcmp (section, "mirrord") == 0)
    r = set_global (p->cfg, key, value);
  else if ((ename = export_section_name (section)) != NULL && p->cur)
    r = export_spec_set (p->cur, key, value);
  else if (section[0] == '\0')
    r = error_set (0, "'%s' is outside any section ([mirrord] or [export NAME])", key);
  else
    r = error_set (0, "unknown section [%s] (expected [mirrord] or [export NAME])",
                   section);
  if (r == -1) {
    snprintf (p->msg, sizeof p->msg, "%s", error_get ());
    return 0;                   /* inih stops and reports this line */
  }
  return 1;
}

/* Validates the exports read, naming the line of each section. */
static int
validate_exports (struct file_parse *p, size_t first)
{
  for (size_t i = first; i < p->cfg->nr_exports; i++) {
    if (export_spec_validate (&p->cfg->exports[i]) == -1)
      return error_prefix ("%s:%d", p->file, p->section_line[i]);
  }
  return 0;
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
  if (p.err_line && (r == 0 || r > p.err_line))
    r = p.err_line;
  if (r > 0) {
    free (p.section_line);
    if (p.msg[0])
      return error_set (0, "%s:%d: %s", file, r, p.msg);
    return error_set (0, "%s:%d: syntax error (expected [section], key = value, "
                      "or a ; or # comment)", file, r);
  }
  if (r < 0) {
    free (p.section_line);
    return error_set (ENOMEM, "%s", file);
  }
  r = validate_exports (&p, first);
  free (p.section_line);
  return r;
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
  OPT_STATE_DIR, OPT_TLS_PSK, OPT_INSECURE, OPT_VERSION, OPT_HELP,
  OPT_PID_FILE,
};

static const struct option long_options[] = {
  { "config", required_argument, NULL, 'c' },
  { "foreground", no_argument, NULL, 'f' },
  { "export", required_argument, NULL, OPT_EXPORT },
  { "nbd-socket", required_argument, NULL, OPT_NBD_SOCKET },
  { "nbd-listen", required_argument, NULL, OPT_NBD_LISTEN },
  { "control", required_argument, NULL, OPT_CONTROL },
  { "state-dir", required_argument, NULL, OPT_STATE_DIR },
  { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
  { "insecure", no_argument, NULL, OPT_INSECURE },
  { "pid-file", required_argument, NULL, OPT_PID_FILE },
  { "verbose", no_argument, NULL, 'v' },
  { "version", no_argument, NULL, OPT_VERSION },
  { "help", no_argument, NULL, OPT_HELP },
  { NULL, 0, NULL, 0 },
};

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: mirrord [-c FILE] [-f] [--export SPEC]... [--nbd-socket PATH]\n"
"               [--nbd-listen HOST:PORT] [--control PATH] [--state-dir DIR]\n"
"               [--tls-psk FILE] [--insecure] [--pid-file FILE] [-v]\n"
"               [--version] [--help]\n"
"\n"
"Serves disk images over NBD, tracks writes in persistent dirty bitmaps\n"
"and mirrors them to a peer.\n"
"\n"
"  -c, --config FILE      INI configuration ([mirrord] and [export NAME])\n"
"  -f, --foreground       stay in the foreground, log to stderr\n"
"  --export SPEC          NAME=PATH[,format=raw|qcow2][,role=primary|secondary]\n"
"                         [,peer=URI][,mode=sync|async][,readonly] (repeatable)\n"
"  --nbd-socket PATH      NBD unix socket (default %s)\n"
"  --nbd-listen HOST:PORT also serve NBD over TCP (needs --tls-psk,\n"
"                         or --insecure for plaintext)\n"
"  --control PATH         control socket (default %s)\n"
"  --state-dir DIR        bitmaps and metadata (default %s)\n"
"  --tls-psk FILE         require TLS-PSK on every TCP connection\n"
"  --insecure             allow plaintext TCP, and HA replication\n"
"                         without TLS-PSK (logged as a warning)\n"
"  --pid-file FILE        write the daemon's pid there\n"
"  -v, --verbose          debug logging\n",
           DEFAULT_NBD_SOCKET, DEFAULT_CONTROL, DEFAULT_STATE_DIR);
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
  case OPT_NBD_LISTEN: return set_global (s, "nbd-listen", arg);
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
  int c;

  memset (cfg, 0, sizeof *cfg);
  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, ":c:fv", long_options, NULL)) != -1) {
    if (c == OPT_HELP) {
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
