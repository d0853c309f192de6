/* SPDX-License-Identifier: MIT */
/* Transmission: request headers in, requests to the export's block
 * stack (image/block.h), replies out.
 *
 * A request's life: header parsed and checked (request.c); for WRITE
 * the payload is read into a pooled buffer; the request is submitted
 * to the export and, when it completes, its reply is queued.  Many
 * requests are in flight at once and replies go out in completion
 * order.  The request is freed when its last reply message has been
 * sent (conn.c).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bufpool.h"
#include "common/log.h"
#include "conn.h"

/* Sparse reads report holes at least this long as OFFSET_HOLE; smaller
 * ones travel as data (they read as zero), which saves chunks. */
#define MIN_HOLE 4096
#define MAX_READ_CHUNKS 1024

/* The export's flags as the block stack states them now. */
uint16_t
transmission_flags (const struct conn *c, struct blk *b)
{
  unsigned bf = blk_flags (b);
  uint16_t f = NBD_FLAG_HAS_FLAGS;

  if (c->structured)
    f |= NBD_FLAG_SEND_DF;
  if (bf & BLK_CAN_FLUSH)
    f |= NBD_FLAG_SEND_FLUSH;
  if (bf & BLK_CAN_FUA)
    f |= NBD_FLAG_SEND_FUA;
  if (bf & BLK_CAN_MULTI_CONN)
    f |= NBD_FLAG_CAN_MULTI_CONN;
  if (bf & BLK_CAN_CACHE)
    f |= NBD_FLAG_SEND_CACHE;
  if (bf & BLK_READ_ONLY)
    return f | NBD_FLAG_READ_ONLY;
  if (bf & BLK_CAN_TRIM)
    f |= NBD_FLAG_SEND_TRIM;
  if (bf & BLK_CAN_ZERO)
    f |= NBD_FLAG_SEND_WRITE_ZEROES;
  if (bf & BLK_CAN_FAST_ZERO)
    f |= NBD_FLAG_SEND_FAST_ZERO;
  return f;
}

static struct out_msg *
msg_or_close (struct conn *c, struct request *req)
{
  struct out_msg *m = conn_msg_new (req);

  if (m == NULL)
    conn_close (c, "out of memory");
  return m;
}

static void
simple_reply (struct conn *c, struct request *req, uint64_t cookie, int err,
              const void *data, size_t len)
{
  struct out_msg *m = msg_or_close (c, req);
  uint8_t *p;

  if (m == NULL)
    return;
  p = put32 (m->hdr, NBD_SIMPLE_REPLY_MAGIC);
  p = put32 (p, proto_errno_to_nbd (err));
  p = put64 (p, cookie);
  m->hdr_len = (size_t) (p - m->hdr);
  m->data = data;
  m->data_len = len;
  conn_queue (c, m);
}

/* Writes a structured chunk header into M; returns where the chunk's
 * own fields start. */
static uint8_t *
chunk_header (struct out_msg *m, uint64_t cookie, uint16_t flags,
              uint16_t type, uint32_t length)
{
  uint8_t *p = put32 (m->hdr, NBD_STRUCTURED_REPLY_MAGIC);
  p = put16 (p, flags);
  p = put16 (p, type);
  p = put64 (p, cookie);
  return put32 (p, length);
}

static void
error_chunk (struct conn *c, struct request *req, uint64_t cookie, int err)
{
  struct out_msg *m = msg_or_close (c, req);
  const char *msg = strerror (err);
  size_t len = strlen (msg);
  uint8_t *p;

  if (m == NULL)
    return;
  p = chunk_header (m, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                    (uint32_t) (6 + len));
  p = put32 (p, proto_errno_to_nbd (err));
  p = put16 (p, (uint16_t) len);
  m->hdr_len = (size_t) (p - m->hdr);
  m->data = msg;                /* strerror's text is static */
  m->data_len = len;
  conn_queue (c, m);
}

/* An error answer: a structured error chunk (with a message) when
 * negotiated, which READ and BLOCK_STATUS require, else simple. */
void
transmission_error_reply (struct conn *c, struct request *req,
                          uint64_t cookie, int err)
{
  if (c->structured)
    error_chunk (c, req, cookie, err);
  else
    simple_reply (c, req, cookie, err, NULL, 0);
}

static void
data_chunk (struct conn *c, struct request *req, uint64_t off, uint64_t len,
            bool hole, bool done)
{
  struct out_msg *m = msg_or_close (c, req);
  uint16_t flags = done ? NBD_REPLY_FLAG_DONE : 0;
  uint8_t *p;

  if (m == NULL)
    return;
  if (hole) {
    p = chunk_header (m, req->cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
    p = put64 (p, off);
    p = put32 (p, (uint32_t) len);
  }
  else {
    p = chunk_header (m, req->cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA,
                      (uint32_t) (8 + len));
    p = put64 (p, off);
    m->data = (uint8_t *) req->buf + (off - req->offset);
    m->data_len = len;
  }
  m->hdr_len = (size_t) (p - m->hdr);
  conn_queue (c, m);
}

/* Is [off, off+len) a hole worth its own chunk? */
static bool
extent_is_hole (const struct image_extent *e)
{
  return (e->flags & IMAGE_EXTENT_ZERO) && e->length >= MIN_HOLE;
}

static void
read_reply (struct conn *c, struct request *req)
{
  uint64_t end = req->offset + req->count, run = req->offset, covered;
  bool run_hole = false;
  size_t i;

  if (!c->structured) {
    simple_reply (c, req, req->cookie, 0, req->buf, req->count);
    return;
  }
  /* Merge the extents into alternating runs of data and holes; one
   * chunk per run, the last one marked DONE. */
  for (i = 0; i < req->extents.nr && !c->closed; i++) {
    const struct image_extent *e = &req->extents.ext[i];
    bool hole = extent_is_hole (e);

    if (i == 0)
      run_hole = hole;
    else if (hole != run_hole) {
      data_chunk (c, req, run, e->offset - run, run_hole, false);
      run = e->offset;
      run_hole = hole;
    }
    if (e->offset + e->length >= end)
      break;
  }
  /* What the extents do not cover (the list was capped) is data. */
  covered = req->offset;
  if (req->extents.nr > 0) {
    const struct image_extent *last = &req->extents.ext[req->extents.nr - 1];
    covered = last->offset + last->length < end ? last->offset + last->length : end;
  }
  if (covered < end && run_hole && !c->closed) {
    data_chunk (c, req, run, covered - run, true, false);
    run = covered;
    run_hole = false;
  }
  if (!c->closed)
    data_chunk (c, req, run, end - run, run_hole, true);
}

/* A disk that fails (EIO, or ENOSPC: full) is the operator's concern,
 * not only the client's: it is logged as an error, at most once a
 * second per connection (a dying disk fails every request), with the
 * count of those not logged since.  Other errors are the request's own
 * (out of range, read-only, shutting down): debug only. */
#define IO_ERROR_LOG_INTERVAL_NS 1000000000ull

static void
log_request_error (struct conn *c, const struct request *req, int err)
{
  uint64_t now;

  if (err != EIO && err != ENOSPC) {
    log_debug ("%s: %s at %llu+%u failed: %s", c->peer,
               proto_cmd_name (req->type), (unsigned long long) req->offset,
               req->count, strerror (err));
    return;
  }
  now = loop_now_ns ();
  if (c->io_error_logged_ns && now - c->io_error_logged_ns < IO_ERROR_LOG_INTERVAL_NS) {
    c->io_errors_unlogged++;
    return;
  }
  log_err ("%s: export %s: %s at %llu+%u failed: %s (%u more since the last "
           "report)", c->peer, c->exp->name, proto_cmd_name (req->type),
           (unsigned long long) req->offset, req->count, strerror (err),
           c->io_errors_unlogged);
  c->io_error_logged_ns = now;
  c->io_errors_unlogged = 0;
}

static void
request_done (struct image_io *io, int err)
{
  struct request *req = io->opaque;
  struct conn *c = req->conn;

  if (c->closed) {
    conn_request_put (req);
    return;
  }
  if (err) {
    log_request_error (c, req, err);
    transmission_error_reply (c, req, req->cookie, err);
  }
  else if (req->type == NBD_CMD_READ)
    read_reply (c, req);
  else
    simple_reply (c, req, req->cookie, 0, NULL, 0);
  conn_request_put (req);
}

static void
submit (struct conn *c, struct request *req)
{
  struct image_io *io = &req->breq.io;

  if (req->type == NBD_CMD_BLOCK_STATUS) {
    block_status_start (req);
    return;
  }
  blk_req_init (&req->breq);
  io->offset = req->offset;
  io->count = req->count;
  io->buf = req->buf;
  io->done = request_done;
  io->opaque = req;
  if (req->flags & NBD_CMD_FLAG_FUA)
    io->flags |= IMAGE_FUA;
  switch (req->type) {
  case NBD_CMD_READ:
    io->cmd = IMAGE_READ;
    io->flags = 0;
    if (c->structured && !(req->flags & NBD_CMD_FLAG_DF)) {
      io->flags |= IMAGE_SPARSE;
      req->extents.max = MAX_READ_CHUNKS;
      io->extents = &req->extents;
    }
    break;
  case NBD_CMD_WRITE:
    io->cmd = IMAGE_WRITE;
    break;
  case NBD_CMD_FLUSH:
    io->cmd = IMAGE_FLUSH;
    io->flags = 0;
    break;
  case NBD_CMD_TRIM:
    io->cmd = IMAGE_TRIM;
    break;
  case NBD_CMD_WRITE_ZEROES:
    io->cmd = IMAGE_ZERO;
    if (!(req->flags & NBD_CMD_FLAG_NO_HOLE))
      io->flags |= IMAGE_MAY_TRIM;
    if (req->flags & NBD_CMD_FLAG_FAST_ZERO)
      io->flags |= IMAGE_FAST_ZERO;
    break;
  case NBD_CMD_CACHE:
    io->cmd = IMAGE_CACHE;
    io->flags = 0;
    break;
  }
  blk_submit (c->exp->blk, &req->breq);
}

void
transmission_payload_done (struct conn *c, struct request *req)
{
  submit (c, req);
}

/* A request from header H; with a buffer for its payload if WITH_BUF
 * (READ and WRITE).  It counts as in flight until its last reply. */
static struct request *
request_new (struct conn *c, const uint8_t *h, bool with_buf)
{
  struct request *req = conn_request_alloc ();

  if (req == NULL)
    return NULL;
  req->conn = c;
  req->refs = 1;
  req->flags = get16 (h + 4);
  req->type = get16 (h + 6);
  req->cookie = get64 (h + 8);
  req->offset = get64 (h + 16);
  req->count = get32 (h + 24);
  if (with_buf && (req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE)) {
    req->buf_size = req->count;
    req->buf = bufpool_get (req->count);
    if (req->buf == NULL) {
      free (req);
      return NULL;
    }
  }
  conn_ref (c);
  c->in_flight++;
  c->in_flight_bytes += req->buf_size;
  return req;
}

/* Refuses a request with ERR.  It stays in flight until its error
 * reply is sent, so a client that sends only bad requests and reads
 * no replies is held back like any other. */
static void
refuse (struct conn *c, const uint8_t *h, int err)
{
  struct request *req = request_new (c, h, false);

  log_debug ("%s: refusing %s (flags %#x) at %llu+%u: %s", c->peer,
             proto_cmd_name (get16 (h + 6)), get16 (h + 4),
             (unsigned long long) get64 (h + 16), get32 (h + 24),
             strerror (err));
  if (req == NULL) {
    conn_close (c, "out of memory");
    return;
  }
  req->err = err;
  if (req->type == NBD_CMD_WRITE && req->count > 0) {
    /* The payload follows whatever we think of it: skip it, and only
     * then answer.  A client may not take a reply to a write it is
     * still sending (libnbd drops the connection). */
    c->discard_left = req->count;
    c->payload_req = req;
    c->phase = PHASE_DISCARD_PAYLOAD;
    return;
  }
  transmission_error_reply (c, req, req->cookie, err);
  conn_request_put (req);
}

static void
handle_header (struct conn *c, const uint8_t *h)
{
  struct request_ctx ctx = {
    .size = blk_size (c->exp->blk),
    .writable = !(c->eflags & NBD_FLAG_READ_ONLY)
      && blk_writable (c->exp->blk),
    .structured = c->structured,
    .meta_selected = c->meta != 0,
    .eflags = c->eflags,
  };
  uint16_t type = get16 (h + 6);
  int err = request_check (type, get16 (h + 4), get64 (h + 16),
                           get32 (h + 24), &ctx);
  struct request *req;

  if (err == 0 && c->draining && type != NBD_CMD_DISC)
    err = ESHUTDOWN;
  if (err) {
    refuse (c, h, err);
    return;
  }
  if (type == NBD_CMD_DISC) {
    log_debug ("%s: client sent DISC", c->peer);
    c->client.closed_cleanly = true;
    conn_want_close (c);
    return;
  }
  req = request_new (c, h, true);
  if (req == NULL) {
    refuse (c, h, ENOMEM);
    return;
  }
  if (type != NBD_CMD_WRITE) {
    submit (c, req);
    return;
  }
  c->payload_req = req;
  c->phase = PHASE_WRITE_PAYLOAD;
}

bool
transmission_step (struct conn *c)
{
  size_t avail = c->in_end - c->in_start;

  switch (c->phase) {
  case PHASE_REQUEST_HDR:
    if (c->in_flight >= MAX_IN_FLIGHT || c->in_flight_bytes >= MAX_IN_FLIGHT_BYTES)
      return false;             /* resumed by conn_request_put */
    if (avail < sizeof (struct nbd_request))
      return false;
    if (get32 (c->in + c->in_start) != NBD_REQUEST_MAGIC) {
      conn_close (c, "bad request magic");
      return false;
    }
    c->in_start += sizeof (struct nbd_request);
    handle_header (c, c->in + c->in_start - sizeof (struct nbd_request));
    return !c->closed && c->phase != PHASE_CLOSING;

  case PHASE_WRITE_PAYLOAD: {
    struct request *req = c->payload_req;
    size_t need = req->count - req->payload_got;
    size_t n = avail < need ? avail : need;
    if (n == 0)
      return false;
    memcpy ((uint8_t *) req->buf + req->payload_got, c->in + c->in_start, n);
    c->in_start += n;
    req->payload_got += n;
    if (req->payload_got < req->count)
      return false;
    c->payload_req = NULL;
    c->phase = PHASE_REQUEST_HDR;
    submit (c, req);
    return !c->closed;
  }

  case PHASE_DISCARD_PAYLOAD: {
    struct request *req = c->payload_req;
    size_t n = avail < c->discard_left ? avail : (size_t) c->discard_left;
    c->in_start += n;
    c->discard_left -= n;
    if (c->discard_left > 0)
      return false;
    c->payload_req = NULL;
    c->phase = PHASE_REQUEST_HDR;
    transmission_error_reply (c, req, req->cookie, req->err);
    conn_request_put (req);
    return !c->closed;
  }

  default:
    return false;
  }
}
