/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_TARGET_H
#define MIRRORD_TARGET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/loop.h"

struct nbd_handle;

/* A mirror target: one or more libnbd connections to an NBD URI, driven
 * by mirrord's loop through libnbd's asynchronous API.
 *
 * target_open() starts connecting every connection; on_state() is
 * called once with TARGET_UP when the first one is ready (the others
 * join as they come), or TARGET_DOWN (message in target_error()) when
 * the target cannot be reached or a live connection dies.  After
 * TARGET_DOWN the target is dead: free it and open a new one.
 *
 * Commands complete through their callback, always from the loop and
 * never inside the submitting call (libnbd's own callbacks only record
 * the result; the callback runs from a deferred call).  err is 0 or a
 * positive errno.
 */

struct target;

enum target_state { TARGET_UP, TARGET_DOWN };
typedef void (*target_state_fn) (void *opaque, enum target_state st);
typedef void (*target_done_fn) (void *opaque, int err);

/* The TLS-PSK key file for nbds:// targets, and the username to use
 * when a URI names none (the file's first).  NULLs: no TLS. */
int target_set_tls_psk (const char *file, const char *username);
/* The TLS-PSK username a connection to URI presents: its "user@", its
 * tls-username=, else the file's first.  -1 without --tls-psk. */
int target_tls_identity (const char *uri, char *buf, size_t len);

struct target *target_open (struct loop *loop, const char *uri,
                            unsigned max_conns, target_state_fn on_state,
                            void *opaque);
void target_free (struct target *t);
/* Connections that make no progress for TIMEOUT_MS while commands are
 * in flight (or while connecting) are dropped; 0 turns it off. */
void target_set_timeout (struct target *t, unsigned timeout_ms);
const char *target_error (const struct target *t);

/* Valid once up. */
uint64_t target_size (const struct target *t);
/* The server's NBD_INFO_DESCRIPTION, NULL if it sent none. */
const char *target_description (const struct target *t);
bool target_is_readonly (const struct target *t);
bool target_can_zero (const struct target *t);
bool target_can_fast_zero (const struct target *t);
bool target_can_flush (const struct target *t);
uint32_t target_max_request (const struct target *t);
unsigned target_connections (const struct target *t);

/* Returns 0, or -1 with error_set() if the command could not be
 * queued (the target is down).  FLAGS: TARGET_FUA, the data is stable
 * on the target when DONE runs (a FLUSH follows the write where the
 * target has no FUA). */
#define TARGET_FUA 1u
int target_pwrite (struct target *t, const void *buf, uint64_t count,
                   uint64_t offset, unsigned flags, target_done_fn done,
                   void *opaque);
int target_zero (struct target *t, uint64_t count, uint64_t offset,
                 unsigned flags, target_done_fn done, void *opaque);
/* WRITE_ZEROES with FAST_ZERO (only if target_can_fast_zero()): the
 * target zeroes only if that is cheaper than writing, else DONE gets
 * ENOTSUP at once and nothing changed. */
int target_zero_fast (struct target *t, uint64_t count, uint64_t offset,
                      target_done_fn done, void *opaque);
/* Flushes every connection; DONE once all have. */
int target_flush (struct target *t, target_done_fn done, void *opaque);
unsigned target_in_flight (const struct target *t);
/* When the target last sent anything (loop_now_ns(); 0: never): a
 * target that answers is alive, however slow its link. */
uint64_t target_heard_ns (const struct target *t);

/* base:allocation on the target, if it offers it: DONE gets how many
 * bytes from OFFSET (at most COUNT) read as zeroes there already. */
bool target_can_block_status (const struct target *t);
typedef void (*target_zeroes_fn) (void *opaque, int err, uint64_t zero_bytes);
int target_zero_prefix (struct target *t, uint64_t count, uint64_t offset,
                        target_zeroes_fn done, void *opaque);

/* Prepares a libnbd handle for URI before it connects (TLS settings
 * for nbds:// URIs).  Shared with the HA peer link. */
int target_setup_handle (struct nbd_handle *h, const char *uri);
/* Points SRC's events at what libnbd waits for on H (after every call
 * into libnbd).  Shared with the HA peer link. */
void target_watch_handle (struct loop_source *src, struct nbd_handle *h);
/* Lets libnbd act on EVENTS on H (watched by SRC) from LOOP; -1 when the
 * connection is dead or closed (tls_worker_error() says why; *FAILED,
 * if not NULL, whether a call failed rather than the connection just
 * ending); 1 when H went to a TLS handshake worker (SRC then waits for
 * nothing): no libnbd call on H until CB (OPAQUE, 0) runs again
 * (tls-worker.h). */
int target_handle_events (struct loop *loop, struct loop_source *src,
                          struct nbd_handle *h, uint32_t events,
                          loop_fd_cb cb, void *opaque, bool *failed);

#endif
