/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_FSM_H
#define MIRRORD_MIRROR_FSM_H

#include <stdbool.h>

#include "mirror.h"

/* The mirror job's state machine, and nothing else: no I/O, no loop,
 * no target (the unit test links it alone).
 *
 * One enum holds where the job is; mirror_fsm_go() is the only code
 * that changes it.  It checks the move against the table below, logs
 * it as one line ("export vm1: mirror to URI: syncing -> ready
 * (converged)"), and refuses an illegal one: a bug, logged, and an
 * assertion failure in a debug build.  What the job does on the way
 * (copying, the cut-over, the target) is the other mirror-*.c files';
 * they ask this one where the job is.
 *
 *   from           to                                 why
 *   marking        connecting | failed | cancelled    full-sync marks durable / failed / cancel
 *   connecting     syncing | disconnected | failed    target up / lost at boot / refused, admin waits
 *                  | cancelled
 *   syncing        ready | cutover | disconnected     converged / cut-over asked / target lost
 *                  | cancelled
 *   ready          cutover | disconnected | cancelled
 *   cutover        completed | syncing | ready        final flush done / given up (back where it was)
 *                  | failed | cancelled               target lost / cancel
 *   disconnected   syncing | failed | cancelled       target back / back but unacceptable
 *   completed, failed, cancelled: terminal (the job only drains)
 *
 * marking and connecting show as "syncing" to users (SPEC §4 fixes the
 * names): the job is under way, nothing is copied yet.  Every other
 * state shows under its own name.
 */

enum mirror_fsm_state {
  MF_MARKING,                   /* a new job marks the whole disk dirty */
  MF_CONNECTING,                /* first connection to the target */
  MF_SYNCING,                   /* copying; more dirty than the budget */
  MF_READY,                     /* in sync: what is left fits a cut-over */
  MF_CUTOVER,                   /* guest writes held, draining */
  MF_DISCONNECTED,              /* target lost: tracking, reconnecting */
  MF_COMPLETED,                 /* cut over; terminal */
  MF_FAILED,                    /* terminal; the mirror's error says why */
  MF_CANCELLED,                 /* terminal */
  MF_NR_STATES
};

struct mirror_fsm {
  enum mirror_fsm_state state;
  /* For the log line: the export's name and the target as shown. */
  const char *export_name;
  const char *target_label;
};

/* Starts in INITIAL: MF_MARKING (a new job) or MF_CONNECTING (a
 * resumed one). */
void mirror_fsm_init (struct mirror_fsm *f, enum mirror_fsm_state initial,
                      const char *export_name, const char *target_label);

/* Is FROM -> TO in the table? */
bool mirror_fsm_allowed (enum mirror_fsm_state from, enum mirror_fsm_state to);

/* Moves F to TO, logging "FROM -> TO (WHY)" and, if DETAIL is not
 * empty, ": DETAIL" (the job's error).  TO == the current state is no
 * move (false, nothing logged).  An illegal move leaves the state as
 * it was and returns false, after log_err() and assert().  True if the
 * state changed. */
bool mirror_fsm_go (struct mirror_fsm *f, enum mirror_fsm_state to,
                    const char *why, const char *detail);

/* The state's own name, for logs ("marking"). */
const char *mirror_fsm_name (enum mirror_fsm_state s);
/* What users see (mirror.h, SPEC §4). */
enum mirror_state mirror_fsm_public (enum mirror_fsm_state s);
/* completed, failed or cancelled: the job only drains. */
bool mirror_fsm_terminal (enum mirror_fsm_state s);

#endif
