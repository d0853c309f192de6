/* SPDX-License-Identifier: MIT */
/* The mirror's status JSON (mirror.h; the fields are SPEC §4's). */
#include <config.h>

#include "mirror-copy.h"
#include "mirror-fwd.h"
#include "mirror-int.h"
#include "status.h"
#include "target.h"

json_object *
mirror_status_json (const struct mirror *m)
{
  json_object *o = json_object_new_object ();
  uint64_t rem = mirror_at (m) == MF_COMPLETED ? 0 : mirror_copy_remaining (m);
  uint64_t total = m->copy.done_bytes + rem;
  /* No rate without a job and its target (the average would only
   * decay); under 1 B/s it is 0, and the ETA unknown. */
  uint64_t rate = mirror_active (m) && m->up ? (uint64_t) m->copy.rate : 0;

  status_add (o, "target", json_object_new_string (m->label));
  status_add (o, "state", json_object_new_string (mirror_state_name (mirror_state (m))));
  status_add (o, "mode", json_object_new_string (m->async ? "async" : "sync"));
  status_add (o, "total_bytes", json_object_new_int64 ((int64_t) (total > m->copy.total_bytes ? total : m->copy.total_bytes)));
  status_add (o, "done_bytes", json_object_new_int64 ((int64_t) m->copy.done_bytes));
  status_add (o, "remaining_bytes", json_object_new_int64 ((int64_t) rem));
  status_add (o, "rate_bytes_per_s", json_object_new_int64 ((int64_t) rate));
  status_add (o, "eta_s", status_eta_json (rem, rate));
  status_add (o, "error", m->error[0] ? json_object_new_string (m->error) : NULL);
  status_add (o, "write_blocking", json_object_new_boolean (!m->async || m->fwd.auto_blocking
                                                            || m->fwd.congested));
  status_add (o, "lag_bound_held", json_object_new_boolean (m->fwd.auto_blocking || m->fwd.congested));
  status_add (o, "lag_bytes", json_object_new_int64 ((int64_t) mirror_fwd_lag (m)));
  status_add (o, "forwarding_bytes", json_object_new_int64 ((int64_t) m->fwd.bytes));
  status_add (o, "congested", json_object_new_boolean (m->fwd.congested));
  status_add (o, "congestion_waits", json_object_new_int64 ((int64_t) m->fwd.congestion_waits));
  status_add (o, "passes", json_object_new_int ((int) m->copy.passes));
  status_add (o, "connections", json_object_new_int (m->tgt && m->up ? (int) target_connections (m->tgt) : 0));
  status_add (o, "bandwidth", json_object_new_int64 ((int64_t) m->bandwidth));
  status_add (o, "zeroes_skipped_bytes", json_object_new_int64 ((int64_t) m->copy.zeroes_skipped));
  status_add (o, "fast_zero_bytes", json_object_new_int64 ((int64_t) m->copy.fast_zero_bytes));
  return o;
}
