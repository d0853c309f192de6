/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_JOB_H
#define MIRRORD_MIRROR_JOB_H

#include <stdbool.h>

struct mirror;
struct mirror_job_wait;

/* The mirror job file, STATE_DIR/EXPORT.mirror: what a restart needs to
 * resume the job (URI, mode, bandwidth).
 *
 * Written through common/statefile.c (temp file, fsync, rename, fsync
 * of the directory, every result checked), and never on the loop: each
 * change is handed to one of the ioq worker threads and its completion
 * comes back to the loop.  Changes are numbered and go to the workers
 * one at a time, the newest wanted content each time, so a later save
 * or removal is never overtaken by an earlier one (two workers could
 * otherwise finish them in either order).  A failure is logged (the job
 * just will not resume after a restart) and does not stop the mirror.
 *
 * What depends on the file waits for it: mirror_job_when_durable()
 * runs a callback once every change asked for so far has completed —
 * the start's answer after the save, a cut-over's after the removal.
 */

void mirror_job_init (struct mirror *m);
/* The job is to resume after a restart / is over for good. */
void mirror_job_save (struct mirror *m);
void mirror_job_forget (struct mirror *m);
/* W->fn (W) from the loop, never inside this call, once every change
 * asked for so far is done (successfully or not).  W stays queued
 * until then. */
void mirror_job_when_durable (struct mirror *m, struct mirror_job_wait *w);
/* Withdraws W if still queued. */
void mirror_job_wait_cancel (struct mirror *m, struct mirror_job_wait *w);
/* Nothing on a worker and nobody waiting: the mirror may go. */
bool mirror_job_idle (const struct mirror *m);
void mirror_job_free (struct mirror *m);

#endif
