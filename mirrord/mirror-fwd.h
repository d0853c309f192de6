/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_FWD_H
#define MIRRORD_MIRROR_FWD_H

#include <stdbool.h>
#include <stdint.h>

struct mirror;

/* Guest writes through the mirror: mirror.h's mirror_guest_write() and
 * mirror_guest_flush() are implemented here (docs/mirror.md, "Sync
 * mode", "Async mode", "Modes and the lag bound").
 *
 * Sync mode forwards a write to the target before its acknowledgment;
 * async mode after it, as a detached copy holding the write's bitmap
 * intent, through a bounded queue (a full one makes writes wait:
 * congestion).  Either way the lag (dirty bytes plus forwards in
 * flight) is bounded by max-lag: beyond it acknowledgments are held
 * ("throttled") until the mirror is back under half.  A forward never
 * overlaps a copy in flight, overlapping forwards reach the target in
 * the guest's order, and a forward the target did not take leaves its
 * region in the bitmap.  While the job is stopping, or the target is
 * down, writes go on locally and are left to the bitmap.
 */

void mirror_fwd_init (struct mirror *m);
void mirror_fwd_free (struct mirror *m);

/* Forwards that waited for an overlapping copy or forward go now if
 * they can (or, target lost or job stopped, back to the bitmap). */
void mirror_fwd_retry (struct mirror *m);
/* Is a forward of an overlapping range at the target? */
bool mirror_fwd_overlaps (const struct mirror *m, uint64_t off, uint64_t len);
/* Nothing forwarded in flight nor waiting. */
bool mirror_fwd_idle (const struct mirror *m);

/* Dirty bytes plus async forwards on their way, and its bound. */
uint64_t mirror_fwd_lag (const struct mirror *m);
uint64_t mirror_fwd_lag_limit (const struct mirror *m);
/* Lets every held acknowledgment go (caught up, or stopping). */
void mirror_fwd_release (struct mirror *m);
/* Lets them go if the lag is back under half the bound. */
void mirror_fwd_caught_up (struct mirror *m);
/* The 100 ms tick: the same against the bitmap alone, or target down. */
void mirror_fwd_tick (struct mirror *m);

#endif
