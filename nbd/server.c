/* SPDX-License-Identifier: MIT */
/* Listening sockets, accepting, and the set of live connections.
 *
 * Accepting.  Each new connection passes admission (admission.h: the
 * unix and TCP budgets, the per-address share) or is closed at once.
 * When the process is out of descriptors (EMFILE, ENFILE) or memory,
 * accept() fails without taking the connection, and level-triggered
 * epoll would wake us for it again at once, for ever: instead the
 * connections waiting in the backlog are closed through the reserve
 * descriptor (common/fdreserve.h), and if even that takes none, the
 * listeners rest until one of our connections closes, or the next
 * tick (1 s) if none does.
 *
 * The tick also ends negotiations that overran handshake_timeout_s
 * (a client must finish TLS and choose an export within it) and lets
 * rate-limited log lines report what they held back.
 */
#include <config.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "common/error.h"
#include "common/fdreserve.h"
#include "common/log.h"
#include "admission.h"
#include "server.h"
#include "server-internal.h"
#include "tls.h"

#define MAX_LISTENERS 16
#define SOCKET_BUFFER (4 << 20)
#define ACCEPT_BATCH 64         /* accepts per wake-up of one listener */
#define REFUSE_BATCH 256        /* backlog closed when out of descriptors */

struct listener {
  int fd;
  bool is_unix;
  char *unix_path;
  struct loop_source *src;
};

static struct {
  struct loop *loop;
  struct server_limits limits;
  const struct server_backend *backend;
  const struct server_meta_provider *meta[SERVER_MAX_META_PROVIDERS];
  unsigned nr_meta;
  struct listener listeners[MAX_LISTENERS];
  unsigned nr_listeners;
  struct list conns;
  struct list flush;
  unsigned nr_conns;
  unsigned nr_alive;            /* allocated, closed ones included */
  struct loop_source *tick;
  struct loop_deferred kick;
  bool kick_all;
  bool accept_paused;           /* out of descriptors: listeners rest */
  bool starved;                 /* ... and no accept has worked since */
  uint64_t starved_ns;
  unsigned refused_starved;     /* closed through the reserve meanwhile */
} srv;

static void resume_accepting (void);

struct loop *
server_loop (void)
{
  return srv.loop;
}

const struct server_backend *
server_backend (void)
{
  return srv.backend;
}

unsigned
server_meta_count (void)
{
  return srv.nr_meta;
}

const struct server_meta_provider *
server_meta (unsigned i)
{
  return srv.meta[i];
}

void
server_mark_flush (struct conn *c)
{
  if (c->on_flush_list || c->write_blocked)
    return;
  c->on_flush_list = true;
  conn_ref (c);
  list_add_tail (&srv.flush, &c->flush_node);
}

static void
flush_all (void *opaque)
{
  while (!list_empty (&srv.flush)) {
    struct conn *c = list_entry (srv.flush.next, struct conn, flush_node);
    list_del (&c->flush_node);
    c->on_flush_list = false;
    if (!c->closed)
      conn_flush (c);
    conn_unref (c);             /* the flush list's reference */
  }
}

static void
kick_run (void *opaque)
{
  struct list *pos, *tmp;

  srv.kick_all = false;
  list_for_each_safe (pos, tmp, &srv.conns) {
    struct conn *c = list_entry (pos, struct conn, node);
    if (!c->closed && c->phase != PHASE_CLOSING) {
      conn_ref (c);
      conn_parse (c);
      if (!c->closed)
        conn_update_events (c);
      conn_unref (c);
    }
  }
}

void
server_kick (struct conn *c)
{
  /* Rare (a connection hit its in-flight limit): rescanning every
   * connection once is simpler than a second list. */
  if (srv.kick_all)
    return;
  srv.kick_all = true;
  memset (&srv.kick, 0, sizeof srv.kick);
  loop_defer (srv.loop, &srv.kick, kick_run, NULL);
}

void
server_forget (struct conn *c)
{
  list_del (&c->node);
  srv.nr_conns--;
  admission_release (c->is_unix, c->host);
  c->host = NULL;
  resume_accepting ();          /* its descriptor is free now */
}

unsigned
server_connection_count (void)
{
  return srv.nr_conns;
}

void
server_conn_freed (void)
{
  srv.nr_alive--;
}

unsigned
server_connections_alive (void)
{
  return srv.nr_alive;
}

static void
handshake_timeouts (void)
{
  uint64_t now = loop_now_ns ();
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &srv.conns) {
    struct conn *c = list_entry (pos, struct conn, node);
    if (conn_negotiating (c) && c->handshake_deadline_ns
        && now > c->handshake_deadline_ns) {
      log_ratelimit (LOG_INFO, "%s: negotiation timed out after %u s; "
                     "closing", c->peer, srv.limits.handshake_timeout_s);
      conn_close (c, NULL);
    }
  }
}

static void
tick (void *opaque)
{
  handshake_timeouts ();
  resume_accepting ();          /* descriptors may have freed elsewhere */
  log_limits_flush (false);
}

int
server_init (struct loop *loop, const struct server_limits *limits,
             const struct server_backend *backend,
             const struct server_meta_provider *const *meta, unsigned nr_meta)
{
  if (nr_meta > SERVER_MAX_META_PROVIDERS)
    return error_set (EINVAL, "too many meta-context providers");
  srv.loop = loop;
  srv.limits = *limits;
  srv.backend = backend;
  srv.nr_meta = nr_meta;
  for (unsigned i = 0; i < nr_meta; i++)
    srv.meta[i] = meta[i];
  admission_init (limits);
  list_init (&srv.conns);
  list_init (&srv.flush);
  if (fdreserve_init () == -1
      || loop_add_prepare (loop, LOOP_PREPARE_OUTPUT, flush_all, NULL) == -1)
    return -1;
  srv.tick = loop_add_timer (loop, 1000, 1000, tick, NULL);
  return srv.tick ? 0 : -1;
}

/* "ADDR:PORT" of a TCP peer SS, or "unix:FD". */
static void
peer_name (int fd, const struct sockaddr_storage *ss, char *buf, size_t len)
{
  char host[INET6_ADDRSTRLEN] = "?";

  if (ss == NULL || (ss->ss_family != AF_INET && ss->ss_family != AF_INET6)) {
    snprintf (buf, len, "unix:%d", fd);
    return;
  }
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s = (const struct sockaddr_in *) ss;
    inet_ntop (AF_INET, &s->sin_addr, host, sizeof host);
    snprintf (buf, len, "%s:%u", host, ntohs (s->sin_port));
  }
  else {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *) ss;
    inet_ntop (AF_INET6, &s->sin6_addr, host, sizeof host);
    snprintf (buf, len, "[%s]:%u", host, ntohs (s->sin6_port));
  }
}

static void
client_shutdown (struct server_client *sc)
{
  conn_drain ((struct conn *) ((char *) sc - offsetof (struct conn, client)));
}

static void send_greeting (struct conn *c);

/* A read reply of up to 32 MiB goes out through the socket buffer: with
 * the default (about 200 KiB for unix sockets) a 1 MiB reply needs
 * several wake-ups of both sides, and latency, not bandwidth, limits
 * sequential reads.  Ask for more; the kernel caps it at wmem_max
 * unless we may force it. */
static void
tune_socket (int fd, bool is_unix)
{
  int one = 1, buf = SOCKET_BUFFER;

  if (setsockopt (fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) == -1)
    setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  if (setsockopt (fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) == -1)
    setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  if (!is_unix)
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Admits FD, a new connection from SS (NULL for a unix socket), or
 * closes it.  A refusal is logged per transport, so a TCP flood cannot
 * hide the unix-socket ones. */
static bool
admit (int fd, bool is_unix, const struct sockaddr_storage *ss,
       struct admission_host **host)
{
  char peer[64];

  if (admission_take (is_unix, (const struct sockaddr *) ss, host) == 0)
    return true;
  peer_name (fd, ss, peer, sizeof peer);
  if (is_unix)
    log_ratelimit (LOG_WARNING, "refusing a unix-socket connection: %s",
                   error_get ());
  else
    log_ratelimit (LOG_WARNING, "refusing a connection from %s: %s", peer,
                   error_get ());
  close (fd);
  return false;
}

static void
serve (int fd, bool is_unix, const struct sockaddr_storage *ss)
{
  struct admission_host *host;
  struct conn *c;

  if (!admit (fd, is_unix, ss, &host))
    return;
  c = calloc (1, sizeof *c);
  if (c == NULL || (c->in = malloc (CONN_INBUF)) == NULL) {
    log_ratelimit (LOG_ERR, "out of memory accepting a connection");
    admission_release (is_unix, host);
    free (c);
    close (fd);
    return;
  }
  c->fd = fd;
  c->refs = 1;
  c->is_unix = is_unix;
  c->host = host;
  c->client.shutdown = client_shutdown;
  list_init (&c->client.node);
  list_init (&c->outq);
  list_init (&c->flush_node);
  peer_name (fd, ss, c->peer, sizeof c->peer);
  c->tls_required = !is_unix && tls_server_enabled ();
  tune_socket (fd, is_unix);
  c->phase = PHASE_CLIENT_FLAGS;
  if (srv.limits.handshake_timeout_s)
    c->handshake_deadline_ns = loop_now_ns ()
      + (uint64_t) srv.limits.handshake_timeout_s * 1000000000u;
  c->src = loop_add_fd (srv.loop, fd, EPOLLIN, conn_on_events, c);
  if (c->src == NULL) {
    log_ratelimit (LOG_ERR, "%s", error_get ());
    admission_release (is_unix, host);
    free (c->in);
    free (c);
    close (fd);
    return;
  }
  list_add_tail (&srv.conns, &c->node);
  srv.nr_conns++;
  srv.nr_alive++;
  log_debug ("%s: new connection", c->peer);
  send_greeting (c);
}

void
server_add_connection (int fd, bool is_unix)
{
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;

  if (is_unix || getpeername (fd, (struct sockaddr *) &ss, &sl) == -1)
    serve (fd, is_unix, NULL);
  else
    serve (fd, is_unix, &ss);
}

static void
send_greeting (struct conn *c)
{
  struct out_msg *m = conn_msg_new (NULL);
  uint8_t *p;

  if (m == NULL) {
    conn_close (c, "out of memory");
    return;
  }
  p = put64 (m->hdr, NBD_MAGIC);
  p = put64 (p, NBD_IHAVEOPT);
  p = put16 (p, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  m->hdr_len = (size_t) (p - m->hdr);
  conn_queue (c, m);
}

/* ---- Accepting, and resting when out of descriptors ---- */

static void
set_listening (bool on)
{
  for (unsigned i = 0; i < srv.nr_listeners; i++)
    loop_source_set_events (srv.listeners[i].src, on ? EPOLLIN : 0);
}

/* Out of descriptors (or memory).  The connections waiting in the
 * backlog are closed through the reserve: that takes them off the
 * backlog, so the next wake-up is for new ones, not a spin, and every
 * client hears a prompt close.  When that closes none (the reserve is
 * gone, or memory is short) the listeners rest until a connection of
 * ours closes or the next tick.  An episode is logged when it begins
 * and, with its count, when an accept works again. */
static void
out_of_descriptors (struct listener *l, int err)
{
  unsigned refused = fdreserve_refuse (l->fd, REFUSE_BATCH);

  if (!srv.starved) {
    srv.starved = true;
    srv.starved_ns = loop_now_ns ();
    srv.refused_starved = 0;
    log_ratelimit (LOG_WARNING, "accept: %s: closing new connections unserved "
                   "until a descriptor frees", strerror (err));
  }
  srv.refused_starved += refused;
  if (refused == 0) {
    srv.accept_paused = true;
    set_listening (false);
  }
}

static void
resume_accepting (void)
{
  if (!srv.accept_paused)
    return;
  srv.accept_paused = false;
  fdreserve_init ();            /* if a refusal could not take it back */
  set_listening (true);
}

static void
accepted_again (void)
{
  srv.starved = false;
  log_ratelimit (LOG_INFO, "accepting connections again after %.1f s; "
                 "%u closed unserved meanwhile",
                 (double) (loop_now_ns () - srv.starved_ns) / 1e9,
                 srv.refused_starved);
}

static void
on_accept (void *opaque, uint32_t events)
{
  struct listener *l = opaque;

  for (int i = 0; i < ACCEPT_BATCH && !srv.accept_paused; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4 (l->fd, (struct sockaddr *) &ss, &sl,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (srv.starved)
        accepted_again ();
      serve (fd, l->is_unix, l->is_unix ? NULL : &ss);
      continue;
    }
    switch (errno) {
    case EAGAIN: case EINTR: case ECONNABORTED:
      return;
    case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
      out_of_descriptors (l, errno);
      return;
    default:                    /* that connection's own failure */
      log_ratelimit (LOG_WARNING, "accept: %m");
      return;
    }
  }
}

static int
add_listener (int fd, bool is_unix, const char *unix_path)
{
  struct listener *l;

  if (srv.nr_listeners == MAX_LISTENERS) {
    close (fd);
    return error_set (ENOSPC, "too many listening sockets");
  }
  l = &srv.listeners[srv.nr_listeners];
  l->fd = fd;
  l->is_unix = is_unix;
  l->unix_path = unix_path ? strdup (unix_path) : NULL;
  l->src = loop_add_fd (srv.loop, fd, EPOLLIN, on_accept, l);
  if (l->src == NULL) {
    close (fd);
    free (l->unix_path);
    return -1;
  }
  srv.nr_listeners++;
  return 0;
}

int
server_listen_unix (const char *path, unsigned mode)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd;

  if (strlen (path) >= sizeof sun.sun_path)
    return error_set (ENAMETOOLONG, "unix socket path %s", path);
  strcpy (sun.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd == -1)
    return error_set (errno, "socket");
  /* A socket file left by a previous run that died. */
  unlink (path);
  if (bind (fd, (struct sockaddr *) &sun, sizeof sun) == -1) {
    error_set (errno, "bind %s", path);
    close (fd);
    return -1;
  }
  if (chmod (path, mode) == -1 || listen (fd, 128) == -1) {
    error_set (errno, "listen %s", path);
    close (fd);
    unlink (path);
    return -1;
  }
  return add_listener (fd, true, path);
}

/* Splits "host:port" or "[v6]:port". */
static int
split_hostport (const char *hostport, char *host, size_t hlen,
                char *port, size_t plen)
{
  const char *colon;

  if (hostport[0] == '[') {
    const char *end = strchr (hostport, ']');
    if (end == NULL || end[1] != ':')
      return error_set (0, "bad address '%s' (expected [ADDR]:PORT)", hostport);
    snprintf (host, hlen, "%.*s", (int) (end - hostport - 1), hostport + 1);
    colon = end + 1;
  }
  else {
    colon = strrchr (hostport, ':');
    if (colon == NULL)
      return error_set (0, "bad address '%s' (expected HOST:PORT)", hostport);
    snprintf (host, hlen, "%.*s", (int) (colon - hostport), hostport);
  }
  snprintf (port, plen, "%s", colon + 1);
  if (port[0] == '\0')
    return error_set (0, "bad address '%s': no port", hostport);
  return 0;
}

static int
resolve (const char *hostport, struct addrinfo **res)
{
  char host[256], port[32];
  struct addrinfo hints = {
    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
    .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
  };
  int r;

  if (split_hostport (hostport, host, sizeof host, port, sizeof port) == -1)
    return -1;
  r = getaddrinfo (host[0] ? host : NULL, port, &hints, res);
  if (r != 0)
    return error_set (0, "cannot resolve '%s': %s", hostport, gai_strerror (r));
  return 0;
}

static bool
is_loopback (const struct sockaddr *sa)
{
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s = (const struct sockaddr_in *) sa;
    return (ntohl (s->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *) sa;
    return IN6_IS_ADDR_LOOPBACK (&s->sin6_addr);
  }
  return false;
}

bool
server_addr_is_loopback (const char *hostport)
{
  struct addrinfo *res, *ai;
  bool all = true;

  if (resolve (hostport, &res) == -1)
    return false;
  for (ai = res; ai; ai = ai->ai_next)
    all = all && is_loopback (ai->ai_addr);
  freeaddrinfo (res);
  return all;
}

int
server_listen_tcp (const char *hostport)
{
  struct addrinfo *res, *ai;
  int bound = 0;

  if (resolve (hostport, &res) == -1)
    return -1;
  for (ai = res; ai; ai = ai->ai_next) {
    int one = 1;
    int fd = socket (ai->ai_family,
                     ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
      continue;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
      setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind (fd, ai->ai_addr, ai->ai_addrlen) == -1
        || listen (fd, 128) == -1) {
      error_set (errno, "listen %s", hostport);
      close (fd);
      continue;
    }
    if (add_listener (fd, false, NULL) == -1)
      continue;
    bound++;
  }
  freeaddrinfo (res);
  return bound > 0 ? 0 : -1;
}

void
server_stop_listening (void)
{
  for (unsigned i = 0; i < srv.nr_listeners; i++) {
    struct listener *l = &srv.listeners[i];
    loop_source_remove (l->src);
    close (l->fd);
    if (l->unix_path)
      unlink (l->unix_path);
    free (l->unix_path);
  }
  srv.nr_listeners = 0;
}

void
server_shutdown_connections (void)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &srv.conns) {
    conn_drain (list_entry (pos, struct conn, node));
  }
}

int
server_enable_tls (const struct psk_keys *keys)
{
  return tls_server_init (keys);
}

void
server_free (void)
{
  server_stop_listening ();
  loop_source_remove (srv.tick);
  tls_server_free ();
  fdreserve_free ();
  log_limits_flush (true);      /* what the last windows held back */
}
