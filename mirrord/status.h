/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_STATUS_H
#define MIRRORD_STATUS_H

#include <json-c/json.h>

#include "export.h"

/* The status object of one export, as docs/control-api.md and SPEC §4
 * define it.  Returns a new reference, or NULL on out of memory. */
json_object *status_export_json (const struct export *e);
/* O[KEY] = V (V may be NULL: JSON null); shared with mirror.c. */
void status_add (json_object *o, const char *key, json_object *v);
/* "eta_s" for REMAINING bytes at RATE bytes/s: 0 when nothing remains,
 * null when the rate is under 1 B/s (not known: a stalled or
 * disconnected mirror), else the seconds rounded up. */
json_object *status_eta_json (uint64_t remaining, uint64_t rate);

#endif
