/* SPDX-License-Identifier: MIT */
/* Mirror targets over libnbd's asynchronous API (target.h).
 *
 * Each connection's socket is a loop source whose events follow
 * nbd_aio_get_direction() after every call into libnbd.  libnbd calls
 * completion callbacks from inside nbd_aio_notify_*(); ours only record
 * the result and defer the real work to the loop, so mirror code never
 * re-enters libnbd from a libnbd callback.
 *
 * TLS.  The URI's scheme decides: nbds:// and nbds+unix:// require TLS
 * (libnbd refuses to go on without it), nbd:// stays plaintext.  The
 * key file is mirrord's --tls-psk; the identity is the URI's "user@"
 * or tls-username=, else the file's first username.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#include <libnbd.h>

#include "common/error.h"
#include "common/log.h"
#include "target.h"
#include "tls-worker.h"

#define MAX_CONNS 4
#define DEFAULT_MAX_REQUEST (32u << 20)

struct tconn {
  struct target *t;
  struct nbd_handle *h;
  struct loop_source *src;
  bool ready, dead;
  unsigned busy;                /* commands in flight on it */
  uint64_t progress_ns;         /* when it last moved (or started) */
  int outq;                     /* bytes the kernel had yet to deliver */
  struct loop_deferred first_look;
};

struct target {
  struct loop *loop;
  char *uri;
  struct tconn conns[MAX_CONNS];
  unsigned nr_conns, max_conns, next;
  target_state_fn on_state;
  void *opaque;
  bool up, down;
  char error[512];
  uint64_t size;
  char *description;            /* the server's, or NULL */
  bool readonly, can_zero, can_fast_zero, can_flush, can_fua, can_bs;
  uint32_t max_request;
  unsigned in_flight;
  unsigned timeout_ms;          /* a connection stuck this long is dead */
  uint64_t heard_ns;            /* when the target last sent us bytes */
  struct loop_source *watchdog;
};

struct flush_group {
  target_done_fn done;
  void *opaque;
  unsigned pending;
  int err;
};

struct tcmd {
  struct target *t;
  struct tconn *c;
  target_done_fn done;
  target_zeroes_fn zeroes_done;
  void *opaque;
  struct flush_group *grp;
  bool then_flush;              /* FUA on a target without it */
  int err;
  uint64_t bs_offset, bs_count, zero_bytes;
  struct loop_deferred later;
};

static void conn_update (struct tconn *c);

/* --tls-psk, for every target (target_set_tls_psk). */
static struct {
  char *file;
  char *username;
} tls;

int
target_set_tls_psk (const char *file, const char *username)
{
  char *f = file ? strdup (file) : NULL;
  char *u = username ? strdup (username) : NULL;

  if ((file && f == NULL) || (username && u == NULL)) {
    free (f);
    free (u);
    return error_set (ENOMEM, "TLS settings");
  }
  free (tls.file);
  free (tls.username);
  tls.file = f;
  tls.username = u;
  return 0;
}

static bool
uri_wants_tls (const char *uri)
{
  return strncmp (uri, "nbds:", 5) == 0 || strncmp (uri, "nbds+", 5) == 0;
}

static int
hex_digit (char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = (char) (ch | 0x20);
  return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Copies the URI's tls-username= query value, percent-decoded, into
 * BUF.  libnbd 1.14 ignores that parameter (later versions read it),
 * so we apply it ourselves.  Returns false if there is none. */
static bool
uri_tls_username (const char *uri, char *buf, size_t len)
{
  static const char key[] = "tls-username=";
  const char *q = strchr (uri, '?');
  size_t n = 0;

  while (q && *q) {
    q++;
    if (strncmp (q, key, sizeof key - 1) == 0) {
      for (q += sizeof key - 1; *q && *q != '&' && *q != ';' && *q != '#'
             && n + 1 < len; q++) {
        int hi, lo;
        if (*q == '%' && (hi = hex_digit (q[1])) >= 0
            && (lo = hex_digit (q[2])) >= 0) {
          buf[n++] = (char) (hi << 4 | lo);
          q += 2;
        }
        else
          buf[n++] = *q;
      }
      buf[n] = '\0';
      return n > 0;
    }
    q = q + strcspn (q, "&;#");
    if (*q == '#')
      break;
  }
  return false;
}

/* Copies the URI's "user@" (percent-decoded) into BUF; false if it
 * names none. */
static bool
uri_user (const char *uri, char *buf, size_t len)
{
  const char *p = strstr (uri, "://"), *at, *end;
  size_t n = 0;

  if (p == NULL)
    return false;
  p += 3;
  end = p + strcspn (p, "/?#");
  at = memchr (p, '@', (size_t) (end - p));
  if (at == NULL || at == p)
    return false;
  for (; p < at && n + 1 < len; p++) {
    int hi, lo;
    if (*p == '%' && p + 2 < at && (hi = hex_digit (p[1])) >= 0
        && (lo = hex_digit (p[2])) >= 0) {
      buf[n++] = (char) (hi << 4 | lo);
      p += 2;
    }
    else
      buf[n++] = *p;
  }
  buf[n] = '\0';
  return n > 0;
}

int
target_tls_identity (const char *uri, char *buf, size_t len)
{
  if (uri_user (uri, buf, len) || uri_tls_username (uri, buf, len))
    return 0;
  if (tls.username == NULL)
    return -1;
  snprintf (buf, len, "%s", tls.username);
  return 0;
}

/* Before connecting: the key file, and the identity: tls-username=
 * from the URI, else the file's first.  A "user@" in the URI wins
 * over both: libnbd applies it while connecting. */
static int
set_tls (struct nbd_handle *h, const char *uri)
{
  char user[256];
  const char *u = tls.username;

  if (!uri_wants_tls (uri))
    return 0;
  if (tls.file == NULL)
    return error_set (0, "a TLS target needs mirrord --tls-psk FILE");
  if (uri_tls_username (uri, user, sizeof user))
    u = user;
  if (nbd_set_tls_psk_file (h, tls.file) == -1
      || nbd_set_tls_username (h, u) == -1)
    return error_set (0, "%s", nbd_get_error ());
  return 0;
}

/* ---- State ---- */

static void
go_down (struct target *t, const char *why)
{
  if (t->down)
    return;
  t->down = true;
  snprintf (t->error, sizeof t->error, "%s: %s", t->uri, why);
  log_warn ("mirror target %s", t->error);
  t->on_state (t->opaque, TARGET_DOWN);
}

/* libnbd reports a refused key as gnutls sees it ("non-properly
 * terminated"); say what it most likely means, with the identity. */
static const char *
explain_tls_failure (struct tconn *c, const char *why, char *buf, size_t len)
{
  char *user;

  if (c->ready || strstr (why, "gnutls_handshake") == NULL)
    return why;
  user = nbd_get_tls_username (c->h);
  snprintf (buf, len, "TLS-PSK handshake failed: the target refused the "
            "key of user '%s' (or does not know the user): %s",
            user ? user : "?", why);
  free (user);
  return buf;
}

/* WHY is libnbd's error when a call failed; NULL when the handle just
 * died or closed (the server hung up), when nbd_get_error() still holds
 * whatever failed last on this thread, an older mirror's error maybe. */
static void
conn_dead (struct tconn *c, const char *why)
{
  char buf[384];

  c->dead = true;
  why = explain_tls_failure (c, why && *why ? why : "connection lost",
                             buf, sizeof buf);
  c->ready = false;
  loop_source_remove (c->src);
  c->src = NULL;
  go_down (c->t, why);
}

static int start_conn (struct target *t);

int
target_handle_events (struct loop *loop, struct loop_source *src,
                      struct nbd_handle *h, uint32_t events, loop_fd_cb cb,
                      void *opaque, bool *failed)
{
  int r = tls_worker_notify (loop, h, events, cb, opaque);

  if (failed)
    *failed = r == -1;
  if (r == 1) {                 /* the worker waits for the socket */
    loop_source_set_events (src, 0);
    return 1;
  }
  return r == -1 || nbd_aio_is_dead (h) || nbd_aio_is_closed (h) ? -1 : 0;
}

static void
first_ready (struct target *t, struct nbd_handle *h)
{
  int64_t max = nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM);
  int64_t size = nbd_get_size (h);

  t->size = size < 0 ? 0 : (uint64_t) size;
  t->description = nbd_get_export_description (h);
  t->readonly = nbd_is_read_only (h) == 1;
  t->can_zero = nbd_can_zero (h) == 1;
  t->can_fast_zero = t->can_zero && nbd_can_fast_zero (h) == 1;
  t->can_flush = nbd_can_flush (h) == 1;
  t->can_fua = nbd_can_fua (h) == 1;
  t->can_bs = nbd_can_meta_context (h, "base:allocation") == 1;
  t->max_request = max > 0 && max <= DEFAULT_MAX_REQUEST
    ? (uint32_t) max : DEFAULT_MAX_REQUEST;
  /* Several connections only where the server says a flush on one
   * covers writes on all (multi-conn). */
  if (nbd_can_multi_conn (h) == 1)
    while (t->nr_conns < t->max_conns && start_conn (t) == 0)
      ;
  t->up = true;
  t->on_state (t->opaque, TARGET_UP);
}

static void
on_conn_event (void *opaque, uint32_t events)
{
  struct tconn *c = opaque;
  struct target *t = c->t;
  bool failed;

  c->progress_ns = loop_now_ns ();
  if (events & EPOLLIN)
    t->heard_ns = c->progress_ns;
  switch (target_handle_events (t->loop, c->src, c->h, events,
                                on_conn_event, c, &failed)) {
  case 1:                       /* in a worker's hands (tls-worker.h) */
    return;
  case -1:
    conn_dead (c, failed ? tls_worker_error (c->h) : NULL);
    return;
  }
  if (!c->ready && nbd_aio_is_ready (c->h)) {
    c->ready = true;
    if (!t->up)
      first_ready (t, c->h);
  }
  conn_update (c);
}

void
target_watch_handle (struct loop_source *src, struct nbd_handle *h)
{
  unsigned dir;
  uint32_t ev = 0;

  if (tls_worker_busy (h)) {    /* no libnbd call: the worker holds H */
    loop_source_set_events (src, 0);
    return;
  }
  dir = nbd_aio_get_direction (h);
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    ev |= EPOLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    ev |= EPOLLOUT;
  loop_source_set_events (src, ev);
}

/* libnbd may get through the whole negotiation inside the connect call
 * (a quick server on loopback): the handle is then ready and idle, and
 * waits for no event.  Without this look the connection never counted
 * as up, and the watchdog dropped it as stuck a timeout later. */
static void
look (void *opaque)
{
  struct tconn *c = opaque;

  if (!c->dead && c->src)
    on_conn_event (c, 0);
}

static void
conn_update (struct tconn *c)
{
  if (!c->dead && c->src)
    target_watch_handle (c->src, c->h);
}

static int
start_conn (struct target *t)
{
  struct tconn *c = &t->conns[t->nr_conns];
  int fd;

  c->t = t;
  c->h = nbd_create ();
  if (c->h == NULL)
    return error_set (ENOMEM, "nbd_create: %s", nbd_get_error ());
  /* To skip zeroing what the target already reads as zero. */
  nbd_add_meta_context (c->h, "base:allocation");
  /* The description: a mirror recognises itself by it. */
  nbd_set_full_info (c->h, true);
  if (set_tls (c->h, t->uri) == -1) {
    nbd_close (c->h);
    c->h = NULL;
    return -1;
  }
  if (nbd_aio_connect_uri (c->h, t->uri) == -1
      || (fd = nbd_aio_get_fd (c->h)) == -1) {
    char buf[384];
    const char *why = nbd_get_error ();
    /* The TLS handshake may fail inside the call already. */
    error_set (0, "%s", explain_tls_failure (c, why ? why : "cannot connect",
                                            buf, sizeof buf));
    nbd_close (c->h);
    c->h = NULL;
    return -1;
  }
  c->progress_ns = loop_now_ns ();
  c->src = loop_add_fd (t->loop, fd, EPOLLIN | EPOLLOUT, on_conn_event, c);
  if (c->src == NULL) {
    nbd_close (c->h);
    c->h = NULL;
    return -1;
  }
  t->nr_conns++;
  conn_update (c);
  loop_defer (t->loop, &c->first_look, look, c);
  return 0;
}

int
target_setup_handle (struct nbd_handle *h, const char *uri)
{
  return set_tls (h, uri);
}

struct target *
target_open (struct loop *loop, const char *uri, unsigned max_conns,
             target_state_fn on_state, void *opaque)
{
  struct target *t = calloc (1, sizeof *t);

  if (t == NULL || (t->uri = strdup (uri)) == NULL) {
    free (t);
    error_set (ENOMEM, "allocating a target");
    return NULL;
  }
  t->loop = loop;
  t->on_state = on_state;
  t->opaque = opaque;
  t->max_conns = max_conns < 1 ? 1 : max_conns > MAX_CONNS ? MAX_CONNS : max_conns;
  if (start_conn (t) == -1) {
    error_prefix ("%s", uri);
    free (t->uri);
    free (t);
    return NULL;
  }
  return t;
}

/* Cuts a connection off for good.  Writes still in the socket's send
 * queue must never reach the target: after a partition heals, TCP
 * would deliver them after newer data copied over a new connection.
 * Linger 0 makes the close send a reset and drop the queue; the
 * shutdown wakes libnbd, which retires the commands in flight. */
static void
abort_socket (int fd)
{
  struct linger lg = { .l_onoff = 1, .l_linger = 0 };

  if (fd < 0)
    return;
  setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  shutdown (fd, SHUT_RDWR);
}

/* A target that stops answering (a partition drops its packets; TCP
 * would wait for many minutes) is cut off after the timeout: shutting
 * the socket down makes libnbd retire every command in flight with an
 * error, so the mirror goes disconnected and writes waiting on the
 * target complete locally, instead of the guest hanging. */
static void
watchdog (void *opaque)
{
  struct target *t = opaque;
  uint64_t now = loop_now_ns (), limit = t->timeout_ms * 1000000ull;

  for (unsigned i = 0; i < t->nr_conns; i++) {
    struct tconn *c = &t->conns[i];
    int outq = 0, fd;
    if (c->dead || c->h == NULL)
      continue;
    /* A worker's handle: no libnbd call (tls-worker.h). */
    fd = tls_worker_busy (c->h) ? -1 : nbd_aio_get_fd (c->h);
    /* A slow link is not a dead one: requests leaving the socket's
     * send queue count as progress, though no reply came yet. */
    if (fd >= 0 && ioctl (fd, SIOCOUTQ, &outq) == 0) {
      if (outq < c->outq)
        c->progress_ns = now;
      c->outq = outq;
    }
    if ((c->ready && c->busy == 0) || now - c->progress_ns < limit)
      continue;
    log_warn ("mirror target %s: no answer for %u ms: dropping the "
              "connection", t->uri, t->timeout_ms);
    if (fd >= 0)
      abort_socket (fd);
    else
      tls_worker_abort (c->h);
    c->progress_ns = now;       /* once per timeout */
  }
}

void
target_set_timeout (struct target *t, unsigned timeout_ms)
{
  if (t->watchdog)
    loop_source_remove (t->watchdog);
  t->watchdog = NULL;
  t->timeout_ms = timeout_ms;
  if (timeout_ms) {
    unsigned every = timeout_ms / 4 < 100 ? 100 : timeout_ms / 4;
    t->watchdog = loop_add_timer (t->loop, every, every, watchdog, t);
  }
}

void
target_free (struct target *t)
{
  if (t == NULL)
    return;
  if (t->watchdog)
    loop_source_remove (t->watchdog);
  for (unsigned i = 0; i < t->nr_conns; i++) {
    loop_cancel_deferred (t->loop, &t->conns[i].first_look);
    loop_source_remove (t->conns[i].src);
    tls_worker_close (t->conns[i].h);
  }
  free (t->description);
  free (t->uri);
  free (t);
}

const char *target_error (const struct target *t) { return t->error; }
uint64_t target_size (const struct target *t) { return t->size; }
const char *target_description (const struct target *t) { return t->description; }
bool target_is_readonly (const struct target *t) { return t->readonly; }
bool target_can_zero (const struct target *t) { return t->can_zero; }
bool target_can_fast_zero (const struct target *t) { return t->can_fast_zero; }
bool target_can_flush (const struct target *t) { return t->can_flush; }
uint32_t target_max_request (const struct target *t) { return t->max_request; }
unsigned target_in_flight (const struct target *t) { return t->in_flight; }
uint64_t target_heard_ns (const struct target *t) { return t->heard_ns; }

unsigned
target_connections (const struct target *t)
{
  unsigned n = 0;

  for (unsigned i = 0; i < t->nr_conns; i++)
    n += t->conns[i].ready;
  return n;
}

/* ---- Commands ---- */

static int submit (struct tconn *c, struct tcmd *cmd, char kind,
                   const void *buf, uint64_t count, uint64_t offset,
                   uint32_t flags);

static void
cmd_finish (void *opaque)
{
  struct tcmd *cmd = opaque;
  struct target *t = cmd->t;

  t->in_flight--;
  if (cmd->c)
    cmd->c->busy--;
  /* FUA emulated: the write is stable once its connection flushed
   * (a flush covers the writes completed before it was sent). */
  if (cmd->then_flush && cmd->err == 0 && cmd->c) {
    cmd->then_flush = false;
    if (submit (cmd->c, cmd, 'f', NULL, 0, 0, 0) == 0)
      return;
    cmd->err = EIO;
  }
  if (cmd->grp) {
    struct flush_group *g = cmd->grp;
    if (cmd->err && !g->err)
      g->err = cmd->err;
    if (--g->pending == 0) {
      g->done (g->opaque, g->err);
      free (g);
    }
  }
  else if (cmd->zeroes_done)
    cmd->zeroes_done (cmd->opaque, cmd->err, cmd->err ? 0 : cmd->zero_bytes);
  else
    cmd->done (cmd->opaque, cmd->err);
  free (cmd);
}

/* Called by libnbd with the target's extents: count the zero prefix.
 * Pure arithmetic, as libnbd callbacks must be. */
static int
extent_callback (void *user_data, const char *metacontext, uint64_t offset,
                 uint32_t *entries, size_t nr, int *error)
{
  struct tcmd *cmd = user_data;
  uint64_t zero = 0;

  if (strcmp (metacontext, "base:allocation") != 0)
    return 0;
  for (size_t i = 0; i + 1 < nr; i += 2) {
    if (!(entries[i + 1] & LIBNBD_STATE_ZERO))
      break;
    zero += entries[i];
  }
  cmd->zero_bytes = zero < cmd->bs_count ? zero : cmd->bs_count;
  return 0;
}

/* Called by libnbd inside nbd_aio_notify_*: record, defer, retire. */
static int
cmd_callback (void *user_data, int *error)
{
  struct tcmd *cmd = user_data;

  cmd->err = *error;
  memset (&cmd->later, 0, sizeof cmd->later);
  loop_defer (cmd->t->loop, &cmd->later, cmd_finish, cmd);
  return 1;
}

static struct tconn *
pick (struct target *t)
{
  for (unsigned i = 0; i < t->nr_conns; i++) {
    struct tconn *c = &t->conns[(t->next + i) % t->nr_conns];
    if (c->ready && !c->dead) {
      t->next = (unsigned) (c - t->conns) + 1;
      return c;
    }
  }
  return NULL;
}

static struct tcmd *
cmd_new (struct target *t, target_done_fn done, void *opaque)
{
  struct tcmd *cmd = calloc (1, sizeof *cmd);

  if (cmd) {
    cmd->t = t;
    cmd->done = done;
    cmd->opaque = opaque;
  }
  return cmd;
}

/* Hands CMD to libnbd on C (KIND: 'w'rite, 'z'ero, 'Z'ero fast, 'f'lush,
 * 'b'lock status). */
static int
submit (struct tconn *c, struct tcmd *cmd, char kind, const void *buf,
        uint64_t count, uint64_t offset, uint32_t flags)
{
  nbd_completion_callback cb = { .callback = cmd_callback, .user_data = cmd };
  int64_t r;

  switch (kind) {
  case 'w': r = nbd_aio_pwrite (c->h, buf, count, offset, cb, flags); break;
  case 'z': r = nbd_aio_zero (c->h, count, offset, cb, flags); break;
  case 'Z':
    r = nbd_aio_zero (c->h, count, offset, cb, LIBNBD_CMD_FLAG_FAST_ZERO);
    break;
  case 'b': {
    nbd_extent_callback ecb = { .callback = extent_callback, .user_data = cmd };
    cmd->bs_offset = offset;
    cmd->bs_count = count;
    r = nbd_aio_block_status (c->h, count, offset, ecb, cb, 0);
    break;
  }
  default:  r = nbd_aio_flush (c->h, cb, 0); break;
  }
  if (r == -1) {
    error_set (EIO, "%s: %s", c->t->uri, nbd_get_error ());
    return -1;
  }
  c->t->in_flight++;
  if (c->busy++ == 0)
    c->progress_ns = loop_now_ns ();   /* the clock starts now */
  cmd->c = c;
  conn_update (c);
  return 0;
}

static int
one (struct target *t, char kind, const void *buf, uint64_t count,
     uint64_t offset, unsigned flags, target_done_fn done, void *opaque)
{
  uint32_t nbd_flags = 0;
  struct tconn *c = t->down ? NULL : pick (t);
  struct tcmd *cmd;

  if (c == NULL)
    return error_set (ENOTCONN, "%s: not connected", t->uri);
  cmd = cmd_new (t, done, opaque);
  if (cmd == NULL)
    return error_set (ENOMEM, "allocating a command");
  if (flags & TARGET_FUA) {
    if (t->can_fua)
      nbd_flags |= LIBNBD_CMD_FLAG_FUA;
    else
      cmd->then_flush = t->can_flush;
  }
  if (submit (c, cmd, kind, buf, count, offset, nbd_flags) == -1) {
    free (cmd);
    return -1;
  }
  return 0;
}

int
target_pwrite (struct target *t, const void *buf, uint64_t count,
               uint64_t offset, unsigned flags, target_done_fn done,
               void *opaque)
{
  return one (t, 'w', buf, count, offset, flags, done, opaque);
}

int
target_zero (struct target *t, uint64_t count, uint64_t offset,
             unsigned flags, target_done_fn done, void *opaque)
{
  return one (t, 'z', NULL, count, offset, flags, done, opaque);
}

int
target_zero_fast (struct target *t, uint64_t count, uint64_t offset,
                  target_done_fn done, void *opaque)
{
  if (!t->can_fast_zero)
    return error_set (ENOTSUP, "%s: no fast zero", t->uri);
  return one (t, 'Z', NULL, count, offset, 0, done, opaque);
}

bool
target_can_block_status (const struct target *t)
{
  return t->can_bs;
}

int
target_zero_prefix (struct target *t, uint64_t count, uint64_t offset,
                    target_zeroes_fn done, void *opaque)
{
  struct tconn *c = t->down ? NULL : pick (t);
  struct tcmd *cmd;

  if (c == NULL || !t->can_bs)
    return error_set (ENOTCONN, "%s: no block status", t->uri);
  cmd = cmd_new (t, NULL, opaque);
  if (cmd == NULL)
    return error_set (ENOMEM, "allocating a command");
  cmd->zeroes_done = done;
  if (submit (c, cmd, 'b', NULL, count, offset, 0) == -1) {
    free (cmd);
    return -1;
  }
  return 0;
}

int
target_flush (struct target *t, target_done_fn done, void *opaque)
{
  struct flush_group *g;
  unsigned n = 0;

  if (t->down)
    return error_set (ENOTCONN, "%s: not connected", t->uri);
  g = calloc (1, sizeof *g);
  if (g == NULL)
    return error_set (ENOMEM, "allocating a flush");
  g->done = done;
  g->opaque = opaque;
  g->pending = 1;               /* held while submitting */
  for (unsigned i = 0; i < t->nr_conns; i++) {
    struct tconn *c = &t->conns[i];
    struct tcmd *cmd;
    if (!c->ready || c->dead || !t->can_flush)
      continue;
    cmd = cmd_new (t, NULL, NULL);
    if (cmd == NULL)
      continue;
    cmd->grp = g;
    g->pending++;
    if (submit (c, cmd, 'f', NULL, 0, 0, 0) == -1) {
      g->pending--;
      g->err = EIO;
      free (cmd);
      continue;
    }
    n++;
  }
  /* Release the hold from the loop, like any completion. */
  struct tcmd *hold = cmd_new (t, NULL, NULL);
  if (hold == NULL) {
    g->pending--;
    if (g->pending == 0)
      free (g);
    return error_set (ENOMEM, "allocating a flush");
  }
  hold->grp = g;
  hold->err = (n == 0 && t->can_flush) ? ENOTCONN : 0;
  t->in_flight++;
  memset (&hold->later, 0, sizeof hold->later);
  loop_defer (t->loop, &hold->later, cmd_finish, hold);
  return 0;
}
