/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_NBD_TLS_H
#define MIRRORD_NBD_TLS_H

/* TLS-PSK for NBD connections (internal to nbd/), with gnutls.
 *
 * A connection starts in plaintext.  After NBD_OPT_STARTTLS is
 * acknowledged (handshake.c), tls_start() gives it a gnutls session;
 * once the ACK is on the wire, tls_handshake() runs the handshake on
 * the non-blocking socket, a step per loop event, never waiting.  When
 * it succeeds every byte goes through the session (c->tls_up):
 * tls_recv() for conn.c's receive path, tls_flush() for the reply
 * queue.  A failed handshake or a bad record closes that connection
 * only.
 *
 * Output.  gnutls has no writev: replies are staged into a buffer of
 * one TLS record (c->tls_out), which is sent as one record.  Staged
 * bytes are already gone from the reply queue, so a send that would
 * block is retried later with the very same buffer, as gnutls asks.
 *
 * Input.  gnutls decrypts whole records; what did not fit the buffer
 * we offered stays inside gnutls, where epoll cannot see it.
 * tls_pending() tells conn.c to come back from the loop for it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct conn;
struct psk_keys;

/* Server credentials looking usernames up in KEYS, which must outlive
 * the server.  Returns -1 with error_set() on failure. */
int tls_server_init (const struct psk_keys *keys);
void tls_server_free (void);
bool tls_server_enabled (void);

/* A session for C (server side).  -1 with error_set(). */
int tls_start (struct conn *c);
/* Advances the handshake.  On success the connection is back in
 * option negotiation, over TLS; on failure it is closed (logged with
 * the peer).  Otherwise it waits for the direction gnutls needs. */
void tls_handshake (struct conn *c);
/* True while the handshake waits to write rather than read. */
bool tls_wants_write (const struct conn *c);
/* Like recv(): bytes, 0 at the end of the stream, -1 with errno
 * EAGAIN/EINTR, or -1 with error_set() on a TLS error. */
ssize_t tls_recv (struct conn *c, void *buf, size_t len);
/* Sends the reply queue.  Returns true once all of it is sent; false
 * if the socket is full (c->write_blocked) or the connection closed. */
bool tls_flush (struct conn *c);
/* Bytes gnutls has decrypted and not yet handed over. */
bool tls_pending (const struct conn *c);
/* Staged output not yet sent. */
bool tls_output_pending (const struct conn *c);
/* Ends the session (close_notify, best effort) and frees it. */
void tls_end (struct conn *c);

#endif
