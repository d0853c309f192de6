/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_FDRESERVE_H
#define MIRRORD_COMMON_FDRESERVE_H

/* A descriptor kept in reserve, for the moment the process has none
 * left (EMFILE).  A listener then cannot accept, and with level-
 * triggered epoll it would be woken again at once, for ever; the
 * clients in its backlog would hang.  With the reserve, it can still
 * take each waiting connection and close it at once (the client sees a
 * prompt close), then stop polling until a descriptor frees.
 *
 * One reserve for the process (/dev/null, opened once); loop thread
 * only. */

/* Opens the reserve if it is not open; -1 with error_set() on failure
 * (it is tried again at the next call). */
int fdreserve_init (void);
/* Accepts and closes up to MAX connections waiting on LISTEN_FD,
 * through the reserve's slot, then takes the reserve back.  Returns
 * how many were refused. */
unsigned fdreserve_refuse (int listen_fd, unsigned max);
void fdreserve_free (void);

#endif
