/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_CONFIG_H
#define MIRRORD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "export.h"

/* mirrord's configuration: command line (SPEC §3) over an INI file over
 * the defaults.
 *
 * The file has a [mirrord] section with the long options' names as
 * keys (nbd-socket, nbd-listen, control, state-dir, tls-psk, insecure,
 * pid-file), the server's limits (max-connections-unix,
 * max-connections-tcp, max-connections-per-host, max-connections for
 * both of the first two, handshake-timeout) and one
 * [export NAME] section per export (path, format, role, peer, mode,
 * granularity, bandwidth, readonly).  Every error names the file and
 * the line.
 */

#define CONFIG_MAX_LISTEN 8

struct config {
  char *config_file;
  bool foreground;
  int verbose;
  char *nbd_socket;
  char *nbd_listen[CONFIG_MAX_LISTEN];
  size_t nr_listen;
  char *control;
  char *state_dir;
  char *tls_psk;
  char *pid_file;
  bool insecure;
  unsigned max_connections;     /* as given: the default of the next two */
  unsigned max_connections_unix;
  unsigned max_connections_tcp;
  unsigned max_connections_per_host;
  unsigned handshake_timeout;   /* seconds */
  struct export_spec *exports;  /* the file's first, then --export's */
  size_t nr_exports;
  size_t nr_file_exports;
};

enum config_result {
  CONFIG_OK,
  CONFIG_EXIT_OK,               /* --help or --version was handled */
  CONFIG_ERROR,                 /* usage or config error: exit 2 */
};

/* Fills CFG from ARGV and the file it names.  On CONFIG_ERROR the
 * message is in error_get(). */
enum config_result config_load (struct config *cfg, int argc, char **argv);

/* Re-reads only the exports of FILE (SIGHUP).  Returns -1 with
 * error_set() on any error, leaving *EXPORTS untouched. */
int config_read_exports (const char *file, struct export_spec **exports,
                         size_t *nr);

/* Parses one INI file into CFG (exports appended). */
int config_parse_file (struct config *cfg, const char *file);

void config_free (struct config *cfg);
void config_free_exports (struct export_spec *exports, size_t nr);

#endif
