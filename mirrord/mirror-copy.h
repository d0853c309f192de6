/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_COPY_H
#define MIRRORD_MIRROR_COPY_H

#include <stdbool.h>
#include <stdint.h>

struct mirror;

/* The copy engine: passes over the dirty bitmap (mirror.h has the
 * design).  A pass freezes the bitmap, copies every pending run — up
 * to 16 copies of up to 4 MiB in flight, data read and written, zeroes
 * sent as WRITE_ZEROES (FAST_ZERO first where offered) unless the
 * target reads as zero there already — flushes the target, and only
 * then commits: the copied ranges' bits go.  A failed copy marks its
 * range again; a pass abandoned (target lost, job stopped) keeps every
 * bit.  It runs while the job is syncing, ready or cutting over with
 * the target up, and moves the job syncing -> ready when what is left
 * would drain within the cut-over budget at the measured rate.
 * --bandwidth is a token bucket refilled by mirror_copy_tick().
 */

void mirror_copy_init (struct mirror *m, uint64_t bandwidth);
/* Starts copies while there is room and work; ends or abandons the
 * pass; and lets a stopped mirror go once nothing is in flight. */
void mirror_copy_pump (struct mirror *m);
/* Every 100 ms: the rate's window, the bandwidth tokens, more work. */
void mirror_copy_tick (struct mirror *m);
/* Dirty bytes this pass has not copied yet. */
uint64_t mirror_copy_remaining (const struct mirror *m);
/* Is a copy of an overlapping range in flight? */
bool mirror_copy_overlaps (const struct mirror *m, uint64_t off, uint64_t len);
/* A pass, or a copy, in flight. */
bool mirror_copy_busy (const struct mirror *m);
bool mirror_copy_in_pass (const struct mirror *m);
void mirror_copy_free (struct mirror *m);

#endif
