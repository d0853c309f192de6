/* SPDX-License-Identifier: MIT */
/* Metadata contexts: negotiation (LIST_META_CONTEXT and
 * SET_META_CONTEXT) and BLOCK_STATUS replies.
 *
 * Contexts served:
 *   base:allocation           holes and zeroes, from the image (NBD spec)
 *   qemu:dirty-bitmap:EXPORT  the export's live dirty bitmap, bit 0 =
 *                             dirty (QEMU's definition), so QEMU-based
 *                             backup tools can read it
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

#define MAX_DESCRIPTORS (1u << 16)

enum { CTX_BASE, CTX_DIRTY, NR_CONTEXTS };

static const uint32_t ctx_bit[NR_CONTEXTS] = { META_BASE_ALLOCATION, META_DIRTY_BITMAP };
static const uint32_t ctx_id[NR_CONTEXTS] = { 1, 2 };

static void
ctx_name (int k, const char *export, char *buf, size_t len)
{
  if (k == CTX_BASE)
    snprintf (buf, len, "base:allocation");
  else
    snprintf (buf, len, "qemu:dirty-bitmap:%s", export);
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

/* The HA peer's heartbeat lists "mirrord:" and reads our state in the
 * name of the one context it gets back (LIST only: it is not a
 * context that BLOCK_STATUS can serve). */
static void
list_peer_state (struct conn *c, uint32_t option, struct export *e,
                 const uint8_t *q, uint32_t nq)
{
  char name[NBD_MAX_STRING];
  size_t n = strlen ("mirrord:peer-state:");
  bool asked = false;

  for (uint32_t i = 0, off = 0; i < nq; i++) {
    uint32_t ql = get32 (q + off);
    asked |= (ql == 8 && memcmp (q + off + 4, "mirrord:", 8) == 0)
      || (ql == n && memcmp (q + off + 4, "mirrord:peer-state:", n) == 0);
    off += 4 + ql;
  }
  memcpy (name, "mirrord:peer-state:", n);
  if (asked && export_peer_state (e, name + n, sizeof name - n) == 0)
    context_reply (c, option, 0, name);
}

int
block_status_list_contexts (struct conn *c, uint32_t option, const char *export,
                            const uint8_t *q, uint32_t nq, uint32_t len)
{
  bool list = option == NBD_OPT_LIST_META_CONTEXT;
  struct export *e = export_lookup_for_client (export);
  char names[NR_CONTEXTS][NBD_MAX_STRING + 32];
  uint32_t picked = 0;

  if (!list) {
    /* SET replaces the selection even when it fails. */
    c->meta = 0;
    free (c->meta_export);
    c->meta_export = NULL;
  }
  if (e == NULL || check_queries (q, nq, len) == -1)
    return -1;
  for (int k = 0; k < NR_CONTEXTS; k++)
    ctx_name (k, e->spec.name, names[k], sizeof names[k]);
  if (list && nq == 0)
    picked = META_BASE_ALLOCATION | META_DIRTY_BITMAP;
  if (e->bitmap == NULL)
    picked &= ~META_DIRTY_BITMAP;   /* bitmap=false: nothing to offer */
  for (uint32_t i = 0, off = 0; i < nq; i++) {
    uint32_t ql = get32 (q + off);
    for (int k = 0; k < NR_CONTEXTS; k++)
      if (matches (names[k], q + off + 4, ql, list)
          && (k != CTX_DIRTY || e->bitmap))
        picked |= ctx_bit[k];
    off += 4 + ql;
  }
  for (int k = 0; k < NR_CONTEXTS; k++)
    if (picked & ctx_bit[k])
      context_reply (c, option, ctx_id[k], names[k]);
  if (list)
    list_peer_state (c, option, e, q, nq);
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
      send_chunk (c, req, ctx_id[CTX_BASE], &req->extents, true);
  }
  conn_request_put (req);
}

/* The dirty bitmap is in memory: its chunk goes out at once. */
static int
dirty_chunk (struct conn *c, struct request *req, bool done)
{
  struct image_extents e = {
    .max = (req->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_DESCRIPTORS,
  };
  int r = export_dirty_extents (c->exp, req->offset, req->count, &e);

  if (r == 0)
    send_chunk (c, req, ctx_id[CTX_DIRTY], &e, done);
  image_extents_free (&e);
  return r;
}

void
block_status_start (struct request *req)
{
  struct conn *c = req->conn;
  struct image_io *io = &req->xio.io;
  bool base = c->meta & META_BASE_ALLOCATION;

  if ((c->meta & META_DIRTY_BITMAP) && dirty_chunk (c, req, !base) == -1) {
    transmission_error_reply (c, req, req->cookie, ENOMEM);
    conn_request_put (req);
    return;
  }
  if (!base) {
    conn_request_put (req);
    return;
  }
  memset (&req->xio, 0, sizeof req->xio);
  io->cmd = IMAGE_EXTENTS;
  io->offset = req->offset;
  io->count = req->count;
  req->extents.max = (req->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_DESCRIPTORS;
  io->extents = &req->extents;
  io->done = extents_done;
  io->opaque = req;
  export_submit (c->exp, &req->xio);
}
