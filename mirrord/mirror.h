/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_H
#define MIRRORD_MIRROR_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

struct export;
struct blk_req;

/* A mirror job: keeps an NBD target identical to an export.
 *
 * The export's dirty bitmap is the job's to-do list.  A new job marks
 * the whole disk dirty (a full, sparse-aware sync); a resumed one (after
 * a restart or a lost link) copies only what the bitmap holds.  Work
 * goes in passes: the bitmap is frozen (new guest writes land in its
 * successor), every pending granule is copied — data read from the
 * image and written to the target, holes and zeroes sent as
 * WRITE_ZEROES (FAST_ZERO first where offered) unless the target reads
 * as zero there already — then the target is flushed, and only then are the
 * pass's bits cleared.  A failed copy re-marks its range.  So a bit is
 * never cleared before the target has the data on stable storage, and
 * a guest write racing a copy is always copied again.
 *
 * States (SPEC §4): syncing -> ready (what remains fits the cut-over
 * budget) -> cutover -> completed; failed, cancelled; disconnected
 * (target lost: writes are tracked, reconnect with backoff, resume).
 * They are an explicit state machine: mirror-fsm.h has the table, and
 * mirror-int.h the map of the mirror-*.c files and who owns a mirror
 * (its export).
 *
 * Write blocking.  In sync mode, and in async mode when the dirty data
 * outgrows the lag bound (the link cannot keep up), a guest write is
 * acknowledged only once the target has it too: guests are slowed to
 * the link's pace instead of the lag growing (SPEC §6.3, 6.4).
 */

enum mirror_state {
  MIRROR_SYNCING, MIRROR_READY, MIRROR_CUTOVER, MIRROR_COMPLETED,
  MIRROR_FAILED, MIRROR_CANCELLED, MIRROR_DISCONNECTED,
};

struct mirror;

/* Called once the target is up and acceptable (err 0), or the job
 * failed to get there (err, and mirror_error() says why). */
typedef void (*mirror_started_fn) (void *opaque, int err);

struct mirror_opts {
  const char *uri;
  const char *label;            /* how status and logs show it (NULL: URI) */
  bool async;                   /* mode=async, else sync */
  uint64_t bandwidth;           /* bytes/s, 0 = unlimited */
  bool resume;                  /* copy only what the bitmap holds */
  unsigned timeout_ms;          /* a silent target is dropped (0: 30 s) */
  /* With STARTED set, a target that cannot be reached at first fails
   * the job (an admin is waiting); without, it is retried (boot). */
  mirror_started_fn started;
  void *opaque;
};

/* Starts a job for E.  NULL with error_set() if E has no bitmap or the
 * URI is unusable; a target that is unreachable, read-only or of
 * another size fails the job (state failed, error says why). */
struct mirror *mirror_start (struct export *e, const struct mirror_opts *o);
/* Stops the job; the bitmap keeps what was not copied.  KEEP_JOB keeps
 * it on disk, to resume after a restart (daemon shutdown); otherwise it
 * is forgotten (mirror cancel, export removed). */
void mirror_cancel (struct mirror *m, bool keep_job);
/* Runs DONE from the loop, never inside this call, once the job file
 * on disk agrees with everything the mirror did so far (saved, or
 * removed by a cancel): an answer that promises it waits for this.
 * -1 with error_set() if it cannot wait (no memory). */
typedef void (*mirror_durable_fn) (void *opaque);
int mirror_when_durable (struct mirror *m, mirror_durable_fn done,
                         void *opaque);
/* No copy or target command in flight: safe to free. */
bool mirror_idle (const struct mirror *m);
/* Switches between sync and async forwarding (a live migration's window
 * runs sync): writes from now on follow the new mode; async forwards in
 * flight complete as they are. */
void mirror_set_async (struct mirror *m, bool async);
void mirror_free (struct mirror *m);

enum mirror_state mirror_state (const struct mirror *m);
const char *mirror_error (const struct mirror *m);
const char *mirror_state_name (enum mirror_state s);
bool mirror_active (const struct mirror *m);
json_object *mirror_status_json (const struct mirror *m);

/* Cut-over: hold guest writes, drain, flush, then refuse writes.  DONE
 * gets 0 and the downtime in ms, or an errno with error_set() done
 * (ETIMEDOUT when TIMEOUT_MS, if not 0, passed first: the held writes
 * went on, and the job is back to syncing or ready with every dirty bit
 * kept), always from the loop.  Returns -1 with error_set() if no
 * cut-over could start. */
typedef void (*mirror_cutover_fn) (void *opaque, int err, double downtime_ms);
int mirror_cutover (struct mirror *m, unsigned timeout_ms,
                    mirror_cutover_fn done, void *opaque);

/* Hooks from the export's data path. */
/* A guest write completed locally: in write-blocking mode it is sent to
 * the target and DONE runs when the target has it (returns 1), else
 * returns 0 and the caller acknowledges at once. */
typedef void (*mirror_write_fn) (struct blk_req *x, int err);
int mirror_guest_write (struct mirror *m, struct blk_req *x,
                        mirror_write_fn done);
/* A guest FLUSH completed locally: likewise for the target. */
int mirror_guest_flush (struct mirror *m, struct blk_req *x,
                        mirror_write_fn done);
/* New dirty data: start a pass soon. */
void mirror_kick (struct mirror *m);
/* A guest write finished (cut-over waits for the last). */
void mirror_guest_write_done (struct mirror *m);
/* Would mirror_guest_write() send the write to the target now (sync
 * mode, target up)?  Then it may go at the same time as the local
 * write. */
bool mirror_forwards_writes (const struct mirror *m);
/* Bytes of async forwards not yet acknowledged by the target (they are
 * not in the bitmap meanwhile). */
uint64_t mirror_pending_bytes (const struct mirror *m);
/* When the target last answered (target_heard_ns()); 0 without one. */
uint64_t mirror_target_heard_ns (const struct mirror *m);
/* Should a new guest write wait (cut-over in progress)? */
bool mirror_holds_writes (const struct mirror *m);

#endif
