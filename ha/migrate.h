/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_HA_MIGRATE_H
#define MIRRORD_HA_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "common/loop.h"
#include "generation.h"

/* Inside ha/: the live-migration window of one export (migrate.c;
 * the commands are in ha.h, the flow in docs/migration.md).
 *
 * The destination (a secondary) opens an incoming window: its export
 * looks writable, so that a QEMU started with -incoming can open it,
 * but every client write is refused until the hand-over.  The source
 * (the primary) is started: an async pair switches to sync, and the
 * source waits until its peer has everything and reports its window
 * open (outgoing).  At QEMU's pre-switchover the hand-over moves the
 * roles in one step: the source's mirror drains and flushes, the source
 * becomes secondary, then asks its peer, with a claim that says
 * "handover", to take over; the peer takes the source's generation and
 * promotes itself; the source confirms the peer's new view.  Late
 * writes from the source's QEMU meet a secondary: EPERM.  At no moment
 * are both sides writable.
 *
 * States, as status shows them:
 *   incoming      destination: window open, writes refused
 *   starting      source: waiting for sync and the peer's window
 *   outgoing      source: ready to hand over
 *   handing-over  source: draining, or waiting for the peer's answer
 *   handed-over   done (both sides say so; the destination is primary)
 *   aborted       closed without a hand-over (abort, timeout, a QEMU
 *                 gone, the peer gone)
 *   failed        the hand-over's outcome is unknown (the peer stopped
 *                 answering): this side stays secondary, nothing
 *                 writes, and status says what to do
 */

struct ha;
struct peer_op;

enum mig_state {
  MIG_NONE,
  MIG_INCOMING,
  MIG_STARTING,
  MIG_OUTGOING,
  MIG_HANDING_OVER,
  MIG_HANDED_OVER,
  MIG_ABORTED,
  MIG_FAILED,
};

typedef void (*ha_mig_reply_fn) (void *opaque, int err, const char *msg);

struct ha_migration {
  enum mig_state state;
  struct loop_source *timer;    /* the deadline of the current step */
  uint64_t started_ns;          /* the hand-over's start */
  uint64_t deadline_ns;         /* start: when it gives up */
  ha_mig_reply_fn done;         /* the command waiting for this step */
  void *opaque;
  struct peer_op *op;           /* the hand-over connection */
  bool confirming;              /* the peer said yes: wait for its view */
  bool forced_sync;             /* start switched an async mirror to sync */
  unsigned clients, peak_clients;
  uint64_t gen_at_handover;     /* our generation when we handed over */
  double handover_ms;
  char error[256];
};

/* Hooks from ha.c. */
bool ha_migrate_busy (const struct ha *ha);     /* no decisions meanwhile */
bool ha_migrate_window_open (const struct ha *ha);
void ha_migrate_view (const struct ha *ha, struct ha_view *v);
void ha_migrate_heard (struct ha *ha);          /* a new view of the peer */
void ha_migrate_peer_down (struct ha *ha);
/* A claim with handover=1: 0 when this side took over, else -1 with
 * WHY. */
int ha_migrate_take_over (struct ha *ha, const struct ha_view *claim,
                          char *why, size_t len);
void ha_migrate_status (const struct ha *ha, json_object *o);
void ha_migrate_close (struct ha *ha);

#endif
