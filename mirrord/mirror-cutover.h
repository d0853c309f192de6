/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_CUTOVER_H
#define MIRRORD_MIRROR_CUTOVER_H

struct mirror;

/* The cut-over (mirror.h's mirror_cutover(), docs/mirror.md): the job
 * goes to cutover, guest writes are held (mirror_holds_writes()), the
 * writes in flight and the async forwards drain, passes run until
 * nothing is dirty, the target is flushed; then the export refuses
 * writes, the job is completed and its file removed, and only once the
 * removal is on disk does the admin hear of it (a crash before must not
 * resume a job that was cut over).  Given up — --timeout, or the final
 * flush failed — the job goes back to where it was with every dirty bit
 * kept, and the held writes go on; a target lost or a cancel meanwhile
 * ends it with ECANCELED.
 */

/* Is the cut-over done, or given up?  Called whenever what it waits for
 * may have changed (a pass ended, a guest write or forward ended, the
 * job left cutover). */
void mirror_cutover_check (struct mirror *m);
void mirror_cutover_free (struct mirror *m);

#endif
