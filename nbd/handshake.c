/* SPDX-License-Identifier: MIT */
/* Fixed-newstyle negotiation: client flags, then options until GO or
 * EXPORT_NAME enters transmission (or ABORT, or a hang-up).
 *
 * Every option is answered with a reply or, where the protocol gives
 * no way to reply (EXPORT_NAME of an unknown export), by closing.  A
 * bad option header magic means the stream is lost: we close.  A bad
 * option payload gets ERR_INVALID and negotiation goes on.
 *
 * TLS.  A TCP connection to a server with keys is in the spec's
 * FORCEDTLS mode: until STARTTLS has succeeded, every option but
 * STARTTLS and ABORT gets ERR_TLS_REQD, and EXPORT_NAME (which cannot
 * be refused) closes.  Unix-socket connections are local, so TLS is
 * theirs to ask for.  STARTTLS forgets what was negotiated before it,
 * as the spec requires.
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "conn.h"
#include "server-internal.h"
#include "tls.h"

static uint8_t *
in_ptr (struct conn *c)
{
  return c->in + c->in_start;
}

static size_t
in_avail (const struct conn *c)
{
  return c->in_end - c->in_start;
}

/* Queues an option reply; DATA is copied. */
static void
reply (struct conn *c, uint32_t type, const void *data, size_t len)
{
  struct out_msg *m = conn_msg_new (NULL);
  uint8_t *p;

  if (m == NULL || (len && (m->owned = malloc (len)) == NULL)) {
    if (m)
      conn_msg_free (m);
    conn_close (c, "out of memory");
    return;
  }
  p = put64 (m->hdr, NBD_REP_MAGIC);
  p = put32 (p, c->option);
  p = put32 (p, type);
  p = put32 (p, (uint32_t) len);
  m->hdr_len = (size_t) (p - m->hdr);
  if (len) {
    memcpy (m->owned, data, len);
    m->data = m->owned;
    m->data_len = len;
  }
  conn_queue (c, m);
}

__attribute__ ((format (printf, 3, 4)))
static void
reply_error (struct conn *c, uint32_t type, const char *fmt, ...)
{
  char msg[256];
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (n < 0)
    n = 0;
  if ((size_t) n >= sizeof msg)
    n = sizeof msg - 1;
  log_debug ("%s: option %s refused: %s", c->peer,
             proto_opt_name (c->option), msg);
  reply (c, type, msg, (size_t) n);
}

/* An NBD string: at most 4096 bytes, no NUL.  Copies it to a C
 * string, or returns NULL. */
static char *
get_string (const uint8_t *p, uint32_t len)
{
  char *s;

  if (len > NBD_MAX_STRING || memchr (p, '\0', len))
    return NULL;
  s = malloc (len + 1);
  if (s) {
    memcpy (s, p, len);
    s[len] = '\0';
  }
  return s;
}

/* Asks the backend what NAME is for this client: a new answer (give it
 * back with put_export()), or NULL with *R saying why not (-1: out of
 * memory, the connection is closed). */
static struct server_export *
lookup (struct conn *c, const char *name, bool meta, int *r, char *why,
        size_t len)
{
  struct server_export *x = calloc (1, sizeof *x);

  why[0] = '\0';
  if (x == NULL) {
    conn_close (c, "out of memory");
    *r = -1;
    return NULL;
  }
  *r = server_backend ()->lookup (name, c->client.tls_username, meta, x, why,
                                  len);
  if (*r == SERVER_LOOKUP_OK)
    return x;
  free (x);
  return NULL;
}

static void
put_export (struct server_export *x)
{
  server_backend ()->release (x->handle);
  free (x);
}

/* Takes X: the connection serves it until it is freed. */
static void
enter_transmission (struct conn *c, struct server_export *x)
{
  c->exp = x;
  server_backend ()->attach (x->handle, &c->client);
  if (c->meta_export == NULL || strcmp (c->meta_export, x->name) != 0)
    c->meta = 0;
  c->eflags = transmission_flags (c, x->blk);
  c->phase = PHASE_REQUEST_HDR;
  c->handshake_deadline_ns = 0;
  log_debug ("%s: export %s: transmission (structured %d, meta %#x)",
             c->peer, x->name, c->structured, c->meta);
}

static void
opt_export_name (struct conn *c, const uint8_t *data, uint32_t len)
{
  char *name = get_string (data, len), why[512];
  struct server_export *x;
  struct out_msg *m;
  uint8_t *p;
  int r = SERVER_LOOKUP_UNKNOWN;

  x = name ? lookup (c, name, false, &r, why, sizeof why) : NULL;
  if (x == NULL) {
    /* EXPORT_NAME has no error reply: closing is the answer. */
    if (r == SERVER_LOOKUP_UNKNOWN)
      log_info ("%s: unknown export '%s' requested", c->peer, name ? name : "?");
    else if (r == SERVER_LOOKUP_REFUSED)
      log_warn ("%s: %s", c->peer, why);
    free (name);
    if (!c->closed)             /* out of memory closed it already */
      conn_want_close (c);
    return;
  }
  free (name);
  enter_transmission (c, x);
  m = conn_msg_new (NULL);
  if (m == NULL) {
    conn_close (c, "out of memory");
    return;
  }
  p = put64 (m->hdr, blk_size (x->blk));
  p = put16 (p, c->eflags);
  m->hdr_len = (size_t) (p - m->hdr);
  if (!(c->client_flags & NBD_FLAG_C_NO_ZEROES)) {
    m->owned = calloc (1, 124);
    m->data = m->owned;
    m->data_len = m->owned ? 124 : 0;
  }
  conn_queue (c, m);
}

static void
send_info_export (struct conn *c, struct server_export *x)
{
  uint8_t buf[12], *p = buf;

  p = put16 (p, NBD_INFO_EXPORT);
  p = put64 (p, blk_size (x->blk));
  p = put16 (p, transmission_flags (c, x->blk));
  reply (c, NBD_REP_INFO, buf, (size_t) (p - buf));
}

static void
send_info_block_size (struct conn *c)
{
  uint8_t buf[14], *p = buf;

  p = put16 (p, NBD_INFO_BLOCK_SIZE);
  p = put32 (p, 1);             /* any alignment is served correctly */
  p = put32 (p, NBD_PREFERRED_BLOCK);
  p = put32 (p, NBD_MAX_PAYLOAD);
  reply (c, NBD_REP_INFO, buf, (size_t) (p - buf));
}

static void
send_info_string (struct conn *c, uint16_t type, const char *s)
{
  size_t len = strlen (s);
  uint8_t *buf = malloc (2 + len);

  if (buf == NULL) {
    conn_close (c, "out of memory");
    return;
  }
  put16 (buf, type);
  memcpy (buf + 2, s, len);
  reply (c, NBD_REP_INFO, buf, 2 + len);
  free (buf);
}

/* Looks NAME up for INFO, GO or a meta-context option, answering the
 * client when it is unknown or refused. */
static struct server_export *
lookup_or_refuse (struct conn *c, const char *name, bool meta)
{
  char why[512];
  int r;
  struct server_export *x = lookup (c, name, meta, &r, why, sizeof why);

  if (r == SERVER_LOOKUP_UNKNOWN)
    reply_error (c, NBD_REP_ERR_UNKNOWN, "export '%s' not found", name);
  else if (r == SERVER_LOOKUP_REFUSED) {
    log_warn ("%s: %s", c->peer, why);
    reply_error (c, NBD_REP_ERR_POLICY, "%s", why);
  }
  return x;
}

static void
opt_info_go (struct conn *c, const uint8_t *data, uint32_t len)
{
  uint32_t namelen;
  uint16_t nreq;
  char *name;
  struct server_export *x;
  bool want_name = false, want_desc = false;

  if (len < 6 || (namelen = get32 (data)) > len - 6
      || (nreq = get16 (data + 4 + namelen), len != 6 + namelen + 2u * nreq)) {
    reply_error (c, NBD_REP_ERR_INVALID, "malformed %s request",
                 proto_opt_name (c->option));
    return;
  }
  name = get_string (data + 4, namelen);
  if (name == NULL) {
    reply_error (c, NBD_REP_ERR_INVALID, "invalid export name");
    return;
  }
  x = lookup_or_refuse (c, name, false);
  free (name);
  if (x == NULL)
    return;
  for (uint16_t i = 0; i < nreq; i++) {
    uint16_t t = get16 (data + 4 + namelen + 2 + 2u * i);
    want_name |= t == NBD_INFO_NAME;
    want_desc |= t == NBD_INFO_DESCRIPTION;
  }
  send_info_export (c, x);
  send_info_block_size (c);
  if (want_name)
    send_info_string (c, NBD_INFO_NAME, x->name);
  if (want_desc)
    send_info_string (c, NBD_INFO_DESCRIPTION, x->description);
  if (!c->closed)
    reply (c, NBD_REP_ACK, NULL, 0);
  if (!c->closed && c->option == NBD_OPT_GO)
    enter_transmission (c, x);
  else
    put_export (x);
}

static void
list_one (void *arg, const char *name)
{
  struct conn *c = arg;
  size_t n = strlen (name);
  uint8_t *buf;

  if (c->closed)
    return;
  if ((buf = malloc (4 + n)) == NULL) {
    conn_close (c, "out of memory");
    return;
  }
  put32 (buf, (uint32_t) n);
  memcpy (buf + 4, name, n);
  reply (c, NBD_REP_SERVER, buf, 4 + n);
  free (buf);
}

static void
opt_list (struct conn *c, uint32_t len)
{
  if (len != 0) {
    reply_error (c, NBD_REP_ERR_INVALID, "LIST takes no data");
    return;
  }
  server_backend ()->list (list_one, c);
  if (!c->closed)
    reply (c, NBD_REP_ACK, NULL, 0);
}

static void
opt_meta_context (struct conn *c, const uint8_t *data, uint32_t len)
{
  uint32_t namelen, nq;
  char *name;
  struct server_export *x;

  if (c->option == NBD_OPT_SET_META_CONTEXT && !c->structured) {
    reply_error (c, NBD_REP_ERR_INVALID,
                 "SET_META_CONTEXT needs structured replies first");
    return;
  }
  if (len < 8 || (namelen = get32 (data)) > len - 8) {
    reply_error (c, NBD_REP_ERR_INVALID, "malformed meta context request");
    return;
  }
  name = get_string (data + 4, namelen);
  if (name == NULL) {
    reply_error (c, NBD_REP_ERR_INVALID, "invalid export name");
    return;
  }
  nq = get32 (data + 4 + namelen);
  if ((x = lookup_or_refuse (c, name, true)) == NULL) {
    free (name);
    return;
  }
  if (block_status_list_contexts (c, c->option, name, x, data + 8 + namelen,
                                  nq, len - 8 - namelen) == -1)
    reply_error (c, NBD_REP_ERR_INVALID, "malformed meta context query");
  else
    reply (c, NBD_REP_ACK, NULL, 0);
  put_export (x);
  free (name);
}

static void
opt_starttls (struct conn *c, uint32_t len)
{
  if (!tls_server_enabled ()) {
    reply_error (c, NBD_REP_ERR_POLICY, "TLS is not configured on this server");
    return;
  }
  if (c->tls) {
    reply_error (c, NBD_REP_ERR_INVALID, "TLS is already active");
    return;
  }
  if (len != 0) {
    reply_error (c, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
    return;
  }
  /* Anything after STARTTLS belongs to the TLS session: plaintext
   * already here was sent before our reply, by a client that did not
   * wait for it, or injected by a man in the middle (CVE-2021-3716 in
   * nbdkit).  Never parse it. */
  if (c->in_start != c->in_end) {
    log_info ("%s: plaintext data after STARTTLS; closing", c->peer);
    conn_close (c, NULL);
    return;
  }
  reply (c, NBD_REP_ACK, NULL, 0);
  if (c->closed)
    return;
  c->structured = false;
  c->meta = 0;
  free (c->meta_export);
  c->meta_export = NULL;
  c->phase = PHASE_TLS_HANDSHAKE;
  if (tls_start (c) == -1) {
    log_err ("%s: %s", c->peer, error_get ());
    conn_close (c, NULL);
  }
}

/* FORCEDTLS: may this option run before TLS is up? */
static bool
tls_gate (struct conn *c)
{
  if (!c->tls_required || c->tls_up || c->option == NBD_OPT_STARTTLS
      || c->option == NBD_OPT_ABORT)
    return true;
  if (c->option == NBD_OPT_EXPORT_NAME) {
    log_info ("%s: EXPORT_NAME without TLS; closing (TLS is required)",
              c->peer);
    conn_want_close (c);
  }
  else
    reply_error (c, NBD_REP_ERR_TLS_REQD,
                 "TLS is required on TCP: send STARTTLS first");
  return false;
}

static void
process_option (struct conn *c, const uint8_t *data, uint32_t len)
{
  log_debug ("%s: option %s (%u bytes)", c->peer, proto_opt_name (c->option), len);
  if (!tls_gate (c))
    return;
  switch (c->option) {
  case NBD_OPT_EXPORT_NAME:
    opt_export_name (c, data, len);
    break;
  case NBD_OPT_GO:
  case NBD_OPT_INFO:
    opt_info_go (c, data, len);
    break;
  case NBD_OPT_LIST:
    opt_list (c, len);
    break;
  case NBD_OPT_ABORT:
    reply (c, NBD_REP_ACK, NULL, 0);
    conn_want_close (c);
    break;
  case NBD_OPT_STRUCTURED_REPLY:
    if (len != 0) {
      reply_error (c, NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
      break;
    }
    c->structured = true;
    reply (c, NBD_REP_ACK, NULL, 0);
    break;
  case NBD_OPT_LIST_META_CONTEXT:
  case NBD_OPT_SET_META_CONTEXT:
    opt_meta_context (c, data, len);
    break;
  case NBD_OPT_STARTTLS:
    opt_starttls (c, len);
    break;
  default:
    reply_error (c, NBD_REP_ERR_UNSUP, "option %u is not supported", c->option);
  }
}

bool
handshake_step (struct conn *c)
{
  size_t avail = in_avail (c);

  switch (c->phase) {
  case PHASE_CLIENT_FLAGS:
    if (avail < 4)
      return false;
    c->client_flags = get32 (in_ptr (c));
    c->in_start += 4;
    if (!(c->client_flags & NBD_FLAG_C_FIXED_NEWSTYLE)
        || (c->client_flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))) {
      conn_close (c, "client flags not supported (fixed newstyle only)");
      return false;
    }
    c->phase = PHASE_OPTION_HDR;
    return true;

  case PHASE_OPTION_HDR:
    if (avail < 16)
      return false;
    if (get64 (in_ptr (c)) != NBD_IHAVEOPT) {
      conn_close (c, "bad option magic");
      return false;
    }
    c->option = get32 (in_ptr (c) + 8);
    c->option_len = get32 (in_ptr (c) + 12);
    c->in_start += 16;
    if (++c->nr_options > MAX_OPTIONS) {
      conn_close (c, "too many options");
      return false;
    }
    if (c->option_len > MAX_OPTION_LEN) {
      c->discard_left = c->option_len;
      c->phase = PHASE_OPTION_DISCARD;
    }
    else
      c->phase = PHASE_OPTION_DATA;
    return true;

  case PHASE_OPTION_DISCARD: {
    size_t n = avail < c->discard_left ? avail : (size_t) c->discard_left;
    c->in_start += n;
    c->discard_left -= n;
    if (c->discard_left > 0)
      return false;
    c->phase = PHASE_OPTION_HDR;
    if (c->option == NBD_OPT_EXPORT_NAME) {
      conn_close (c, "export name too long");
      return false;
    }
    if (!tls_gate (c))
      return !c->closed && c->phase != PHASE_CLOSING;
    reply_error (c, NBD_REP_ERR_TOO_BIG, "option data over %u bytes",
                 MAX_OPTION_LEN);
    return true;
  }

  case PHASE_OPTION_DATA: {
    uint8_t *data = in_ptr (c);
    uint32_t len = c->option_len;
    if (avail < len)
      return false;
    c->in_start += len;
    c->phase = PHASE_OPTION_HDR;
    /* The data stays valid: nothing refills the buffer until we
     * return to the receive path. */
    process_option (c, data, len);
    return !c->closed && c->phase != PHASE_CLOSING
      && c->phase != PHASE_TLS_HANDSHAKE;
  }

  default:
    return false;
  }
}
