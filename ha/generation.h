/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_HA_GENERATION_H
#define MIRRORD_HA_GENERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Generation identifiers and the decision taken when two peers meet.
 *
 * In the spirit of DRBD's UUIDs, each side of a pair keeps:
 *   current   the generation of the data on its disk (0: no data yet,
 *             a sync into it never completed);
 *   bitmap    the generation its dirty bitmap counts changes from
 *             (0: none) — set when it starts a new generation while
 *             its peer does not follow (a promotion, or a primary's
 *             first write while disconnected), cleared when the peer
 *             has caught up;
 *   history   the two currents before that, newest first.
 * A new generation is a random 64-bit number, so equal numbers mean
 * the same data.
 *
 * ha_decide() is pure: both views in, one decision out, so that the
 * whole table of cases is under unit test (tests/unit/test-ha-decide).
 */

enum ha_role { HA_PRIMARY, HA_SECONDARY };

enum ha_disk {
  DISK_UPTODATE,                  /* has the newest data it knows of */
  DISK_INCONSISTENT,              /* a sync into it never completed */
  DISK_OUTDATED,                  /* the peer is known to hold newer data */
  DISK_SPLITBRAIN,              /* both sides wrote independently */
};

struct ha_gen {
  uint64_t current;
  uint64_t bitmap;
  uint64_t history[2];
};

/* What one side knows of itself, and tells its peer. */
struct ha_view {
  enum ha_role role;
  enum ha_disk disk;
  struct ha_gen gen;
  bool discard;                 /* the admin chose to drop its changes */
  bool in_sync;                 /* primary: its peer has all its data */
  /* Facts of the running daemon, never saved: */
  bool migrating;               /* a live migration's window is open */
  bool handover;                /* a claim: "take over as primary now" */
};

enum ha_decision {
  HA_NO_RESYNC,                 /* the same generation */
  HA_SOURCE_BITMAP,             /* this side is newer: copy the union of
                                   both bitmaps to the peer */
  HA_TARGET_BITMAP,             /* the peer is newer: it copies to us */
  HA_SOURCE_FULL,               /* newer, but no common generation the
                                   bitmaps cover: copy everything */
  HA_TARGET_FULL,
  HA_SPLITBRAIN,                /* both wrote since they diverged */
  HA_UNRELATED,                 /* both hold data with no common history
                                   and neither is a primary to prefer */
};

enum ha_decision ha_decide (const struct ha_view *local,
                            const struct ha_view *peer);

bool ha_decision_is_source (enum ha_decision d);
bool ha_decision_is_target (enum ha_decision d);
bool ha_decision_is_full (enum ha_decision d);

/* A new random generation (never 0). */
uint64_t ha_gen_new (void);
/* Starts a new generation: the current one goes to the history, and,
 * if the bitmap counts from nothing yet, it counts from there. */
void ha_gen_advance (struct ha_gen *g);
/* Takes the peer's generation after a completed sync from it. */
void ha_gen_adopt (struct ha_gen *g, const struct ha_gen *from);

const char *ha_role_name (enum ha_role r);
const char *ha_disk_name (enum ha_disk d);
int ha_disk_parse (const char *s, enum ha_disk *out);
const char *ha_decision_name (enum ha_decision d);

/* The wire form of a view, as a peer reads it ("role=primary disk=...
 * cur=HEX bm=HEX h0=HEX h1=HEX discard=0 insync=1").  Parsing refuses
 * anything malformed (-1 with error_set()); unknown keys are skipped,
 * for newer peers. */
int ha_view_format (const struct ha_view *v, char *buf, size_t len);
int ha_view_parse (const char *s, struct ha_view *v);

#endif
