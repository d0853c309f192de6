/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_TLS_WORKER_H
#define MIRRORD_TLS_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <libnbd.h>

#include "common/loop.h"

/* libnbd's TLS handshake, off the event loop.
 *
 * libnbd 1.14 does not return from nbd_aio_notify_*() while its TLS
 * handshake waits for the server: on GNUTLS_E_AGAIN its state machine
 * calls gnutls_handshake() again at once, and goes on until the
 * handshake ends or gnutls' handshake timeout (40 s) runs out.  The
 * calling thread spins for as long as the server takes to answer.
 * When that thread is mirrord's event loop and the server is the peer
 * mirrord, whose own loop spins the same way in a handshake with us,
 * neither server ever answers: both daemons stood still for exactly
 * 40 s (docs/ha.md, "The 40 s stall over TLS").
 *
 * So a TLS handle that has not finished its handshake goes to a worker
 * thread, which waits for its socket and notifies libnbd until the
 * handshake is over (or failed): the loop goes on serving (our server
 * answers the peer's handshake), and the worker's spin lasts a round
 * trip.  (nbd_aio_connect_uri() itself still runs on the loop: it
 * returns at the first wait, before the server could have answered
 * STARTTLS.)
 *
 * tls_worker_notify: nbd_aio_notify_read/write for EVENTS on H.  Returns -1 (the call failed: tls_worker_error()),
 *   0 (done), or 1: H is with a worker (or already was); make no
 *   libnbd call on H until CB (OPAQUE, 0) runs from LOOP, when the call
 *   on H returns the worker's result.
 * tls_worker_busy: H is with a worker now.
 * tls_worker_error, tls_worker_errno: why the last call on H failed
 *   (the worker's error while its result is delivered, else libnbd's
 *   for this thread).
 * tls_worker_abort: ends the handshake of a worker's H soon (its socket
 *   is shut down); the result comes back as usual.
 * tls_worker_close: nbd_close (H) now, or, while a worker has it, once
 *   the worker is done (its socket is shut down so that it ends soon);
 *   CB is not called then.
 */
int tls_worker_notify (struct loop *loop, struct nbd_handle *h,
                       uint32_t events, loop_fd_cb cb, void *opaque);
bool tls_worker_busy (struct nbd_handle *h);
void tls_worker_abort (struct nbd_handle *h);
const char *tls_worker_error (struct nbd_handle *h);
int tls_worker_errno (struct nbd_handle *h);
void tls_worker_close (struct nbd_handle *h);

#endif
