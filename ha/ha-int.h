/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_HA_HA_INT_H
#define MIRRORD_HA_HA_INT_H

/* Inside ha/: the HA pair's state, shared by ha.c (heartbeat,
 * decisions, claims, promotion) and migrate.c (the live-migration
 * window and hand-over).  Not for use outside ha/. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bitmap/store.h"
#include "common/loop.h"
#include "ha.h"
#include "migrate.h"
#include "peer.h"

#define CLAIM_MARK "@@mirrord-peer,"
#define FENCE_TIMEOUT_MS 60000
#define RESTART_BACKOFF_NS (5ull * 1000000000)
#define RETRY_FETCH_NS (1ull * 1000000000)
/* After a lost replication connection: a dying process may still
 * accept (and then reset) a connection or two while the kernel closes
 * its sockets; ask again this often, a few times, until it refuses. */
#define RECHECK_MS 50
#define RECHECKS 10

struct ha {
  char *name;                   /* the export's, for logs */
  uint64_t size;
  const struct ha_host_ops *host;
  void *hd;                     /* the host's, for each host op */
  struct loop *loop;
  char *state_path, *peer_uri, *fence_hook, *peer_user;
  unsigned timeout_ms;
  bool plaintext_claims;
  struct ha_view self;

  /* The peer, as last heard. */
  struct ha_view peer;
  bool peer_known, peer_alive, peer_plain;
  uint64_t last_heard_ns;       /* anything: a probe or replication */
  uint64_t last_state_ns;       /* the probe that told us PEER */
  bool probe_urgent;            /* the probe in flight was asked now */
  unsigned rechecks;            /* quick probes left after a lost link */
  struct loop_source *recheck;
  struct peer_op *probe;
  struct loop_source *timer;
  enum ha_decision decision;
  bool logged_decision;

  /* The resync this primary runs for the peer's generation PEER_GEN. */
  struct peer_op *fetch;
  struct bitmap_intent merge;   /* its regions reaching the bitmap file */
  bool merging;
  struct ha_gen resync_for;
  enum ha_decision resync_decision;
  bool resync_set;
  uint64_t last_start_ns;

  /* A promotion waiting for the fence-peer hook. */
  pid_t fence_pid;
  struct loop_source *fence_timer;
  uint64_t fence_deadline_ns;
  ha_reply_fn fence_done;
  void *fence_opaque;

  /* A live migration through this export (migrate.c). */
  struct ha_migration mig;
};


bool ha_in_sync (const struct ha *ha);
int ha_save (struct ha *ha);
void ha_stop_mirror (struct ha *ha);
void ha_do_promote (struct ha *ha, bool forced);
/* Asks the peer for its view now (unless a probe is in flight). */
void ha_probe_now (struct ha *ha);
/* The peer URI with VIEW as the replication claim in its export name. */
int ha_claim_uri_for (struct ha *ha, const struct ha_view *view, char *buf,
                      size_t len);

#endif
