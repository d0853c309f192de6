/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_LINK_H
#define MIRRORD_MIRROR_LINK_H

struct mirror;

/* The mirror's connection to its target (target.c speaks NBD; this is
 * the job's side of it): opens it, checks what answered, and reacts to
 * its loss.
 *
 * A target that comes up must be acceptable — not this export itself,
 * of the export's size, writable — or the job fails.  One that cannot
 * be reached or is lost: if an admin waits for the start, the job
 * fails; otherwise it goes disconnected (writes are tracked), and a new
 * connection is tried with backoff from 250 ms to 8 s; up again, the
 * job goes back to syncing.  A target lost during a cut-over fails the
 * job (the cut-over answers ECANCELED).  m->tgt and m->up are written
 * here only.
 */

/* Opens the target (connecting, or after a loss). */
void mirror_link_connect (struct mirror *m);
/* The job stopped: no more reconnecting. */
void mirror_link_stop (struct mirror *m);
/* Frees the target (nothing in flight on it). */
void mirror_link_close (struct mirror *m);

#endif
