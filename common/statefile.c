/* SPDX-License-Identifier: MIT */
/* Atomic replacement of small state files (statefile.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "statefile.h"

/* The directory holding PATH, fsynced: a rename or unlink in it is
 * durable only then. */
static int
sync_parent (const char *path)
{
  char dir[PATH_MAX];
  const char *slash = strrchr (path, '/');
  int fd, r;

  if (slash == NULL)
    snprintf (dir, sizeof dir, ".");
  else if (slash == path)
    snprintf (dir, sizeof dir, "/");
  else if ((size_t) (slash - path) >= sizeof dir)
    return error_set (ENAMETOOLONG, "%s", path);
  else
    snprintf (dir, sizeof dir, "%.*s", (int) (slash - path), path);
  fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd == -1)
    return error_set (errno, "opening directory %s", dir);
  r = fsync (fd);
  if (r == -1)
    error_set (errno, "fsync of directory %s", dir);
  close (fd);
  return r;
}

static int
write_all (int fd, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t n = write (fd, p, len);
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1)
      return -1;
    if (n == 0) {
      errno = EIO;
      return -1;
    }
    p += n;
    len -= (size_t) n;
  }
  return 0;
}

int
statefile_write (const char *path, const void *data, size_t len)
{
  char tmp[PATH_MAX];
  int fd, err;

  if ((size_t) snprintf (tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
    return error_set (ENAMETOOLONG, "%s", path);
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1)
    return error_set (errno, "creating %s", tmp);
  if (write_all (fd, data, len) == -1 || fdatasync (fd) == -1) {
    err = errno;
    close (fd);
    unlink (tmp);
    return error_set (err, "writing %s", tmp);
  }
  if (close (fd) == -1) {
    err = errno;
    unlink (tmp);
    return error_set (err, "closing %s", tmp);
  }
  if (rename (tmp, path) == -1) {
    err = errno;
    unlink (tmp);
    return error_set (err, "renaming %s to %s", tmp, path);
  }
  if (sync_parent (path) == -1)
    return error_prefix ("%s replaced, but perhaps not durably", path);
  return 0;
}

int
statefile_remove (const char *path)
{
  if (unlink (path) == -1) {
    if (errno == ENOENT)
      return 0;
    return error_set (errno, "removing %s", path);
  }
  if (sync_parent (path) == -1)
    return error_prefix ("%s removed, but perhaps not durably", path);
  return 0;
}
