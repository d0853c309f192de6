/* SPDX-License-Identifier: MIT */
/* Metadata contexts: negotiation (LIST_META_CONTEXT and
 * SET_META_CONTEXT) and BLOCK_STATUS replies.
 *
 * Contexts served:
 *   base:allocation           holes and zeroes, from the export's block
 *                             stack (NBD spec)
 *   one per meta-context provider the server was given (backend.h):
 *   the daemon's qemu:dirty-bitmap:EXPORT (the live dirty bitmap, bit
 *   0 = dirty, QEMU's definition) and mirrord:peer-state (listed only)
 * Context ids: base:allocation 1, provider K 2 + K.
 * Queries: with LIST, no query lists everything, and a query ending in
 * a colon ("base:", "qemu:", "qemu:dirty-bitmap:") lists what it
 * prefixes; SET selects exact names only.  Unknown namespaces are
 * ignored, as the spec requires.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "conn.h"
#include "server-internal.h"

#define MAX_DESCRIPTORS (1u << 16)
#define BASE_ID 1u
#define BASE_NAME "base:allocation"

static uint32_t
provider_id (unsigned k)
{
  return 2 + k;
}

static void
context_reply (struct conn *c, uint32_t option, uint32_t id, const char *name)
{
  size_t len = strlen (name);
  struct out_msg *m = conn_msg_new (NULL);
  uint8_t *p;

  if (m == NULL || (m->owned = malloc (4 + len)) == NULL) {
    if (m)
      conn_msg_free (m);
    conn_close (c, "out of memory");
    return;
  }
  p = put64 (m->hdr, NBD_REP_MAGIC);
  p = put32 (p, option);
  p = put32 (p, NBD_REP_META_CONTEXT);
  p = put32 (p, (uint32_t) (4 + len));
  m->hdr_len = (size_t) (p - m->hdr);
  put32 (m->owned, option == NBD_OPT_SET_META_CONTEXT ? id : 0);
  memcpy ((uint8_t *) m->owned + 4, name, len);
  m->data = m->owned;
  m->data_len = 4 + len;
  conn_queue (c, m);
}

/* Does query Q (LEN bytes) pick the context called NAME?  Exactly, or
 * (LIST only) as a prefix ending in a colon. */
static bool
matches (const char *name, const uint8_t *q, uint32_t len, bool list)
{
  size_t n = strlen (name);

  if (len == n && memcmp (q, name, n) == 0)
    return true;
  return list && len > 0 && len < n && q[len - 1] == ':'
    && memcmp (q, name, len) == 0;
}

/* Checks the query list is well-formed: NQ strings filling LEN bytes. */
static int
check_queries (const uint8_t *q, uint32_t nq, uint32_t len)
{
  uint64_t off = 0;

  for (uint32_t i = 0; i < nq; i++) {
    uint32_t ql;
    if (len - off < 4)
      return -1;
    ql = get32 (q + off);
    if (ql > NBD_MAX_STRING || ql > len - off - 4)
      return -1;
    off += 4 + ql;
  }
  return off == len ? 0 : -1;
}

/* Does any of the NQ queries at Q pick NAME (with P's own rule)? */
static bool
asked (const struct server_meta_provider *p, const char *name,
       const uint8_t *q, uint32_t nq, bool list)
{
  for (uint32_t i = 0, off = 0; i < nq; i++) {
    uint32_t ql = get32 (q + off);
    bool hit = p && p->match ? p->match (name, q + off + 4, ql, list)
      : matches (name, q + off + 4, ql, list);
    if (hit)
      return true;
    off += 4 + ql;
  }
  return false;
}

int
block_status_list_contexts (struct conn *c, uint32_t option, const char *export,
                            struct server_export *x, const uint8_t *q,
                            uint32_t nq, uint32_t len)
{
  bool list = option == NBD_OPT_LIST_META_CONTEXT;
  char name[NBD_MAX_STRING + 64];
  uint32_t picked = 0;

  if (!list) {
    /* SET replaces the selection even when it fails. */
    c->meta = 0;
    free (c->meta_export);
    c->meta_export = NULL;
  }
  if (check_queries (q, nq, len) == -1)
    return -1;
  if ((list && nq == 0) || asked (NULL, BASE_NAME, q, nq, list)) {
    picked |= META_BASE_ALLOCATION;
    context_reply (c, option, BASE_ID, BASE_NAME);
  }
  for (unsigned k = 0; k < server_meta_count (); k++) {
    const struct server_meta_provider *p = server_meta (k);
    if (p->name (x->handle, x->name, name, sizeof name) == -1)
      continue;                 /* nothing to offer for this export */
    if (!(list && nq == 0 && p->listed_by_default)
        && !asked (p, name, q, nq, list))
      continue;
    if (list || !p->list_only) {
      picked |= META_PROVIDER (k);
      context_reply (c, option, p->list_only ? 0 : provider_id (k), name);
    }
  }
  if (!list) {
    c->meta = picked;
    /* The name the client will GO to, which may be "" (the default). */
    c->meta_export = strdup (export);
    if (c->meta_export == NULL)
      c->meta = 0;
  }
  return 0;
}

/* ---- BLOCK_STATUS ---- */

static void
send_chunk (struct conn *c, struct request *req, uint32_t id,
            const struct image_extents *e, bool done)
{
  uint64_t end = req->offset + req->count;
  bool one = req->flags & NBD_CMD_FLAG_REQ_ONE;
  struct out_msg *m = conn_msg_new (req);
  uint8_t *desc, *p;
  size_t n = 0;

  if (m == NULL || (desc = malloc (8 * (e->nr ? e->nr : 1))) == NULL) {
    if (m)
      conn_msg_free (m);
    conn_close (c, "out of memory");
    return;
  }
  /* Descriptors stay inside the request, each under 4 GiB. */
  for (size_t i = 0; i < e->nr; i++) {
    uint64_t off = e->ext[i].offset, len = e->ext[i].length;
    if (off >= end)
      break;
    if (len > end - off)
      len = end - off;
    if (len > UINT32_MAX - 511)
      len = (UINT32_MAX - 511) & ~UINT64_C (511);
    put32 (put32 (desc + 8 * n, (uint32_t) len), e->ext[i].flags);
    n++;
    if (one || len < e->ext[i].length)
      break;
  }
  if (n == 0) {
    /* Nothing known: status 0 is always a safe answer. */
    put32 (put32 (desc, req->count), 0);
    n = 1;
  }
  m->owned = desc;
  m->data = desc;
  m->data_len = 8 * n;
  p = put32 (m->hdr, NBD_STRUCTURED_REPLY_MAGIC);
  p = put16 (p, done ? NBD_REPLY_FLAG_DONE : 0);
  p = put16 (p, NBD_REPLY_TYPE_BLOCK_STATUS);
  p = put64 (p, req->cookie);
  p = put32 (p, (uint32_t) (4 + 8 * n));
  p = put32 (p, id);
  m->hdr_len = (size_t) (p - m->hdr);
  conn_queue (c, m);
}

static void
extents_done (struct image_io *io, int err)
{
  struct request *req = io->opaque;
  struct conn *c = req->conn;

  if (!c->closed) {
    if (err)
      transmission_error_reply (c, req, req->cookie, err);
    else
      send_chunk (c, req, BASE_ID, &req->extents, true);
  }
  conn_request_put (req);
}

/* A provider's extents are at hand: its chunk goes out at once. */
static int
provider_chunk (struct conn *c, struct request *req, unsigned k, bool done)
{
  struct image_extents e = {
    .max = (req->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_DESCRIPTORS,
  };
  int r = server_meta (k)->extents (c->exp->handle, req->offset, req->count, &e);

  if (r == 0)
    send_chunk (c, req, provider_id (k), &e, done);
  image_extents_free (&e);
  return r;
}

void
block_status_start (struct request *req)
{
  struct conn *c = req->conn;
  struct image_io *io = &req->breq.io;
  bool base = c->meta & META_BASE_ALLOCATION;
  unsigned n = server_meta_count (), last = n;

  for (unsigned k = 0; k < n; k++)
    if (c->meta & META_PROVIDER (k))
      last = k;
  for (unsigned k = 0; k < n; k++) {
    if (!(c->meta & META_PROVIDER (k)))
      continue;
    if (provider_chunk (c, req, k, !base && k == last) == -1) {
      transmission_error_reply (c, req, req->cookie, ENOMEM);
      conn_request_put (req);
      return;
    }
  }
  if (!base) {
    conn_request_put (req);
    return;
  }
  blk_req_init (&req->breq);
  io->cmd = IMAGE_EXTENTS;
  io->offset = req->offset;
  io->count = req->count;
  req->extents.max = (req->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_DESCRIPTORS;
  io->extents = &req->extents;
  io->done = extents_done;
  io->opaque = req;
  blk_submit (c->exp->blk, &req->breq);
}
