/* SPDX-License-Identifier: MIT */
/* mirrord: start-up, the daemon's life cycle, signals.
 *
 * Start-up is the only place that may exit(): once the loop runs,
 * every failure is reported and survived.  Exit codes follow SPEC §3:
 * 0 ok, 1 runtime error, 2 usage or config error.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/ioq.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/psk.h"
#include "mirrord/config.h"  /* not autoconf's <config.h> */
#include "control.h"
#include "daemon.h"
#include "export.h"
#include "nbd/server.h"
#include "target.h"

enum exit_code { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

#define AIO_DEPTH 1024
#define IO_THREADS 4
#define SHUTDOWN_POLL_MS 10
#define SHUTDOWN_TIMEOUT_S 30

static struct {
  struct config cfg;
  struct loop *loop;
  struct ioq *ioq;
  int sigfd;
  struct loop_source *sigsrc;
  struct loop_source *shutdown_timer;
  uint64_t shutdown_deadline_ns;
  unsigned flushes_pending;
  enum { RUNNING, DRAINING, FLUSHING, CLOSING } stage;
  int lockfd;
  struct psk_keys *psk;         /* --tls-psk */
  bool reload_waiting;          /* for a removed export to be freed */
  struct loop_deferred reload_later;
} d = { .sigfd = -1, .lockfd = -1 };

/* ---- Start-up ---- */

/* MSG on stderr, "mirrord: " before each of its lines (a config file
 * may have several errors, one a line). */
static void
print_error (const char *msg)
{
  const char *nl;

  while ((nl = strchr (msg, '\n')) != NULL) {
    fprintf (stderr, "mirrord: %.*s\n", (int) (nl - msg), msg);
    msg = nl + 1;
  }
  fprintf (stderr, "mirrord: %s\n", msg);
}

static int
add_exports (const struct config *cfg)
{
  for (size_t i = 0; i < cfg->nr_exports; i++)
    if (export_add (&cfg->exports[i], i < cfg->nr_file_exports) == NULL)
      return -1;
  return 0;
}

/* With keys every TCP connection must use TLS, so any address may
 * listen.  Without, plaintext TCP — loopback too — would let every
 * local user past the NBD socket's permissions (and let anyone who
 * reaches it forge a peer's replication): only if the operator says
 * --insecure. */
static int
check_tcp_policy (const struct config *cfg)
{
  if (cfg->tls_psk) {
    d.psk = psk_load (cfg->tls_psk);
    return d.psk ? 0 : error_prefix ("--tls-psk");
  }
  if (cfg->nr_listen > 0 && !cfg->insecure)
    return error_set (0, "--nbd-listen %s without --tls-psk would serve "
                      "plaintext NBD that any local user can reach, past the "
                      "NBD socket's permissions: give --tls-psk FILE (see "
                      "docs/tls.md), or --insecure to allow it anyway",
                      cfg->nbd_listen[0]);
  return 0;
}

/* In the log the daemon keeps (syslog once daemonized). */
static void
warn_insecure (const struct config *cfg)
{
  if (!cfg->insecure)
    return;
  if (cfg->tls_psk == NULL)
    for (size_t i = 0; i < cfg->nr_listen; i++)
      log_warn ("--insecure: serving plaintext NBD on %s: anyone who can "
                "connect may read and write every export", cfg->nbd_listen[i]);
  log_warn ("--insecure: HA peers may replicate over plaintext connections, "
            "without authentication");
  export_registry_allow_plaintext_peers (true);
}

/* One daemon per state directory. */
static int
lock_state_dir (const char *dir)
{
  char path[4096];

  if (daemon_mkdir_p (dir, 0700) == -1)
    return -1;
  snprintf (path, sizeof path, "%s/mirrord.lock", dir);
  d.lockfd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (d.lockfd == -1)
    return error_set (errno, "%s", path);
  if (flock (d.lockfd, LOCK_EX | LOCK_NB) == -1)
    return error_set (errno == EWOULDBLOCK ? 0 : errno,
                      "%s: another mirrord is using state directory %s",
                      path, dir);
  return 0;
}

static int
setup_signals (void)
{
  sigset_t set;

  signal (SIGPIPE, SIG_IGN);
  sigemptyset (&set);
  sigaddset (&set, SIGTERM);
  sigaddset (&set, SIGINT);
  sigaddset (&set, SIGHUP);
  if (sigprocmask (SIG_BLOCK, &set, NULL) == -1)
    return error_set (errno, "sigprocmask");
  d.sigfd = signalfd (-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (d.sigfd == -1)
    return error_set (errno, "signalfd");
  return 0;
}

static int
setup_tls (const struct config *cfg)
{
  if (d.psk == NULL)
    return 0;
  psk_lock (d.psk);
  if (server_enable_tls (d.psk) == -1
      || target_set_tls_psk (cfg->tls_psk, psk_first_username (d.psk)) == -1)
    return -1;
  log_info ("TLS-PSK: %zu key%s from %s; TCP clients must use TLS",
            d.psk->nr, d.psk->nr == 1 ? "" : "s", cfg->tls_psk);
  return 0;
}

static int
start_listening (const struct config *cfg)
{
  if (daemon_mkdir_parent (cfg->nbd_socket) == -1
      || server_listen_unix (cfg->nbd_socket, 0660) == -1)
    return -1;
  for (size_t i = 0; i < cfg->nr_listen; i++)
    if (server_listen_tcp (cfg->nbd_listen[i]) == -1)
      return -1;
  if (daemon_mkdir_parent (cfg->control) == -1
      || control_init (d.loop, cfg->control) == -1)
    return -1;
  return 0;
}

/* ---- Shutdown ---- */

static void close_exports (void);

static void
flush_done (struct image_io *io, int err)
{
  struct export *e = io->opaque;

  if (err)
    log_err ("export %s: final flush: %s", e->spec.name, strerror (err));
  export_unref (e);
  free (io);
  if (--d.flushes_pending == 0)
    close_exports ();
}

/* Images flushed: close the exports, which stores their bitmaps; the
 * loop stops once the last bitmap write is done. */
static void
close_exports (void)
{
  d.stage = CLOSING;
  export_remove_all ();
}

/* Every client gone and no I/O in flight: flush each image. */
static void
flush_images (void)
{
  d.stage = FLUSHING;
  d.flushes_pending = 1;        /* held until all are submitted */
  for (struct export *e = export_first (); e; e = export_next (e)) {
    struct image_io *io = calloc (1, sizeof *io);
    if (io == NULL)
      continue;
    io->cmd = IMAGE_FLUSH;
    io->done = flush_done;
    io->opaque = e;
    export_ref (e);
    d.flushes_pending++;
    image_submit (e->img, io);
  }
  if (--d.flushes_pending == 0)
    close_exports ();
}

static void
shutdown_poll (void *opaque)
{
  if (d.stage == CLOSING && ioq_in_flight (d.ioq) == 0) {
    loop_stop (d.loop);
    return;
  }
  if (d.stage == DRAINING && server_connection_count () == 0
      && ioq_in_flight (d.ioq) == 0 && export_stop_mirrors ()) {
    flush_images ();
    return;
  }
  if (loop_now_ns () > d.shutdown_deadline_ns) {
    log_warn ("shutdown: %u connections still busy after %d s; stopping",
              server_connection_count (), SHUTDOWN_TIMEOUT_S);
    loop_stop (d.loop);
  }
}

static void
begin_shutdown (int sig)
{
  if (d.shutdown_timer)
    return;
  d.stage = DRAINING;
  log_info ("%s: finishing in-flight requests, then exiting",
            strsignal (sig));
  export_stop_mirrors ();       /* jobs kept: they resume at the next start */
  server_stop_listening ();
  control_stop ();
  server_shutdown_connections ();
  d.shutdown_deadline_ns = loop_now_ns ()
    + (uint64_t) SHUTDOWN_TIMEOUT_S * 1000000000u;
  d.shutdown_timer = loop_add_timer (d.loop, 0, SHUTDOWN_POLL_MS,
                                     shutdown_poll, NULL);
  if (d.shutdown_timer == NULL)
    loop_stop (d.loop);
}

/* ---- Reload (SIGHUP) ---- */

static const struct export_spec *
find_spec (const struct export_spec *specs, size_t nr, const char *name)
{
  for (size_t i = 0; i < nr; i++)
    if (strcmp (specs[i].name, name) == 0)
      return &specs[i];
  return NULL;
}

static void
reload (void)
{
  struct export_spec *specs;
  size_t nr, added = 0, removed = 0;
  struct export *e, *next;

  if (d.cfg.config_file == NULL) {
    log_info ("SIGHUP: no config file to reload");
    return;
  }
  if (config_read_exports (d.cfg.config_file, &specs, &nr) == -1) {
    const char *msg = error_get (), *nl;
    for (; (nl = strchr (msg, '\n')) != NULL; msg = nl + 1)   /* one a line */
      log_err ("reload failed, keeping the running configuration: %.*s",
               (int) (nl - msg), msg);
    log_err ("reload failed, keeping the running configuration: %s", msg);
    return;
  }
  /* Exports that left the file, or changed, go; clients of the others
   * never notice. */
  for (e = export_first (); e; e = next) {
    const struct export_spec *s;
    next = export_next (e);
    if (!e->from_config)
      continue;
    s = find_spec (specs, nr, e->spec.name);
    if (s == NULL || !export_spec_equal (s, &e->spec)) {
      export_remove (e->spec.name);
      removed++;
    }
  }
  for (size_t i = 0; i < nr; i++) {
    if (export_find (specs[i].name))
      continue;
    if (export_add (&specs[i], true) != NULL)
      added++;
    else if (error_errno () == EBUSY && export_draining () > 0) {
      /* Most likely the export's own old instance, whose clients are
       * finishing their requests (the image is open until then). */
      log_info ("reload: %s; trying again once the removed exports "
                "are gone", error_get ());
      d.reload_waiting = true;
    }
    else
      log_err ("reload: %s", error_get ());
  }
  config_free_exports (specs, nr);
  log_info ("reloaded %s: %zu export%s added, %zu removed", d.cfg.config_file,
            added, added == 1 ? "" : "s", removed);
}

static void
reload_again (void *opaque)
{
  (void) opaque;
  if (d.reload_waiting && d.stage == RUNNING) {
    d.reload_waiting = false;
    reload ();
  }
}

/* A removed export was freed: a reload waiting for its image goes on. */
static void
on_export_drained (void)
{
  if (d.reload_waiting && !d.reload_later.queued)
    loop_defer (d.loop, &d.reload_later, reload_again, NULL);
}

static void
on_signal (void *opaque, uint32_t events)
{
  struct signalfd_siginfo si;

  while (read (d.sigfd, &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGHUP)
      reload ();
    else
      begin_shutdown ((int) si.ssi_signo);
  }
}

/* ---- main ---- */

static int
start (void)
{
  struct server_limits limits = {
    .max_unix = d.cfg.max_connections_unix,
    .max_tcp = d.cfg.max_connections_tcp,
    .max_per_host = d.cfg.max_connections_per_host,
    .handshake_timeout_s = d.cfg.handshake_timeout,
  };

  if (setup_signals () == -1 || lock_state_dir (d.cfg.state_dir) == -1)
    return -1;
  warn_insecure (&d.cfg);
  d.loop = loop_new ();
  if (d.loop == NULL)
    return -1;
  d.ioq = ioq_new (d.loop, AIO_DEPTH, IO_THREADS);
  if (d.ioq == NULL || export_registry_init (d.ioq, d.cfg.state_dir) == -1
      || server_init (d.loop, &limits, &export_server_backend,
                      export_meta_providers, EXPORT_NR_META) == -1 || setup_tls (&d.cfg) == -1)
    return -1;
  d.sigsrc = loop_add_fd (d.loop, d.sigfd, EPOLLIN, on_signal, NULL);
  export_on_drained (on_export_drained);
  if (d.sigsrc == NULL || add_exports (&d.cfg) == -1
      || start_listening (&d.cfg) == -1)
    return -1;
  if (d.cfg.pid_file && daemon_write_pid (d.cfg.pid_file) == -1)
    return -1;
  return 0;
}

static void
teardown (void)
{
  export_remove_all ();
  server_free ();               /* connections give their exports back */
  export_registry_reap ();      /* the loop runs no deferred call now */
  control_stop ();
  loop_source_remove (d.shutdown_timer);
  loop_source_remove (d.sigsrc);
  ioq_free (d.ioq);
  loop_free (d.loop);
  bufpool_drain ();
  if (d.cfg.pid_file)
    unlink (d.cfg.pid_file);
  if (d.sigfd >= 0)
    close (d.sigfd);
  if (d.lockfd >= 0)
    close (d.lockfd);
  target_set_tls_psk (NULL, NULL);
  psk_free (d.psk);
  config_free (&d.cfg);
}

int
main (int argc, char **argv)
{
  int ready_fd = -1;

  switch (config_load (&d.cfg, argc, argv)) {
  case CONFIG_EXIT_OK:
    config_free (&d.cfg);
    return EXIT_OK;
  case CONFIG_ERROR:
    print_error (error_get ());
    config_free (&d.cfg);
    return EXIT_USAGE;
  case CONFIG_OK:
    break;
  }
  log_init ("mirrord", false, d.cfg.verbose);
  if (check_tcp_policy (&d.cfg) == -1) {
    fprintf (stderr, "mirrord: %s\n", error_get ());
    config_free (&d.cfg);
    return EXIT_USAGE;
  }
  if (!d.cfg.foreground) {
    /* The parent exits only when the child is serving (or failed), so
     * "mirrord && use-it" works without polling. */
    ready_fd = daemon_fork ();
    if (ready_fd == -1) {
      fprintf (stderr, "mirrord: %s\n", error_get ());
      return EXIT_RUNTIME;
    }
    log_init ("mirrord", true, d.cfg.verbose);
  }
  if (start () == -1) {
    log_err ("%s", error_get ());
    daemon_ready (ready_fd, EXIT_RUNTIME, error_get ());
    teardown ();
    return EXIT_RUNTIME;
  }
  log_info ("mirrord %s ready: %u export%s, NBD on %s, control on %s",
            PACKAGE_VERSION, export_count (), export_count () == 1 ? "" : "s",
            d.cfg.nbd_socket, d.cfg.control);
  daemon_ready (ready_fd, EXIT_OK, NULL);
  if (loop_run (d.loop) == -1) {
    log_err ("%s", error_get ());
    teardown ();
    return EXIT_RUNTIME;
  }
  log_info ("mirrord stopped");
  teardown ();
  return EXIT_OK;
}
