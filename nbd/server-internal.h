/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_NBD_SERVER_INTERNAL_H
#define MIRRORD_NBD_SERVER_INTERNAL_H

#include "conn.h"

/* Between server.c (listeners, the set of connections) and conn.c. */
struct loop *server_loop (void);
/* The exports' owner (backend.h) and its meta-context providers. */
const struct server_backend *server_backend (void);
unsigned server_meta_count (void);
const struct server_meta_provider *server_meta (unsigned i);
/* C has output: flush it in the loop's prepare hook. */
void server_mark_flush (struct conn *c);
/* C stopped parsing at a limit: parse again from the loop. */
void server_kick (struct conn *c);
/* C closed: drop it from the server's lists. */
void server_forget (struct conn *c);
/* C's memory was freed (its last reference went). */
void server_conn_freed (void);

void conn_flush (struct conn *c);
void conn_on_events (void *opaque, uint32_t events);

#endif
