/* SPDX-License-Identifier: MIT */
/* TLS-PSK sessions on NBD connections (tls.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "common/error.h"
#include "common/log.h"
#include "common/psk.h"
#include "conn.h"
#include "server-internal.h"
#include "tls.h"

/* What qemu-nbd, nbdkit and libnbd accept for PSK, without the TLS
 * versions the NBD spec says not to offer by default. */
#define PRIORITY \
  "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:+PSK"
/* Where the CPU has AES instructions, the server picks AES-GCM, about
 * 15x faster than ChaCha20 there.  Left to the client, TLS 1.3 with a
 * PSK (bound to SHA-256, which rules out AES-256-GCM-SHA384, the
 * clients' first choice) lands on ChaCha20-Poly1305: gnutls' second. */
#define PRIORITY_AES PRIORITY \
  ":%SERVER_PRECEDENCE:-CHACHA20-POLY1305:+CHACHA20-POLY1305"

/* The largest record payload: one staged record per send. */
#define TLS_RECORD 16384

struct tls_session {
  gnutls_session_t s;
  char *username;               /* authenticated PSK identity */
  bool failed;                  /* fatal error: no close_notify */
  size_t out_len;               /* staged, not yet sent */
  uint8_t out[TLS_RECORD];
};

static struct {
  const struct psk_keys *keys;
  gnutls_psk_server_credentials_t cred;
  gnutls_priority_t prio;
} creds;

/* ---- Credentials ---- */

/* A client-chosen name, made safe for a log line. */
static void
printable (char *dst, size_t len, const char *src)
{
  size_t i;

  for (i = 0; i + 1 < len && src[i]; i++)
    dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
  dst[i] = '\0';
}

/* gnutls asks for the key of the identity the client presented. */
static int
lookup_key (gnutls_session_t s, const char *username, gnutls_datum_t *key)
{
  struct conn *c = gnutls_session_get_ptr (s);
  const struct psk_key *k = psk_lookup (creds.keys, username);
  char name[64];

  if (k == NULL) {
    printable (name, sizeof name, username);
    log_ratelimit (LOG_WARNING, "%s: TLS-PSK: unknown username '%s'", c->peer, name);
    return -1;
  }
  key->data = gnutls_malloc (k->len);
  if (key->data == NULL)
    return -1;
  memcpy (key->data, k->key, k->len);
  key->size = (unsigned) k->len;
  return 0;
}

static const char *
priority (void)
{
#if defined (__x86_64__) || defined (__i386__)
  if (__builtin_cpu_supports ("aes"))
    return PRIORITY_AES;
#endif
  return PRIORITY;
}

int
tls_server_init (const struct psk_keys *keys)
{
  const char *where;
  int r;

  r = gnutls_psk_allocate_server_credentials (&creds.cred);
  if (r < 0)
    return error_set (0, "gnutls credentials: %s", gnutls_strerror (r));
  gnutls_psk_set_server_credentials_function (creds.cred, lookup_key);
  /* DHE-PSK under TLS 1.2 needs a group; 1.3 negotiates its own. */
  r = gnutls_psk_set_server_known_dh_params (creds.cred,
                                              GNUTLS_SEC_PARAM_MEDIUM);
  if (r >= 0)
    r = gnutls_priority_init (&creds.prio, priority (), &where);
  if (r < 0) {
    gnutls_psk_free_server_credentials (creds.cred);
    creds.cred = NULL;
    return error_set (0, "gnutls: %s", gnutls_strerror (r));
  }
  creds.keys = keys;
  return 0;
}

void
tls_server_free (void)
{
  if (creds.cred == NULL)
    return;
  gnutls_priority_deinit (creds.prio);
  gnutls_psk_free_server_credentials (creds.cred);
  creds.cred = NULL;
  creds.keys = NULL;
}

bool
tls_server_enabled (void)
{
  return creds.keys != NULL;
}

/* ---- Handshake ---- */

int
tls_start (struct conn *c)
{
  struct tls_session *t = calloc (1, sizeof *t);
  int r;

  if (t == NULL)
    return error_set (ENOMEM, "TLS session");
  r = gnutls_init (&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (r < 0) {
    free (t);
    return error_set (0, "gnutls_init: %s", gnutls_strerror (r));
  }
  c->tls = t;                   /* from here tls_end() frees it */
  r = gnutls_priority_set (t->s, creds.prio);
  if (r >= 0)
    r = gnutls_credentials_set (t->s, GNUTLS_CRD_PSK, creds.cred);
  if (r < 0)
    return error_set (0, "gnutls: %s", gnutls_strerror (r));
  gnutls_session_set_ptr (t->s, c);
  gnutls_transport_set_int (t->s, c->fd);
  /* The negotiation timeout (server.c) covers the handshake too. */
  gnutls_handshake_set_timeout (t->s, 0);
  return 0;
}

static void
handshake_done (struct conn *c)
{
  struct tls_session *t = c->tls;
  const char *user = gnutls_psk_server_get_username (t->s);
  char *desc;

  t->username = strdup (user ? user : "");
  if (t->username == NULL) {
    conn_close (c, "out of memory");
    return;
  }
  c->client.tls_username = t->username;
  c->tls_up = true;
  c->phase = PHASE_OPTION_HDR;
  if (log_debug_enabled ()) {
    desc = gnutls_session_get_desc (t->s);
    log_debug ("%s: TLS up, PSK user '%s', %s", c->peer, t->username,
               desc ? desc : "");
    gnutls_free (desc);
  }
  conn_update_events (c);
}

void
tls_handshake (struct conn *c)
{
  struct tls_session *t = c->tls;
  int r = gnutls_handshake (t->s);

  if (r == GNUTLS_E_SUCCESS) {
    handshake_done (c);
    return;
  }
  if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
    conn_update_events (c);
    return;
  }
  /* Too late to go on without TLS (the spec): close.  The alert tells
   * the client why; it is best effort on a non-blocking socket. */
  t->failed = true;
  gnutls_alert_send_appropriate (t->s, r);
  log_ratelimit (LOG_WARNING, "%s: TLS handshake failed: %s", c->peer,
                 gnutls_strerror (r));
  conn_close (c, NULL);
}

bool
tls_wants_write (const struct conn *c)
{
  return c->tls && gnutls_record_get_direction (c->tls->s) == 1;
}

/* ---- Records ---- */

ssize_t
tls_recv (struct conn *c, void *buf, size_t len)
{
  struct tls_session *t = c->tls;
  ssize_t r = gnutls_record_recv (t->s, buf, len);

  if (r >= 0)
    return r;
  switch (r) {
  case GNUTLS_E_AGAIN:
    /* A TLS 1.3 key update may have to answer before reading on. */
    c->tls_read_wants_write = gnutls_record_get_direction (t->s) == 1;
    errno = EAGAIN;
    return -1;
  case GNUTLS_E_INTERRUPTED:
    errno = EINTR;
    return -1;
  case GNUTLS_E_PREMATURE_TERMINATION:
    /* Hung up without close_notify.  NBD frames every request, so a
     * truncated stream cannot pass for a complete one: an EOF. */
    return 0;
  }
  t->failed = true;
  return error_set (0, "TLS: %s", r == GNUTLS_E_REHANDSHAKE
                    ? "renegotiation is not supported"
                    : gnutls_strerror ((int) r));
}

bool
tls_pending (const struct conn *c)
{
  return c->tls_up && gnutls_record_check_pending (c->tls->s) > 0;
}

bool
tls_output_pending (const struct conn *c)
{
  return c->tls && c->tls->out_len > 0;
}

/* Moves queued replies into the record buffer, up to one record. */
static void
stage (struct conn *c)
{
  struct tls_session *t = c->tls;

  while (t->out_len < TLS_RECORD && !list_empty (&c->outq)) {
    struct out_msg *m = list_entry (c->outq.next, struct out_msg, node);
    size_t room = TLS_RECORD - t->out_len, n;
    const uint8_t *src;

    if (m->sent < m->hdr_len) {
      src = m->hdr + m->sent;
      n = m->hdr_len - m->sent;
    }
    else {
      src = (const uint8_t *) m->data + (m->sent - m->hdr_len);
      n = m->data_len - (m->sent - m->hdr_len);
    }
    n = n < room ? n : room;
    memcpy (t->out + t->out_len, src, n);
    t->out_len += n;            /* before consuming: see check_done */
    conn_consume (c, n);
  }
}

bool
tls_flush (struct conn *c)
{
  struct tls_session *t = c->tls;

  while (!c->closed) {
    ssize_t r;

    if (t->out_len == 0)
      stage (c);
    if (t->out_len == 0)
      return true;
    /* After GNUTLS_E_AGAIN, gnutls wants the same buffer again: the
     * staged bytes stay put until sent. */
    r = gnutls_record_send (t->s, t->out, t->out_len);
    if (r == GNUTLS_E_INTERRUPTED)
      continue;
    if (r == GNUTLS_E_AGAIN) {
      c->write_blocked = true;
      conn_update_events (c);
      return false;
    }
    if (r < 0) {
      t->failed = true;
      log_ratelimit (LOG_INFO, "%s: TLS send: %s", c->peer,
                     gnutls_strerror ((int) r));
      conn_close (c, NULL);
      return false;
    }
    memmove (t->out, t->out + r, t->out_len - (size_t) r);
    t->out_len -= (size_t) r;
  }
  return false;
}

void
tls_end (struct conn *c)
{
  struct tls_session *t = c->tls;

  if (t == NULL)
    return;
  if (c->tls_up && !t->failed)
    gnutls_bye (t->s, GNUTLS_SHUT_WR);  /* non-blocking: best effort */
  gnutls_deinit (t->s);
  c->client.tls_username = NULL;
  free (t->username);
  free (t);
  c->tls = NULL;
  c->tls_up = false;
}
