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

static void
enter_transmission (struct conn *c, struct export *e)
{
  export_ref (e);
  c->exp = e;
  export_attach (e, &c->client);
  if (c->meta_export == NULL || strcmp (c->meta_export, e->spec.name) != 0)
    c->meta = 0;
  c->eflags = transmission_flags (c, e);
  c->phase = PHASE_REQUEST_HDR;
  c->handshake_deadline_ns = 0;
  log_debug ("%s: export %s: transmission (structured %d, meta %#x)",
             c->peer, e->spec.name, c->structured, c->meta);
}

/* A replication claim in the export name (the HA peer): accepted, or
 * refused with a policy error.  Returns -1 when refused. */
static int
accept_peer (struct conn *c, struct export *e, const char *name)
{
  char why[512];
  int r = export_accept_peer (e, name, c->client.tls_username, why, sizeof why);

  c->client.peer = r == 1;
  if (r == -1) {
    log_warn ("%s: %s", c->peer, why);
    reply_error (c, NBD_REP_ERR_POLICY, "%s", why);
  }
  return r == -1 ? -1 : 0;
}

static void
opt_export_name (struct conn *c, const uint8_t *data, uint32_t len)
{
  char *name = get_string (data, len), why[512];
  struct export *e = name ? export_lookup_for_client (name) : NULL;
  struct out_msg *m;
  uint8_t *p;
  int r;

  if (e == NULL) {
    /* EXPORT_NAME has no error reply: closing is the answer. */
    log_info ("%s: unknown export '%s' requested", c->peer, name ? name : "?");
    free (name);
    conn_want_close (c);
    return;
  }
  r = export_accept_peer (e, name, c->client.tls_username, why, sizeof why);
  free (name);
  if (r == -1) {
    log_warn ("%s: %s", c->peer, why);
    conn_want_close (c);       /* no error reply exists for EXPORT_NAME */
    return;
  }
  c->client.peer = r == 1;
  enter_transmission (c, e);
  m = conn_msg_new (NULL);
  if (m == NULL) {
    conn_close (c, "out of memory");
    return;
  }
  p = put64 (m->hdr, export_size (e));
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
send_info_export (struct conn *c, struct export *e)
{
  uint8_t buf[12], *p = buf;

  p = put16 (p, NBD_INFO_EXPORT);
  p = put64 (p, export_size (e));
  p = put16 (p, transmission_flags (c, e));
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

static void
opt_info_go (struct conn *c, const uint8_t *data, uint32_t len)
{
  uint32_t namelen;
  uint16_t nreq;
  char *name;
  struct export *e;
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
  e = export_lookup_for_client (name);
  if (e == NULL) {
    reply_error (c, NBD_REP_ERR_UNKNOWN, "export '%s' not found", name);
    free (name);
    return;
  }
  if (accept_peer (c, e, name) == -1) {
    free (name);
    return;
  }
  free (name);
  for (uint16_t i = 0; i < nreq; i++) {
    uint16_t t = get16 (data + 4 + namelen + 2 + 2u * i);
    want_name |= t == NBD_INFO_NAME;
    want_desc |= t == NBD_INFO_DESCRIPTION;
  }
  send_info_export (c, e);
  send_info_block_size (c);
  if (want_name)
    send_info_string (c, NBD_INFO_NAME, e->spec.name);
  if (want_desc) {
    char desc[EXPORT_DESCRIPTION_MAX];
    export_describe (e, desc, sizeof desc);
    send_info_string (c, NBD_INFO_DESCRIPTION, desc);
  }
  if (c->closed)
    return;
  reply (c, NBD_REP_ACK, NULL, 0);
  if (c->option == NBD_OPT_GO)
    enter_transmission (c, e);
}

static void
opt_list (struct conn *c, uint32_t len)
{
  if (len != 0) {
    reply_error (c, NBD_REP_ERR_INVALID, "LIST takes no data");
    return;
  }
  for (struct export *e = export_first (); e && !c->closed; e = export_next (e)) {
    size_t n = strlen (e->spec.name);
    uint8_t *buf = malloc (4 + n);
    if (buf == NULL) {
      conn_close (c, "out of memory");
      return;
    }
    put32 (buf, (uint32_t) n);
    memcpy (buf + 4, e->spec.name, n);
    reply (c, NBD_REP_SERVER, buf, 4 + n);
    free (buf);
  }
  reply (c, NBD_REP_ACK, NULL, 0);
}

static void
opt_meta_context (struct conn *c, const uint8_t *data, uint32_t len)
{
  uint32_t namelen, nq;
  char *name;

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
  if (export_lookup_for_client (name) == NULL) {
    reply_error (c, NBD_REP_ERR_UNKNOWN, "export '%s' not found", name);
    free (name);
    return;
  }
  if (block_status_list_contexts (c, c->option, name, data + 8 + namelen, nq,
                                  len - 8 - namelen) == -1)
    reply_error (c, NBD_REP_ERR_INVALID, "malformed meta context query");
  else
    reply (c, NBD_REP_ACK, NULL, 0);
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
