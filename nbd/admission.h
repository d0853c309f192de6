/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_NBD_ADMISSION_H
#define MIRRORD_NBD_ADMISSION_H

/* Who may hold a connection (internal to nbd/).
 *
 * Unix-socket clients are the local hypervisor; TCP clients are peers,
 * remote tools, and anyone else who can reach the port.  Each kind has
 * a budget of its own, so no amount of TCP traffic takes the place of a
 * unix-socket client, and each TCP source address has a share of the
 * TCP budget, so one host cannot take all of it.  The TCP budget never
 * exceeds half the process's descriptor limit: whatever TCP clients
 * do, unix-socket clients still find descriptors.
 *
 * A connection counts from the accept until its socket is closed (its
 * requests may still be finishing then, but it holds no descriptor and
 * takes no input).  Source addresses live in a hash table, one entry per
 * address with open connections, so admission costs the same with ten
 * connections or ten thousand.
 */

#include <stdbool.h>
#include <sys/socket.h>

#include "server.h"

struct admission_host;

void admission_init (const struct server_limits *limits);
/* The TCP budget in force (after the descriptor limit's cap); 0 when
 * there is none. */
unsigned admission_max_tcp (void);
/* Counts a new connection from SA (NULL: a unix socket, or a socket of
 * unknown origin).  Returns 0 and sets *HOST (NULL for no address), or
 * -1 with error_set() saying which limit refused it. */
int admission_take (bool is_unix, const struct sockaddr *sa,
                    struct admission_host **host);
/* The connection counted by admission_take() closed. */
void admission_release (bool is_unix, struct admission_host *host);

#endif
