/* SPDX-License-Identifier: MIT */
/* The reserve descriptor (see fdreserve.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>

#include "error.h"
#include "fdreserve.h"

static int reserve = -1;

int
fdreserve_init (void)
{
  if (reserve >= 0)
    return 0;
  reserve = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  if (reserve == -1)
    return error_set (errno, "opening the reserve descriptor");
  return 0;
}

unsigned
fdreserve_refuse (int listen_fd, unsigned max)
{
  unsigned n = 0;

  if (reserve < 0)
    return 0;
  close (reserve);
  reserve = -1;
  /* The slot just freed is the lowest: each accept takes it, each
   * close gives it back. */
  for (unsigned tries = 0; tries < max; tries++) {
    int fd = accept4 (listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd == -1) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      break;
    }
    close (fd);
    n++;
  }
  fdreserve_init ();            /* may fail: the next call tries again */
  return n;
}

void
fdreserve_free (void)
{
  if (reserve >= 0)
    close (reserve);
  reserve = -1;
}
