/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_DAEMON_H
#define MIRRORD_DAEMON_H

/* Becoming a daemon, and the small file-system chores of start-up. */

/* Forks into the background.  The original process waits until the
 * daemon calls daemon_ready(), then exits with the status it gives
 * (printing its message), so callers see success only once mirrord
 * serves.  Returns, in the daemon, the fd to pass to daemon_ready(),
 * or -1 with error_set(). */
int daemon_fork (void);
/* Reports start-up's outcome to the waiting parent (no-op for fd -1). */
void daemon_ready (int fd, int status, const char *msg);

int daemon_mkdir_p (const char *dir, unsigned mode);
/* Creates the directory that will hold PATH. */
int daemon_mkdir_parent (const char *path);
int daemon_write_pid (const char *path);

#endif
