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
 * control, the handshake and transmission parsers and block-status,
 * just as from a real client — and a stream that wedges the server
 * shows up as a libFuzzer timeout.
 *
 * The server is linked with a test backend only (nbd/backend.h): two
 * memory disks behind the block interface (tests/blk-mem.h), one
 * read-only, and a dirty-bitmap context that marks what was written.
 * No export, image or daemon code is involved: nbd/ alone is under
 * test.
 *
 * One input is over when the server has closed the connection, freed
 * it (after its last request completed) and no I/O is in flight.  A
 * prepare hook, run before the loop would wait (after replies went
 * out), checks these conditions.  The disks persist between inputs
 * (the daemon's exports outlive clients too); their contents only
 * steer which paths reads and block status take.
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
#include "common/log.h"
#include "common/loop.h"
#include "common/psk.h"
#include "nbd/server.h"
#include "tests/blk-mem.h"
#include "fuzz.h"
#include "nbd-harness.h"

#define DISK_SIZE (1u << 20)
#define RO_DISK_SIZE ((1u << 20) + 512)   /* not a multiple of 4 KiB */
/* Any key will do: no input can complete a PSK handshake without it,
 * but STARTTLS then runs gnutls over what the input sends. */
#define PSK_TEXT "fuzz:000102030405060708090a0b0c0d0e0f\n"

#define GRANULE 65536u

struct disk {
  const char *name;
  struct blk_mem mem;
  bool has_bitmap;
};

static struct {
  struct loop *loop;
  struct psk_keys *keys;
  struct disk disks[2];         /* FUZZ_EXPORT_RW, FUZZ_EXPORT_RO */
  unsigned attached;
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

/* A disk with a few data runs and holes between them, so reads and
 * base:allocation meet both. */
static void
make_disk (struct disk *d, const char *name, uint64_t size, bool readonly)
{
  static const uint64_t runs[][2] = { { 0, 65536 }, { 200000, 5000 },
                                      { 524288, 8192 } };

  d->name = name;
  d->has_bitmap = !readonly;
  if (blk_mem_init (&d->mem, h.loop, size, readonly) == -1) {
    perror ("disk");
    abort ();
  }
  for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++)
    for (uint64_t off = runs[r][0]; off < runs[r][0] + runs[r][1]; off++)
      d->mem.data[off] = (uint8_t) ((off >> 12) + 1);
}

/* ---- The test backend ---- */

static int
lookup (const char *name, const char *tls_user, bool meta,
        struct server_export *out, char *why, size_t len)
{
  for (size_t i = 0; i < sizeof h.disks / sizeof h.disks[0]; i++) {
    struct disk *d = &h.disks[i];
    if (strcmp (name, d->name) != 0)
      continue;
    out->blk = &d->mem.blk;
    out->handle = d;
    snprintf (out->name, sizeof out->name, "%s", d->name);
    snprintf (out->description, sizeof out->description,
              "fuzz disk %s", d->name);
    return SERVER_LOOKUP_OK;
  }
  return SERVER_LOOKUP_UNKNOWN;
}

static void
release (void *handle)
{
}

static void
attach (void *handle, struct server_client *c)
{
  h.attached++;
}

static void
detach (void *handle, struct server_client *c)
{
  h.attached--;
}

static void
list (void (*fn) (void *arg, const char *name), void *arg)
{
  for (size_t i = 0; i < sizeof h.disks / sizeof h.disks[0]; i++)
    fn (arg, h.disks[i].name);
}

static const struct server_backend backend = {
  .lookup = lookup, .release = release, .attach = attach, .detach = detach,
  .list = list,
};

/* qemu:dirty-bitmap:NAME: a granule is dirty when its first byte is
 * not zero, so the context has both kinds of extent and follows the
 * writes. */
static int
dirty_name (void *handle, const char *export, char *buf, size_t len)
{
  struct disk *d = handle;

  if (!d->has_bitmap)
    return -1;
  snprintf (buf, len, "qemu:dirty-bitmap:%s", d->name);
  return 0;
}

static int
dirty_extents (void *handle, uint64_t offset, uint64_t count,
               struct image_extents *out)
{
  struct disk *d = handle;

  for (uint64_t pos = offset; pos < offset + count; ) {
    uint64_t end = (pos / GRANULE + 1) * GRANULE;
    bool dirty = d->mem.data[pos] != 0;
    if (end > offset + count)
      end = offset + count;
    int r = image_extents_add (out, pos, end - pos, dirty ? 1 : 0);
    if (r != 0)
      return r < 0 ? -1 : 0;
    pos = end;
  }
  return 0;
}

static const struct server_meta_provider dirty_bitmap = {
  .name = dirty_name, .listed_by_default = true, .extents = dirty_extents,
};
static const struct server_meta_provider *const meta[] = { &dirty_bitmap };

static unsigned
io_in_flight (void)
{
  return h.disks[0].mem.in_flight + h.disks[1].mem.in_flight;
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
  return unread == 0 && io_in_flight () == 0;
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
    if (server_connections_alive () == 0 && io_in_flight () == 0) {
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

void
nbd_harness_init (const char *ident)
{
  struct server_limits limits = { .handshake_timeout_s = 60 };

  log_init (ident, false, FUZZ_LOG_VERBOSITY);
  h.loop = loop_new ();
  if (h.loop == NULL)
    die ("setting up the loop");
  make_disk (&h.disks[0], FUZZ_EXPORT_RW, DISK_SIZE, false);
  make_disk (&h.disks[1], FUZZ_EXPORT_RO, RO_DISK_SIZE, true);
  if (server_init (h.loop, &limits, &backend, meta, 1) == -1
      || loop_add_prepare (h.loop, LOOP_PREPARE_SUBMIT + 100, check_idle, NULL) == -1)
    die ("setting up the loop");
  h.keys = psk_parse ("fuzz-psk", PSK_TEXT, strlen (PSK_TEXT));
  if (h.keys == NULL || server_enable_tls (h.keys) == -1)
    die ("TLS");
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
  server_free ();
  loop_free (h.loop);
  psk_free (h.keys);
  for (size_t i = 0; i < sizeof h.disks / sizeof h.disks[0]; i++)
    blk_mem_free (&h.disks[i].mem);
  bufpool_drain ();
}

int
nbd_harness_replay_finish (unsigned inputs, unsigned answered)
{
  nbd_harness_free ();
  printf ("replayed %u inputs, %u answered\n", inputs, answered);
  return 0;
}
