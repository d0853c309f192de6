/* SPDX-License-Identifier: MIT */
/* Connection I/O: receiving into the input buffer, the reply queue,
 * and the lifetime rules described in conn.h.  Over TLS the bytes go
 * through tls.c; the plaintext path is the same as without it. */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/log.h"
#include "common/objcache.h"
#include "conn.h"
#include "server-internal.h"
#include "tls.h"

#define MAX_IOV 64

void
conn_ref (struct conn *c)
{
  c->refs++;
}

void
conn_unref (struct conn *c)
{
  assert (c->refs > 0);
  if (--c->refs > 0)
    return;
  assert (c->closed && c->in_flight == 0);
  if (c->exp)
    server_backend ()->release (c->exp->handle);
  free (c->exp);
  free (c->meta_export);
  free (c->in);
  free (c);
  server_conn_freed ();
}

/* One of each per request: the busy data path allocates neither. */
static struct objcache msg_cache = OBJCACHE_INIT (struct out_msg, 1024);
static struct objcache request_cache = OBJCACHE_INIT (struct request, 1024);

void
conn_msg_free (struct out_msg *m)
{
  list_del (&m->node);
  free (m->owned);
  if (m->req)
    conn_request_put (m->req);
  objcache_put (&msg_cache, m);
}

struct request *
conn_request_alloc (void)
{
  return objcache_get (&request_cache);
}

struct out_msg *
conn_msg_new (struct request *req)
{
  struct out_msg *m = objcache_get (&msg_cache);

  if (m == NULL)
    return NULL;
  list_init (&m->node);
  if (req) {
    m->req = req;
    req->refs++;
  }
  return m;
}

void
conn_queue (struct conn *c, struct out_msg *m)
{
  if (c->closed) {
    list_add_tail (&c->outq, &m->node);  /* so conn_msg_free can unlink */
    conn_msg_free (m);
    return;
  }
  list_add_tail (&c->outq, &m->node);
  server_mark_flush (c);
}

const char *
conn_tls_username (const struct conn *c)
{
  return c->client.tls_username;
}

static void
check_done (struct conn *c)
{
  if (c->closed || c->in_flight > 0 || !list_empty (&c->outq)
      || tls_output_pending (c))
    return;
  if (c->want_close)
    conn_close (c, NULL);
  else if (c->draining && c->input_idle && c->in_start == c->in_end
           && c->phase == PHASE_REQUEST_HDR)
    conn_close (c, "drained");
}

static void
tls_pending_input (void *opaque)
{
  struct conn *c = opaque;

  if (!c->closed)
    conn_on_events (c, EPOLLIN);
  conn_unref (c);
}

/* While handshaking, the socket is gnutls': wait in the direction it
 * asks for, once the STARTTLS reply has gone out in plaintext. */
static uint32_t
handshake_events (const struct conn *c)
{
  if (!list_empty (&c->outq))
    return c->write_blocked ? EPOLLOUT : 0;
  return tls_wants_write (c) ? EPOLLOUT : EPOLLIN;
}

void
conn_update_events (struct conn *c)
{
  uint32_t ev = 0;

  if (c->closed)
    return;
  if (c->phase == PHASE_TLS_HANDSHAKE)
    ev = handshake_events (c);
  else if (c->phase != PHASE_CLOSING && !c->want_close
           && c->in_flight < MAX_IN_FLIGHT
           && c->in_flight_bytes < MAX_IN_FLIGHT_BYTES
           && c->in_end - c->in_start < CONN_INBUF)
    ev |= EPOLLIN;
  if (c->write_blocked || c->tls_read_wants_write)
    ev |= EPOLLOUT;
  if (loop_source_set_events (c->src, ev) == -1) {
    conn_close (c, "epoll");
    return;
  }
  if (c->phase != PHASE_TLS_HANDSHAKE && (ev & EPOLLIN) && tls_pending (c)
      && !c->tls_later.queued) {
    conn_ref (c);
    loop_defer (server_loop (), &c->tls_later, tls_pending_input, c);
  }
}

void
conn_want_close (struct conn *c)
{
  c->want_close = true;
  c->phase = PHASE_CLOSING;
  conn_update_events (c);
  check_done (c);
}

void
conn_drain (struct conn *c)
{
  if (c->closed)
    return;
  if (conn_negotiating (c)) {
    conn_close (c, "shutting down during negotiation");
    return;
  }
  c->draining = true;
  c->client.closed_cleanly = true;
  /* Answer what is already here; the receive that finds the socket
   * empty marks the connection idle, and an idle one closes now. */
  conn_on_events (c, EPOLLIN);
}

void
conn_close (struct conn *c, const char *why)
{
  if (c->closed)
    return;
  if (why)
    log_debug ("%s: closing connection: %s", c->peer, why);
  c->closed = true;
  c->phase = PHASE_CLOSING;
  loop_source_remove (c->src);
  c->src = NULL;
  tls_end (c);
  close (c->fd);
  c->fd = -1;
  while (!list_empty (&c->outq))
    conn_msg_free (list_entry (c->outq.next, struct out_msg, node));
  if (c->payload_req) {
    struct request *req = c->payload_req;
    c->payload_req = NULL;
    conn_request_put (req);
  }
  if (c->exp)
    server_backend ()->detach (c->exp->handle, &c->client);
  server_forget (c);
  conn_unref (c);
}

/* A request's last reference: give back its buffers, and let the
 * connection read again if it was held back. */
void
conn_request_put (struct request *req)
{
  struct conn *c = req->conn;
  bool was_full;

  assert (req->refs > 0);
  if (--req->refs > 0)
    return;
  was_full = c->in_flight >= MAX_IN_FLIGHT
    || c->in_flight_bytes >= MAX_IN_FLIGHT_BYTES;
  bufpool_put (req->buf, req->buf_size);
  image_extents_free (&req->extents);
  c->in_flight--;
  c->in_flight_bytes -= req->buf_size;
  objcache_put (&request_cache, req);
  if (was_full && !c->closed) {
    conn_update_events (c);
    server_kick (c);            /* buffered requests may be waiting */
  }
  check_done (c);
  conn_unref (c);
}

/* ---- Output ---- */

void
conn_consume (struct conn *c, size_t n)
{
  while (n > 0) {
    struct out_msg *m = list_entry (c->outq.next, struct out_msg, node);
    size_t left = m->hdr_len + m->data_len - m->sent;
    size_t take = n < left ? n : left;

    m->sent += take;
    n -= take;
    if (m->sent == m->hdr_len + m->data_len)
      conn_msg_free (m);
  }
}

/* Sends the reply queue with writev-like batching.  Returns true once
 * all of it is sent; false if the socket is full or the connection
 * closed. */
static bool
flush_plain (struct conn *c)
{
  while (!c->closed && !list_empty (&c->outq)) {
    struct iovec iov[MAX_IOV];
    struct msghdr mh = { .msg_iov = iov };
    struct list *pos;
    size_t n = 0;
    ssize_t r;

    for (pos = c->outq.next; pos != &c->outq && n + 2 <= MAX_IOV;
         pos = pos->next) {
      struct out_msg *m = list_entry (pos, struct out_msg, node);
      size_t off = m->sent;
      if (off < m->hdr_len) {
        iov[n++] = (struct iovec) { m->hdr + off, m->hdr_len - off };
        off = m->hdr_len;
      }
      if (off - m->hdr_len < m->data_len)
        iov[n++] = (struct iovec) {
          (uint8_t *) m->data + (off - m->hdr_len),
          m->data_len - (off - m->hdr_len) };
    }
    mh.msg_iovlen = n;
    r = sendmsg (c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c->write_blocked = true;
        conn_update_events (c);
        return false;
      }
      conn_close (c, "send failed");
      return false;
    }
    conn_consume (c, (size_t) r);
  }
  return !c->closed;
}

void
conn_flush (struct conn *c)
{
  if (!(c->tls_up ? tls_flush (c) : flush_plain (c)))
    return;
  if (c->write_blocked) {
    c->write_blocked = false;
    conn_update_events (c);
  }
  /* The STARTTLS reply is out: the handshake can begin. */
  if (c->phase == PHASE_TLS_HANDSHAKE)
    tls_handshake (c);
  check_done (c);
}

/* ---- Input ---- */

static ssize_t
conn_recv (struct conn *c, void *buf, size_t len)
{
  if (c->tls_up)
    return tls_recv (c, buf, len);
  return recv (c->fd, buf, len, MSG_DONTWAIT);
}

/* Payloads at least this big are received straight into the request's
 * buffer; smaller ones go through the input buffer with the requests
 * around them, so one recv() takes in many small writes (a copy of 4
 * KiB costs less than the system call it saves). */
#define DIRECT_PAYLOAD_MIN (32u << 10)

/* Receives into the input buffer, or straight into a big WRITE payload
 * when nothing is buffered.  *DRAINED is set when the socket gave less
 * than asked: it is empty now, and epoll will say when more comes.
 * Returns false if the connection closed. */
static bool
receive (struct conn *c, bool *drained)
{
  ssize_t r;
  size_t want;

  *drained = false;
  if (c->phase == PHASE_WRITE_PAYLOAD && c->in_start == c->in_end
      && c->payload_req->count - c->payload_req->payload_got >= DIRECT_PAYLOAD_MIN) {
    struct request *req = c->payload_req;
    want = req->count - req->payload_got;
    r = conn_recv (c, (uint8_t *) req->buf + req->payload_got, want);
    if (r > 0) {
      *drained = (size_t) r < want && !c->tls_up;
      c->input_idle = *drained;
      req->payload_got += (size_t) r;
      if (req->payload_got == req->count) {
        c->payload_req = NULL;
        c->phase = PHASE_REQUEST_HDR;
        transmission_payload_done (c, req);
      }
      return true;
    }
  }
  else {
    if (c->in_start == c->in_end)
      c->in_start = c->in_end = 0;
    else if (c->in_end == CONN_INBUF && c->in_start > 0) {
      memmove (c->in, c->in + c->in_start, c->in_end - c->in_start);
      c->in_end -= c->in_start;
      c->in_start = 0;
    }
    if (c->in_end == CONN_INBUF)
      return true;              /* full: parse first */
    want = CONN_INBUF - c->in_end;
    r = conn_recv (c, c->in + c->in_end, want);
    if (r > 0) {
      *drained = (size_t) r < want && !c->tls_up;
      c->input_idle = *drained;
      c->in_end += (size_t) r;
      return true;
    }
  }
  if (r == 0) {
    /* The client hung up.  Requests in flight still complete (their
     * replies go nowhere); nothing else is owed to it. */
    conn_close (c, "client disconnected");
    return false;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    c->input_idle = errno != EINTR;
    return true;
  }
  if (c->tls_up)
    log_ratelimit (LOG_INFO, "%s: %s; closing the connection", c->peer,
                   error_get ());
  conn_close (c, "receive failed");
  return false;
}

void
conn_parse (struct conn *c)
{
  for (;;) {
    bool more;

    if (c->closed || c->phase == PHASE_CLOSING
        || c->phase == PHASE_TLS_HANDSHAKE)
      return;
    if (c->phase <= PHASE_OPTION_DISCARD)
      more = handshake_step (c);
    else
      more = transmission_step (c);
    if (!more)
      return;
  }
}

void
conn_on_events (void *opaque, uint32_t events)
{
  struct conn *c = opaque;

  conn_ref (c);                 /* stay alive through this callback */
  if ((events & EPOLLOUT) && c->tls_read_wants_write) {
    c->tls_read_wants_write = false;
    events |= EPOLLIN;
  }
  if (events & EPOLLOUT)
    conn_flush (c);
  if (!c->closed && c->phase == PHASE_TLS_HANDSHAKE
      && list_empty (&c->outq) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
    tls_handshake (c);
  if (!c->closed && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    /* Bound the work per event so one busy client cannot starve the
     * others; level-triggered epoll brings us back. */
    for (int i = 0; i < 4 && !c->closed && c->phase != PHASE_CLOSING
           && c->phase != PHASE_TLS_HANDSHAKE; i++) {
      size_t before = c->in_end;
      size_t got = c->payload_req ? c->payload_req->payload_got : 0;
      bool drained;
      if (!receive (c, &drained))
        break;
      conn_parse (c);
      if (c->closed || drained || (c->in_end == before
                        && (!c->payload_req || c->payload_req->payload_got == got)))
        break;
      if (!(loop_source_events (c->src) & EPOLLIN))
        break;
    }
    if (!c->closed)
      conn_update_events (c);
    check_done (c);
  }
  conn_unref (c);
}
