/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_NBD_SERVER_H
#define MIRRORD_NBD_SERVER_H

#include <stdbool.h>

#include "common/loop.h"
#include "backend.h"

/* The NBD server: listening sockets and the connections they accept.
 *
 * Each connection is a state machine driven by the loop (see conn.h):
 * fixed-newstyle negotiation, then transmission with many requests in
 * flight, answered as they complete.  The server only knows exports
 * through the backend its owner passes to server_init() (backend.h):
 * a lookup callback yielding block stacks (image/block.h), and
 * providers of extra meta contexts.
 */

/* Beyond a limit, a new connection is accepted and closed at once
 * (logged, rate-limited).  0 means no limit; the TCP one is capped at
 * half the descriptor limit whatever it says (admission.h). */
struct server_limits {
  unsigned max_unix;            /* unix-socket connections */
  unsigned max_tcp;             /* TCP connections */
  unsigned max_per_host;        /* TCP connections from one address */
  unsigned handshake_timeout_s; /* negotiation (TLS included) must
                                   finish within it */
};

/* BACKEND and the providers in META (NR_META of them, at most
 * SERVER_MAX_META_PROVIDERS) must outlive the server. */
int server_init (struct loop *loop, const struct server_limits *limits,
                 const struct server_backend *backend,
                 const struct server_meta_provider *const *meta,
                 unsigned nr_meta);
/* TLS-PSK with KEYS (which must outlive the server): every TCP
 * connection must then start TLS; unix-socket ones may. */
struct psk_keys;
int server_enable_tls (const struct psk_keys *keys);
/* Listens on a unix socket (replacing a stale one) with MODE. */
int server_listen_unix (const char *path, unsigned mode);
/* Listens on HOST:PORT ("[::1]:10809" for IPv6). */
int server_listen_tcp (const char *hostport);
/* True if HOST:PORT names only loopback addresses. */
bool server_addr_is_loopback (const char *hostport);
/* Stops accepting; removes unix socket files. */
void server_stop_listening (void);
/* Asks every connection to finish in-flight requests and close. */
void server_shutdown_connections (void);
unsigned server_connection_count (void);
/* Serves FD, a connected stream socket, as if a listener had accepted
 * it (a unix-socket listener if IS_UNIX); takes FD.  The fuzz targets
 * drive the server through one end of a socketpair. */
void server_add_connection (int fd, bool is_unix);
/* Connections not yet freed: a closed one lives until its last request
 * completes. */
unsigned server_connections_alive (void);
void server_free (void);

#endif
