/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_HA_PEER_H
#define MIRRORD_HA_PEER_H

#include <stdint.h>

#include "common/loop.h"

/* One-shot NBD conversations with the peer mirrord, over libnbd's
 * asynchronous API inside the loop (no thread blocks on a dead peer;
 * each op has a deadline).
 *
 * probe: connects in negotiation mode and lists the meta contexts
 *   under "mirrord:" for the peer's export; the peer answers with one
 *   named "mirrord:peer-state:STATE", its view (generation.h).  This
 *   is the heartbeat: a peer that answers is alive.
 * fetch_bitmap: reads the peer export's dirty bitmap
 *   ("qemu:dirty-bitmap:NAME") through BLOCK_STATUS, for the union
 *   of both sides' dirty regions before a resync.
 *
 * A probe whose peer answers without that context (a plain NBD server,
 * or a mirrord export without a peer) ends with ENODATA; one that
 * nobody answers with the connection's errno (ECONNREFUSED: nothing
 * listens there) or ETIMEDOUT.
 * Callbacks run on the loop, never from inside the starting call;
 * after peer_op_cancel() none runs.
 */

#define PEER_STATE_CONTEXT "mirrord:peer-state:"

struct peer_op;
struct nbd_handle;

/* The daemon's libnbd plumbing (TLS set-up for a URI, driving a handle
 * from the loop), registered once at start-up: ha/ includes nothing
 * from mirrord/. */
struct peer_nbd_client {
  int (*setup_handle) (struct nbd_handle *h, const char *uri);
  void (*watch_handle) (struct loop_source *src, struct nbd_handle *h);
  /* As target_handle_events(): 1 when H went to a TLS handshake
   * worker, -1 when the connection is over. */
  int (*handle_events) (struct loop *loop, struct loop_source *src,
                        struct nbd_handle *h, uint32_t events, loop_fd_cb cb,
                        void *opaque, bool *failed);
  int (*handle_errno) (struct nbd_handle *h);
  const char *(*handle_error) (struct nbd_handle *h);
  bool (*handshaking) (struct nbd_handle *h);
  void (*close_handle) (struct nbd_handle *h);
};
void peer_register_nbd_client (const struct peer_nbd_client *c);
typedef void (*peer_state_fn) (void *opaque, int err, const char *state);
typedef void (*peer_extent_fn) (void *opaque, uint64_t offset, uint64_t length);
typedef void (*peer_done_fn) (void *opaque, int err);

/* NULL with error_set() (and error_errno() the connection's errno, when
 * it failed at once) if the op could not start. */
struct peer_op *peer_probe (struct loop *loop, const char *uri,
                            unsigned timeout_ms, peer_state_fn done,
                            void *opaque);
struct peer_op *peer_fetch_bitmap (struct loop *loop, const char *uri,
                                   const char *context, uint64_t size,
                                   unsigned timeout_ms, peer_extent_fn dirty,
                                   peer_done_fn done, void *opaque);
/* handover: connects to URI (a claim carrying "handover=1") through
 * OPT_GO and hangs up: the peer took over (0) or refused (an errno,
 * STATE then holds libnbd's message, the peer's reason in it). */
struct peer_op *peer_handover (struct loop *loop, const char *uri,
                               unsigned timeout_ms, peer_state_fn done,
                               void *opaque);
void peer_op_cancel (struct peer_op *op);

#endif
