/* SPDX-License-Identifier: MIT */
/* One-shot conversations with the peer (peer.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <libnbd.h>

#include "common/error.h"
#include "common/log.h"
#include "peer.h"

#define BLOCK_STATUS_CHUNK (1ull << 30)

enum kind { PROBE, FETCH, HANDOVER };

static const struct peer_nbd_client *client;

void
peer_register_nbd_client (const struct peer_nbd_client *c)
{
  client = c;
}

struct peer_op {
  enum kind kind;
  struct loop *loop;
  struct nbd_handle *h;
  struct loop_source *src, *timer;
  struct loop_deferred later, first_look;
  bool issued, finished;
  int err;
  /* probe */
  char *state;
  peer_state_fn state_done;
  /* fetch */
  char *context;
  uint64_t size, pos, got_to;
  bool in_flight, sent;
  peer_extent_fn dirty;
  peer_done_fn done;
  void *opaque;
};

static void
op_free (struct peer_op *op)
{
  if (op->src)
    loop_source_remove (op->src);
  if (op->timer)
    loop_source_remove (op->timer);
  client->close_handle (op->h);
  loop_cancel_deferred (op->loop, &op->later);
  loop_cancel_deferred (op->loop, &op->first_look);
  free (op->state);
  free (op->context);
  free (op);
}

static void
deliver (void *opaque)
{
  struct peer_op *op = opaque;

  if (op->kind == PROBE)
    op->state_done (op->opaque, op->err ? op->err : op->state ? 0 : ENODATA,
                    op->state);
  else if (op->kind == HANDOVER)
    op->state_done (op->opaque, op->err, op->state);
  else
    op->done (op->opaque, op->err);
  op_free (op);
}

/* Ends the op: its callback runs from the loop. */
static void
finish (struct peer_op *op, int err)
{
  if (op->finished)
    return;
  op->finished = true;
  op->err = err;
  if (op->src) {
    loop_source_remove (op->src);
    op->src = NULL;
  }
  loop_defer (op->loop, &op->later, deliver, op);
}

static int
on_context (void *user_data, const char *name)
{
  struct peer_op *op = user_data;
  size_t n = strlen (PEER_STATE_CONTEXT);

  if (strncmp (name, PEER_STATE_CONTEXT, n) == 0 && op->state == NULL)
    op->state = strdup (name + n);
  return 0;
}

static int
on_list_done (void *user_data, int *error)
{
  struct peer_op *op = user_data;

  op->in_flight = false;
  op->err = *error;
  return 1;
}

static int
on_extents (void *user_data, const char *metacontext, uint64_t offset,
            uint32_t *entries, size_t nr, int *error)
{
  struct peer_op *op = user_data;

  (void) error;
  if (strcmp (metacontext, op->context) != 0)
    return 0;
  for (size_t i = 0; i + 1 < nr; i += 2) {
    if (entries[i + 1] & 1)
      op->dirty (op->opaque, offset, entries[i]);
    offset += entries[i];
  }
  if (offset > op->got_to)
    op->got_to = offset;
  return 0;
}

static int
on_status_done (void *user_data, int *error)
{
  struct peer_op *op = user_data;

  op->in_flight = false;
  if (*error)
    op->err = *error;
  return 1;
}

static void step_fetch (struct peer_op *op);

/* The next step of the conversation, whenever libnbd is idle.  libnbd
 * may complete a command inside the call that issues it (the reply was
 * already there), so the completion is checked again right after. */
static void
step (struct peer_op *op)
{
  if (op->kind == HANDOVER) {
    /* The peer took the claim once the export is ours (OPT_GO); then a
     * goodbye, so that it does not take the hang-up for a peer gone. */
    if (!op->sent && nbd_aio_is_ready (op->h)) {
      op->sent = true;
      if (nbd_aio_disconnect (op->h, 0) == -1)
        finish (op, 0);
    }
    else if (op->sent && (nbd_aio_is_closed (op->h) || nbd_aio_is_dead (op->h)))
      finish (op, 0);
    return;
  }
  if (op->kind == FETCH) {
    do
      step_fetch (op);
    while (!op->finished && !op->in_flight && nbd_aio_is_ready (op->h));
    return;
  }
  if (!op->issued && nbd_aio_is_negotiating (op->h)) {
    op->issued = true;
    op->in_flight = true;
    if (nbd_aio_opt_list_meta_context
        (op->h, (nbd_context_callback) { .callback = on_context, .user_data = op },
         (nbd_completion_callback) { .callback = on_list_done, .user_data = op }) == -1) {
      finish (op, nbd_get_errno () ? nbd_get_errno () : EIO);
      return;
    }
  }
  if (op->issued && !op->in_flight)
    finish (op, op->err);
}

static void
step_fetch (struct peer_op *op)
{
  if (!nbd_aio_is_ready (op->h) || op->in_flight)
    return;
  if (op->err || op->pos >= op->size) {
    finish (op, op->err);
    return;
  }
  if (!op->issued) {
    op->issued = true;
    if (nbd_can_meta_context (op->h, op->context) != 1) {
      log_warn ("peer does not offer %s: its dirty regions are not known",
                op->context);
      finish (op, ENOTSUP);
      return;
    }
  }
  if (op->sent) {
    if (op->got_to <= op->pos) {
      finish (op, EIO);         /* a reply that covers nothing: no progress */
      return;
    }
    op->pos = op->got_to;
  }
  if (op->pos >= op->size) {
    finish (op, 0);
    return;
  }
  op->in_flight = true;
  op->sent = true;
  if (nbd_aio_block_status
      (op->h, op->size - op->pos < BLOCK_STATUS_CHUNK ? op->size - op->pos
       : BLOCK_STATUS_CHUNK, op->pos,
       (nbd_extent_callback) { .callback = on_extents, .user_data = op },
       (nbd_completion_callback) { .callback = on_status_done, .user_data = op },
       0) == -1)
    finish (op, nbd_get_errno () ? nbd_get_errno () : EIO);
}

static void
update_events (struct peer_op *op)
{
  if (!op->finished && op->src)
    client->watch_handle (op->src, op->h);
}

static void
on_event (void *opaque, uint32_t events)
{
  struct peer_op *op = opaque;
  int r;

  if (op->finished)             /* a worker's late report */
    return;
  r = client->handle_events (op->loop, op->src, op->h, events, on_event, op,
                             NULL);
  if (r == 1)                   /* with a TLS worker (tls-worker.h) */
    return;
  if (r == -1) {
    int err = client->handle_errno (op->h);
    if (op->kind == HANDOVER && op->sent) {
      finish (op, 0);           /* after the goodbye: the peer had said yes */
      return;
    }
    log_debug ("peer: %s", client->handle_error (op->h));
    if (op->kind == HANDOVER && op->state == NULL)
      op->state = strdup (client->handle_error (op->h));
    /* The reason matters: a refused connection means no process
     * listens there any more. */
    finish (op, err > 0 ? err : ECONNRESET);
    return;
  }
  step (op);
  update_events (op);
}

/* libnbd may get through the whole negotiation inside the connect call
 * (a quick peer on loopback): the handle is then idle, waits for no
 * event, and only a look from the loop moves the conversation on. */
static void
look (void *opaque)
{
  struct peer_op *op = opaque;

  if (!op->finished)
    on_event (op, 0);
}

static void
on_timeout (void *opaque)
{
  struct peer_op *op = opaque;

  log_debug ("peer op %p: timed out in %s", (void *) op,
             client->handshaking (op->h) ? "its TLS handshake"
             : nbd_connection_state (op->h));
  loop_source_remove (op->timer);
  op->timer = NULL;
  finish (op, ETIMEDOUT);
}

static struct peer_op *
op_start (struct loop *loop, enum kind kind, const char *uri,
          unsigned timeout_ms, const char *context)
{
  struct peer_op *op = calloc (1, sizeof *op);
  int fd;

  if (client == NULL) {
    free (op);
    error_set (ENOTSUP, "no NBD client for the peer link");
    return NULL;
  }
  if (op == NULL) {
    error_set (ENOMEM, "allocating a peer request");
    return NULL;
  }
  op->kind = kind;
  op->loop = loop;
  if ((op->h = nbd_create ()) == NULL
      || (context && (op->context = strdup (context)) == NULL)) {
    error_set (ENOMEM, "nbd_create: %s", nbd_get_error ());
    goto err;
  }
  if ((kind == PROBE && nbd_set_opt_mode (op->h, true) == -1)
      || (kind != HANDOVER
          && nbd_add_meta_context (op->h, kind == PROBE ? "mirrord:" : context) == -1)
      || client->setup_handle (op->h, uri) == -1
      || nbd_aio_connect_uri (op->h, uri) == -1
      || (fd = nbd_aio_get_fd (op->h)) == -1) {
    /* A unix socket nobody listens on refuses inside the connect call:
     * keep its errno (ECONNREFUSED), it says the peer is gone. */
    error_set (nbd_get_errno () > 0 ? nbd_get_errno () : 0, "%s: %s", uri,
               nbd_get_error ());
    goto err;
  }
  op->src = loop_add_fd (loop, fd, EPOLLIN | EPOLLOUT, on_event, op);
  op->timer = loop_add_timer (loop, timeout_ms, 0, on_timeout, op);
  if (op->src == NULL || op->timer == NULL)
    goto err;
  update_events (op);
  loop_defer (loop, &op->first_look, look, op);
  return op;
 err:
  op_free (op);
  return NULL;
}

struct peer_op *
peer_probe (struct loop *loop, const char *uri, unsigned timeout_ms,
            peer_state_fn done, void *opaque)
{
  struct peer_op *op = op_start (loop, PROBE, uri, timeout_ms, NULL);

  if (op) {
    op->state_done = done;
    op->opaque = opaque;
  }
  return op;
}

struct peer_op *
peer_fetch_bitmap (struct loop *loop, const char *uri, const char *context,
                   uint64_t size, unsigned timeout_ms, peer_extent_fn dirty,
                   peer_done_fn done, void *opaque)
{
  struct peer_op *op = op_start (loop, FETCH, uri, timeout_ms, context);

  if (op) {
    op->size = size;
    op->dirty = dirty;
    op->done = done;
    op->opaque = opaque;
  }
  return op;
}

struct peer_op *
peer_handover (struct loop *loop, const char *uri, unsigned timeout_ms,
               peer_state_fn done, void *opaque)
{
  struct peer_op *op = op_start (loop, HANDOVER, uri, timeout_ms, NULL);

  if (op) {
    op->state_done = done;
    op->opaque = opaque;
  }
  return op;
}

void
peer_op_cancel (struct peer_op *op)
{
  if (op)
    op_free (op);
}
