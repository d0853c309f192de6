/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_INT_H
#define MIRRORD_MIRROR_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmap/store.h"
#include "common/ioq.h"
#include "common/list.h"
#include "common/loop.h"
#include "mirror-bits.h"
#include "mirror-fsm.h"
#include "mirror.h"

/* The mirror job's private parts, shared by the mirror-*.c files only.
 *
 *   mirror.c          start, cancel, lifetime, the state change wrapper
 *   mirror-fsm.c      the state machine (pure: states, table, log line)
 *   mirror-copy.c     the copy engine: passes, copies, zeroes, bandwidth
 *   mirror-fwd.c      guest writes: forwards (sync, async), lag bound
 *   mirror-cutover.c  the cut-over
 *   mirror-link.c     the target connection's life: connect, lose, retry
 *   mirror-job.c      the job file, saved on ioq workers
 *   mirror-bits.c     every dirty-bit operation
 *   mirror-status.c   status JSON
 *
 * Each part's fields are in a struct of its own below, written by that
 * file alone (the others read them).  The job's state is m->fsm and
 * changes only through mirror_go().
 *
 * Ownership (issue 16 item 5).  The export owns its mirror: e->mirror
 * is set by export_mirror_start() and freed only by the export —
 * mirror_free() when a finished job is replaced or the export goes —
 * and only once mirror_idle(); mirror_free() asserts it.  The mirror
 * never frees itself.  While it has anything in flight (copies, target
 * commands, forwards, the full-sync mark, a job-file save) it pins its
 * export with one reference, so the export and with it the mirror
 * outlive every callback the mirror is owed.  The pin is dropped by
 * release(), a deferred call run from the loop's top level, as its very
 * last act: if that was the export's last reference the export is torn
 * down there, never inside a callback of the mirror's own that would
 * return into freed memory.
 */

#define MIRROR_TICK_MS 100

/* The copy engine (mirror-copy.c). */
enum mirror_pass { PASS_IDLE, PASS_COPYING, PASS_FLUSHING };

struct mirror_copy_state {
  enum mirror_pass pass;
  struct mirror_range *copied;  /* this pass's copies, merged */
  size_t nr_copied, cap_copied;
  uint64_t cursor, pass_copied;
  unsigned ops;                 /* copies in flight */
  unsigned passes;
  struct list copying;          /* copies in flight */
  struct loop_deferred kick_later;
  bool kick_queued;

  /* Progress. */
  uint64_t done_bytes, total_bytes;
  uint64_t window_bytes, window_start_ns;
  double rate;                  /* bytes/s */
  int64_t tokens;               /* bandwidth budget, bytes */
  uint64_t zeroes_skipped;      /* zero ranges the target already had */
  uint64_t fast_zero_bytes;     /* zeroed with FAST_ZERO */
};

/* Guest writes (mirror-fwd.c). */
struct mirror_fwd_state {
  /* Writes whose acknowledgment waits for the lag to come back under
   * max-lag. */
  bool auto_blocking;
  struct list throttled;
  struct list waiting;          /* forwards waiting for a copy to end */
  struct list forwarding;       /* forwards at the target */
  struct list held;             /* async writes waiting for queue room */
  bool admitting;
  bool congested;               /* writes wait for the queue (logged) */
  uint64_t congestion_waits;    /* async writes that had to wait */
  bool unflushed, flushing;
  uint64_t bytes;               /* async forwards not yet at the target */
  unsigned ops;                 /* how many */
  struct loop_source *flush_timer;
};

/* Runs once every job-file change asked for before it is on disk
 * (mirror-job.c). */
struct mirror_job_wait {
  struct list node;
  uint64_t seq;
  void (*fn) (struct mirror_job_wait *w);
};

/* The cut-over (mirror-cutover.c). */
struct mirror_cutover_state {
  mirror_cutover_fn done;       /* an admin waits for it */
  void *opaque;
  /* A completed cut-over's answer, once the job file is gone. */
  mirror_cutover_fn answer;
  void *answer_opaque;
  double downtime_ms;
  uint64_t hold_start_ns;
  bool final_flush;             /* the target's final flush in flight */
  enum mirror_fsm_state before; /* back to it if given up */
  struct loop_source *timer;    /* --timeout */
  unsigned seq, flush_seq;      /* whose final flush is in flight */
  struct mirror_job_wait wait;
};

/* The target connection (mirror-link.c). */
struct mirror_link_state {
  struct loop_source *retry;
  unsigned backoff_ms;
  bool fast_zero_slow;          /* this target refused FAST_ZERO: don't ask */
};

struct mirror_job_state {
  /* The file's wanted content: saved (true) or removed; changes are
   * numbered, and one at a time is on a worker. */
  bool want_saved;
  uint64_t asked, done;         /* change numbers */
  bool busy;                    /* a worker has one */
  struct list waits;
  struct loop_deferred wake;
  struct mirror_job_op *op;
};

struct mirror {
  struct export *exp;
  struct loop *loop;
  char *uri;
  char *label;                  /* the URI as shown (without an HA claim) */
  unsigned timeout_ms;          /* a silent target is dropped */
  bool async;
  uint64_t bandwidth;
  struct mirror_fsm fsm;        /* where the job is: mirror_go() */
  char error[512];

  /* The target: written by mirror-link.c only.  UP: it said TARGET_UP
   * and not yet TARGET_DOWN (a terminal job may still drain over it). */
  struct target *tgt;
  bool up;

  struct mirror_copy_state copy;
  struct mirror_fwd_state fwd;
  struct mirror_cutover_state cut;
  struct mirror_link_state link;
  struct mirror_job_state job;

  struct loop_source *tick;

  /* A new job marks the whole disk dirty, durably, before it starts. */
  struct bitmap_intent mark_all;
  bool marking;                 /* that mark in flight */

  /* Lifetime (mirror.c). */
  bool pinned;                  /* holds a reference on the export */
  struct loop_deferred release_later;
  mirror_started_fn started;    /* an admin waits for the first outcome */
  void *started_opaque;
  int started_err;
  struct mirror_job_wait started_wait;
};

/* mirror.c */
/* The one way the job's state changes (mirror-fsm.h's table): logs it
 * with WHY and the job's error. */
void mirror_go (struct mirror *m, enum mirror_fsm_state to, const char *why);
static inline enum mirror_fsm_state
mirror_at (const struct mirror *m)
{
  return m->fsm.state;
}
/* Completed, failed or cancelled: nothing new starts, the rest drains. */
static inline bool
mirror_stopping (const struct mirror *m)
{
  return mirror_fsm_terminal (m->fsm.state);
}
__attribute__ ((format (printf, 2, 3)))
void mirror_set_error (struct mirror *m, const char *fmt, ...);
/* The job ends in failure (m->error says why; WHY for the log). */
void mirror_fail (struct mirror *m, int err, const char *why);
/* An admin waits for the start and has not been answered (nor is an
 * answer on its way). */
static inline bool
mirror_start_unanswered (const struct mirror *m)
{
  return m->started != NULL && m->started_wait.fn == NULL;
}
/* Tells whoever waits for the start (once; ERR 0: it is up), from the
 * loop, once the job file is on disk. */
void mirror_report_started (struct mirror *m, int err);
/* Stopping and nothing in flight: let the target, then the export, go
 * (from a deferred call). */
void mirror_release_if_done (struct mirror *m);

#endif
