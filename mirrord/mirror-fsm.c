/* SPDX-License-Identifier: MIT */
/* The mirror job's state machine (mirror-fsm.h has the table). */
#include <config.h>

#include <assert.h>
#include <stdint.h>

#include "common/log.h"
#include "mirror-fsm.h"

#define TO(s) (1u << (s))

/* Where each state may go; the rows follow the table in the header. */
static const uint32_t allowed[MF_NR_STATES] = {
  [MF_MARKING] = TO (MF_CONNECTING) | TO (MF_FAILED) | TO (MF_CANCELLED),
  [MF_CONNECTING] = TO (MF_SYNCING) | TO (MF_DISCONNECTED) | TO (MF_FAILED)
    | TO (MF_CANCELLED),
  [MF_SYNCING] = TO (MF_READY) | TO (MF_CUTOVER) | TO (MF_DISCONNECTED)
    | TO (MF_CANCELLED),
  [MF_READY] = TO (MF_CUTOVER) | TO (MF_DISCONNECTED) | TO (MF_CANCELLED),
  [MF_CUTOVER] = TO (MF_COMPLETED) | TO (MF_SYNCING) | TO (MF_READY)
    | TO (MF_FAILED) | TO (MF_CANCELLED),
  [MF_DISCONNECTED] = TO (MF_SYNCING) | TO (MF_FAILED) | TO (MF_CANCELLED),
  [MF_COMPLETED] = 0,
  [MF_FAILED] = 0,
  [MF_CANCELLED] = 0,
};

static const char *const names[MF_NR_STATES] = {
  [MF_MARKING] = "marking", [MF_CONNECTING] = "connecting",
  [MF_SYNCING] = "syncing", [MF_READY] = "ready", [MF_CUTOVER] = "cutover",
  [MF_DISCONNECTED] = "disconnected", [MF_COMPLETED] = "completed",
  [MF_FAILED] = "failed", [MF_CANCELLED] = "cancelled",
};

static const enum mirror_state shown[MF_NR_STATES] = {
  [MF_MARKING] = MIRROR_SYNCING, [MF_CONNECTING] = MIRROR_SYNCING,
  [MF_SYNCING] = MIRROR_SYNCING, [MF_READY] = MIRROR_READY,
  [MF_CUTOVER] = MIRROR_CUTOVER, [MF_DISCONNECTED] = MIRROR_DISCONNECTED,
  [MF_COMPLETED] = MIRROR_COMPLETED, [MF_FAILED] = MIRROR_FAILED,
  [MF_CANCELLED] = MIRROR_CANCELLED,
};

void
mirror_fsm_init (struct mirror_fsm *f, enum mirror_fsm_state initial,
                 const char *export_name, const char *target_label)
{
  assert (initial == MF_MARKING || initial == MF_CONNECTING);
  f->state = initial;
  f->export_name = export_name;
  f->target_label = target_label;
}

bool
mirror_fsm_allowed (enum mirror_fsm_state from, enum mirror_fsm_state to)
{
  return from < MF_NR_STATES && to < MF_NR_STATES
    && (allowed[from] & TO (to)) != 0;
}

bool
mirror_fsm_go (struct mirror_fsm *f, enum mirror_fsm_state to,
               const char *why, const char *detail)
{
  enum mirror_fsm_state from = f->state;
  bool has_detail = detail != NULL && detail[0] != '\0';

  if (to == from)
    return false;
  if (!mirror_fsm_allowed (from, to)) {
    log_err ("export %s: mirror to %s: illegal state change %s -> %s (%s): "
             "a bug, ignored", f->export_name, f->target_label,
             mirror_fsm_name (from), mirror_fsm_name (to), why);
#ifndef MIRROR_FSM_NO_ASSERT
    assert (!"illegal mirror state change");
#endif
    return false;
  }
  log_info ("export %s: mirror to %s: %s -> %s (%s)%s%s", f->export_name,
            f->target_label, mirror_fsm_name (from), mirror_fsm_name (to), why,
            has_detail ? ": " : "", has_detail ? detail : "");
  f->state = to;
  return true;
}

const char *
mirror_fsm_name (enum mirror_fsm_state s)
{
  return s < MF_NR_STATES ? names[s] : "?";
}

enum mirror_state
mirror_fsm_public (enum mirror_fsm_state s)
{
  assert (s < MF_NR_STATES);
  return shown[s];
}

bool
mirror_fsm_terminal (enum mirror_fsm_state s)
{
  return s == MF_COMPLETED || s == MF_FAILED || s == MF_CANCELLED;
}

/* The names users see (SPEC §4), in enum mirror_state's order. */
const char *
mirror_state_name (enum mirror_state s)
{
  static const char *const public_names[] = {
    "syncing", "ready", "cutover", "completed", "failed", "cancelled",
    "disconnected",
  };
  return public_names[s];
}
