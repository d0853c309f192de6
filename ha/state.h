/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_HA_STATE_H
#define MIRRORD_HA_STATE_H

#include "generation.h"

/* The HA state of an export, on disk beside its bitmap
 * (STATE_DIR/NAME.ha): role, disk state, generations and the discard
 * flag.  Saved atomically (a new file, synced, renamed over the old,
 * the directory synced), so a crash leaves the old or the new state,
 * never a mix; a checksum catches anything else.
 *
 *   mirrord-ha 1
 *   role=primary disk=uptodate cur=... bm=... h0=... h1=... discard=0 insync=0
 *   crc=8 hex digits (zlib crc32 of the line above)
 */

/* Returns 0 with V filled, 1 if the file does not exist, -1 with
 * error_set() if it cannot be read or is damaged. */
int ha_state_load (const char *path, struct ha_view *v);
int ha_state_save (const char *path, const struct ha_view *v);

#endif
