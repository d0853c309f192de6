/* SPDX-License-Identifier: MIT */
/* The NBD server in-process, driven through a socketpair.
 *
 * Rather than carve the parsers out of the connection state machine,
 * the fuzz targets drive the real one: the server adopts one end of a
 * socketpair (server_add_connection, as if accepted), and a client on
 * the same loop writes the input to the other end as fast as the
 * server takes it; replies are read and thrown away.  At each pause
 * point the caller gives (after each option, say), and at the end, the
 * client waits until the server is quiet — it has taken every byte
 * sent and has no I/O in flight — before it goes on, or at the end
 * half-closes.  So replies are not lost to a hang-up that came too
 * early (the server owes nothing to a client that hung up), and
 * STARTTLS can be answered before what follows it arrives.
 * So every byte goes through conn.c's receive, buffering and flow
 * control, the handshake and transmission parsers, block-status, the
 * export layer (dirty bitmap included) and the raw image driver, just
 * as from a real client — and a stream that wedges the server shows up
 * as a libFuzzer timeout.
 *
 * One input is over when the server has closed the connection, freed
 * it (after its last request completed) and no I/O is in flight.  A
 * prepare hook, run before the loop would wait (after replies went
 * out), checks these conditions.  The exports and their files persist between inputs (the
 * daemon's exports outlive clients too); their contents only steer
 * which paths reads and block status take.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/ioq.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/psk.h"
#include "mirrord/export.h"
#include "nbd/server.h"
#include "fuzz.h"
#include "nbd-harness.h"

#define DISK_SIZE (1u << 20)
#define RO_DISK_SIZE ((1u << 20) + 512)   /* not a multiple of 4 KiB */
/* Any key will do: no input can complete a PSK handshake without it,
 * but STARTTLS then runs gnutls over what the input sends. */
#define PSK_TEXT "fuzz:000102030405060708090a0b0c0d0e0f\n"

static struct {
  struct loop *loop;
  struct ioq *ioq;
  struct psk_keys *keys;
  char dir[64];
  char paths[4][96];            /* disk, ro disk, their bitmap files */
  bool running;
} h;

struct client {
  int fd;
  struct loop_source *src;
  const uint8_t *data;
  size_t size, sent, received;
  const size_t *pauses;         /* offsets to wait at, increasing */
  size_t nr_pauses, next_pause;
  size_t limit;                 /* send up to here for now */
  bool shut;                    /* everything sent: SHUT_WR done */
  bool eof;                     /* the server closed its end */
};

static struct client *current;

static void
die (const char *what)
{
  fprintf (stderr, "nbd-harness: %s: %s\n", what, error_get ());
  abort ();
}

/* A disk image with a few data runs and holes between them, so reads
 * and base:allocation meet both. */
static void
make_disk (const char *path, uint64_t size)
{
  static const uint64_t runs[][2] = { { 0, 65536 }, { 200000, 5000 },
                                      { 524288, 8192 } };
  uint8_t buf[8192];
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

  if (fd == -1 || ftruncate (fd, (off_t) size) == -1) {
    perror (path);
    abort ();
  }
  for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++)
    for (uint64_t off = runs[r][0]; off < runs[r][0] + runs[r][1]; off += sizeof buf) {
      size_t n = runs[r][0] + runs[r][1] - off < sizeof buf
        ? (size_t) (runs[r][0] + runs[r][1] - off) : sizeof buf;
      memset (buf, (int) (off >> 12) + 1, n);
      if (pwrite (fd, buf, n, (off_t) off) != (ssize_t) n) {
        perror (path);
        abort ();
      }
    }
  close (fd);
}

static void
add_export (const char *def)
{
  struct export_spec spec;

  export_spec_init (&spec);
  if (export_spec_parse (&spec, def) == -1 || export_add (&spec, false) == NULL)
    die (def);
  export_spec_clear (&spec);
}

static void client_send (struct client *cl);

/* The server took every byte sent and has no I/O in flight. */
static bool
server_quiet (const struct client *cl)
{
  int unread;

  if (ioctl (cl->fd, SIOCOUTQ, &unread) == -1) {
    perror ("SIOCOUTQ");
    abort ();
  }
  return unread == 0 && ioq_in_flight (h.ioq) == 0;
}

static void
set_events (struct client *cl, uint32_t events)
{
  if (loop_source_set_events (cl->src, events) == -1)
    die ("epoll");
}

/* Prepare hook: moves the client on once the server is quiet, and
 * stops the loop once the input is over. */
static void
check_idle (void *opaque)
{
  struct client *cl = current;

  if (!h.running || cl == NULL)
    return;
  if (cl->eof) {
    if (server_connections_alive () == 0 && ioq_in_flight (h.ioq) == 0) {
      h.running = false;
      loop_stop (h.loop);
    }
    return;
  }
  if (cl->shut || cl->sent < cl->limit || !server_quiet (cl))
    return;
  if (cl->limit < cl->size) {
    while (cl->next_pause < cl->nr_pauses && cl->pauses[cl->next_pause] <= cl->limit)
      cl->next_pause++;
    cl->limit = cl->next_pause < cl->nr_pauses ? cl->pauses[cl->next_pause] : cl->size;
    set_events (cl, EPOLLIN | EPOLLOUT);
    client_send (cl);
    return;
  }
  cl->shut = true;
  shutdown (cl->fd, SHUT_WR);
}

static void
cleanup_files (void)
{
  for (size_t i = 0; i < sizeof h.paths / sizeof h.paths[0]; i++)
    if (h.paths[i][0])
      unlink (h.paths[i]);
  if (h.dir[0])
    rmdir (h.dir);
}

void
nbd_harness_init (const char *ident)
{
  struct server_limits limits = { .handshake_timeout_s = 60 };
  char def[256];

  log_init (ident, false, FUZZ_LOG_VERBOSITY);
  /* tmpfs if there is one: bitmap flushes call fdatasync. */
  snprintf (h.dir, sizeof h.dir, "%s/mirrord-%s-XXXXXX",
            access ("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", ident);
  if (mkdtemp (h.dir) == NULL) {
    perror (h.dir);
    abort ();
  }
  atexit (cleanup_files);
  snprintf (h.paths[0], sizeof h.paths[0], "%s/disk.img", h.dir);
  snprintf (h.paths[1], sizeof h.paths[1], "%s/ro.img", h.dir);
  snprintf (h.paths[2], sizeof h.paths[2], "%s/%s.bitmap", h.dir, FUZZ_EXPORT_RW);
  snprintf (h.paths[3], sizeof h.paths[3], "%s/%s.bitmap", h.dir, FUZZ_EXPORT_RO);
  make_disk (h.paths[0], DISK_SIZE);
  make_disk (h.paths[1], RO_DISK_SIZE);

  h.loop = loop_new ();
  h.ioq = h.loop ? ioq_new (h.loop, 64, 2) : NULL;
  if (h.ioq == NULL || server_init (h.loop, &limits) == -1
      || loop_add_prepare (h.loop, LOOP_PREPARE_SUBMIT + 100, check_idle, NULL) == -1)
    die ("setting up the loop");
  h.keys = psk_parse ("fuzz-psk", PSK_TEXT, strlen (PSK_TEXT));
  if (h.keys == NULL || server_enable_tls (h.keys) == -1)
    die ("TLS");
  if (export_registry_init (h.ioq, h.dir) == -1)
    die ("exports");
  snprintf (def, sizeof def, "%s=%s,format=raw,cache=writeback,granularity=64K",
            FUZZ_EXPORT_RW, h.paths[0]);
  add_export (def);
  snprintf (def, sizeof def, "%s=%s,format=raw,cache=writeback,readonly,bitmap=false",
            FUZZ_EXPORT_RO, h.paths[1]);
  add_export (def);
}

static void
client_done (struct client *cl)
{
  loop_source_remove (cl->src);
  cl->src = NULL;
  close (cl->fd);
  cl->fd = -1;
  cl->eof = true;
}

static void
client_send (struct client *cl)
{
  while (cl->sent < cl->limit) {
    ssize_t n = send (cl->fd, cl->data + cl->sent, cl->limit - cl->sent,
                      MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0)
      cl->sent += (size_t) n;
    else if (n == -1 && errno == EINTR)
      continue;
    else if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    else
      cl->sent = cl->limit = cl->size;  /* the server hung up */
  }
  set_events (cl, EPOLLIN);     /* until the server is quiet */
}

static void
client_receive (struct client *cl)
{
  static uint8_t buf[256u << 10];

  for (;;) {
    ssize_t n = recv (cl->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      cl->received += (size_t) n;
      continue;
    }
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    client_done (cl);           /* EOF, or a reset: the server is gone */
    return;
  }
}

static void
client_events (void *opaque, uint32_t events)
{
  struct client *cl = opaque;

  if ((events & EPOLLOUT) && cl->sent < cl->limit)
    client_send (cl);
  if (!cl->eof && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
    client_receive (cl);
}

size_t
nbd_harness_run (const uint8_t *data, size_t size, bool tcp,
                 const size_t *pauses, size_t nr_pauses)
{
  struct client cl = {
    .data = data, .size = size, .pauses = pauses, .nr_pauses = nr_pauses,
    .limit = nr_pauses ? pauses[0] : size,
  };
  int sv[2];

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1) {
    perror ("socketpair");
    abort ();
  }
  cl.fd = sv[0];
  cl.src = loop_add_fd (h.loop, cl.fd, EPOLLIN | EPOLLOUT, client_events, &cl);
  if (cl.src == NULL)
    die ("client source");
  current = &cl;
  h.running = true;
  server_add_connection (sv[1], !tcp);
  if (loop_run (h.loop) == -1)
    die ("loop");
  current = NULL;
  return cl.received;
}

void
nbd_harness_free (void)
{
  export_remove_all ();
  /* Closing the bitmaps may have queued a last flush: let it finish. */
  while (ioq_in_flight (h.ioq) > 0) {
    struct client idle = { .fd = -1, .eof = true };
    current = &idle;
    h.running = true;
    if (loop_run (h.loop) == -1)
      die ("loop");
    current = NULL;
  }
  server_free ();
  ioq_free (h.ioq);
  loop_free (h.loop);
  psk_free (h.keys);
  bufpool_drain ();
}

int
nbd_harness_replay_finish (unsigned inputs, unsigned answered)
{
  nbd_harness_free ();
  printf ("replayed %u inputs, %u answered\n", inputs, answered);
  return 0;
}
