/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_HA_HA_H
#define MIRRORD_HA_HA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "common/loop.h"
#include "generation.h"

/* The HA pair, for one export with a peer (SPEC §2.1, §2.3).
 *
 * Each side keeps its view (role, disk state, generations; state.h)
 * and learns its peer's through a heartbeat (peer.h).  Whenever it
 * hears from the peer it decides (ha_decide) and acts:
 *   - a primary that is the newer side (or in sync) mirrors to the
 *     peer with the mirror engine, first merging the peer's dirty
 *     bitmap when both wrote since a common generation (the union);
 *   - a primary whose peer is newer was failed over: it becomes
 *     secondary, outdated, and waits to be resynced;
 *   - split-brain (or unrelated data) stops replication on both
 *     sides, marks the disk splitbrain and overwrites nothing;
 *   - a secondary takes the primary's generation when the primary
 *     reports that it is in sync with it.
 *
 * Replication writes reach a secondary through the NBD server on
 * connections whose export name carries the primary's view (a claim,
 * ha_claim); the secondary accepts them only when the claim is not
 * older than itself (guarantee 6), and only from the peer: over
 * TLS-PSK as the peer's username, or over plaintext when the operator
 * said --insecure.  Anyone else who can reach the socket could
 * otherwise write to the secondary behind the primary's back.
 *
 * A primary starts a new generation the first time it writes while
 * its peer does not follow, before that write is acknowledged.
 */

struct ha;
struct bitmap_intent;

/* What the pair needs of its export and of the export's mirror job —
 * the daemon answers (mirrord/export-ha.c), so ha/ includes nothing
 * from mirrord/.  Each op gets the host pointer of struct ha_opts. */
struct ha_host_ops {
  /* The mirror job to the peer; with none: false, true (idle), 0. */
  bool (*mirror_connected) (void *host);        /* syncing or ready */
  bool (*mirror_ready) (void *host);
  bool (*mirror_active) (void *host);
  bool (*mirror_idle) (void *host);
  void (*mirror_cancel) (void *host);           /* and forget the job */
  uint64_t (*mirror_pending_bytes) (void *host);
  uint64_t (*mirror_heard_ns) (void *host);
  /* Replicates to URI (LABEL in status and logs) in the export's mode:
   * the whole disk, or (RESUME) what the bitmap holds.  -1 with
   * error_set(). */
  int (*mirror_start) (void *host, const char *uri, const char *label,
                       unsigned timeout_ms, bool resume);
  /* The peer= turned out to be a plain NBD server: mirror to it. */
  void (*mirror_plain_peer) (void *host);
  /* The export's dirty bits (its write-intent tracker). */
  uint64_t (*dirty_bytes) (void *host);
  void (*mark) (void *host, uint64_t offset, uint64_t length);
  void (*clear) (void *host, uint64_t offset, uint64_t length);
  /* As bitmap_store_barrier() and bitmap_store_barrier_cancel(). */
  int (*barrier) (void *host, struct bitmap_intent *in);
  void (*barrier_cancel) (void *host, struct bitmap_intent *in);
  /* A live migration (migrate.c).  ON: an async mirror runs sync (true
   * if it was async); off: back to the export's mode. */
  bool (*mirror_sync_window) (void *host, bool on);
  /* Drains and flushes the mirror as a cut-over does (mirror.h's
   * mirror_cutover); from then on the export refuses writes, until
   * end_cut_over().  -1 with error_set() if it cannot start. */
  int (*mirror_drain) (void *host, unsigned timeout_ms,
                       void (*done) (void *opaque, int err, double ms),
                       void *opaque);
  void (*end_cut_over) (void *host);
  unsigned (*guests) (void *host);              /* clients, not the peer */
};

struct ha_opts {
  const char *name;             /* the export's */
  uint64_t size;                /* the export's, bytes */
  struct loop *loop;
  const struct ha_host_ops *host;
  void *host_opaque;
  const char *state_path;       /* STATE_DIR/NAME.ha */
  const char *peer_uri;         /* NBD URI of the peer's export */
  enum ha_role initial_role;    /* the first time only */
  unsigned timeout_ms;          /* a silent peer is dead after this */
  const char *fence_hook;       /* run before promoting without a peer */
  const char *peer_user;        /* the peer's TLS-PSK username, or NULL */
  bool plaintext_claims;        /* --insecure: claims without TLS too */
};

struct ha *ha_open (const struct ha_opts *o);
void ha_close (struct ha *ha);

bool ha_is_primary (const struct ha *ha);

/* Our view as the peer reads it (the state meta context). */
int ha_peer_state (struct ha *ha, char *buf, size_t len);

/* Does the export name NAME carry a replication claim?  Then the base
 * name goes to BASE. */
bool ha_parse_claim_name (const char *name, char *base, size_t len);
/* Accepts (0) or refuses (-1, WHY says why) the replication claim in
 * export name NAME from a connection authenticated as TLS_USER (NULL:
 * plaintext). */
int ha_accept_claim (struct ha *ha, const char *name, const char *tls_user,
                     char *why, size_t len);

/* A replication connection from the peer closed without NBD_CMD_DISC:
 * the peer is asked at once whether it is still there. */
void ha_replication_lost (struct ha *ha);

/* Before a client write on a primary is started: -1 with error_set()
 * when the new generation it needs could not be saved. */
int ha_before_client_write (struct ha *ha);

/* Adds role, disk and peer to an export's status. */
void ha_status (struct ha *ha, json_object *o);

typedef void (*ha_reply_fn) (void *opaque, int err, const char *msg);
/* Promotes (or refuses, saying why).  DONE may run later, after the
 * fence-peer hook.  Returns -1 with error_set() for an immediate
 * refusal (DONE not called). */
int ha_promote (struct ha *ha, bool force, ha_reply_fn done, void *opaque);
int ha_demote (struct ha *ha, bool force, unsigned clients);

/* Live migration (migrate.h, docs/migration.md).  Each returns -1 with
 * error_set() for an immediate refusal; START and HANDOVER answer
 * through DONE later (an errno, ETIMEDOUT after TIMEOUT_S, and a
 * message), INCOMING and ABORT at once. */
int ha_migrate_incoming (struct ha *ha, unsigned timeout_s);
int ha_migrate_start (struct ha *ha, unsigned timeout_s, ha_reply_fn done,
                      void *opaque);
int ha_migrate_handover (struct ha *ha, unsigned timeout_s, ha_reply_fn done,
                         void *opaque);
int ha_migrate_abort (struct ha *ha);
/* The migration as status shows it (a "migration" object), for the
 * commands' replies. */
json_object *ha_migrate_json (const struct ha *ha);
/* A destination's window is open: the export looks writable to its
 * clients, although their writes are refused. */
bool ha_looks_writable (const struct ha *ha);
/* The export's client count changed: a window whose clients all left
 * (the QEMU using it is gone) closes. */
void ha_clients_changed (struct ha *ha, unsigned clients);

#endif
