/* SPDX-License-Identifier: MIT */
/* The persisted HA state (state.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "common/error.h"
#include "state.h"

#define MAGIC "mirrord-ha 1"

static uint32_t
checksum (const char *line)
{
  return (uint32_t) crc32 (0, (const unsigned char *) line, (uInt) strlen (line));
}

int
ha_state_load (const char *path, struct ha_view *v)
{
  char magic[64], line[512], crc[64];
  FILE *fp = fopen (path, "r");
  unsigned long want;
  int r = -1;

  if (fp == NULL)
    return errno == ENOENT ? 1 : error_set (errno, "%s", path);
  if (fgets (magic, sizeof magic, fp) == NULL || fgets (line, sizeof line, fp) == NULL
      || fgets (crc, sizeof crc, fp) == NULL) {
    error_set (EINVAL, "%s: truncated", path);
    goto out;
  }
  magic[strcspn (magic, "\n")] = '\0';
  line[strcspn (line, "\n")] = '\0';
  if (strcmp (magic, MAGIC) != 0) {
    error_set (EINVAL, "%s: not a mirrord HA state file", path);
    goto out;
  }
  if (sscanf (crc, "crc=%lx", &want) != 1 || want != checksum (line)) {
    error_set (EINVAL, "%s: checksum mismatch (damaged)", path);
    goto out;
  }
  if (ha_view_parse (line, v) == -1) {
    error_prefix ("%s", path);
    goto out;
  }
  v->in_sync = false;           /* a fact of the running daemon only */
  r = 0;
 out:
  fclose (fp);
  return r;
}

static int
sync_dir (const char *path)
{
  char copy[PATH_MAX];
  int fd, r;

  snprintf (copy, sizeof copy, "%s", path);
  fd = open (dirname (copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd == -1)
    return -1;
  r = fsync (fd);
  close (fd);
  return r;
}

int
ha_state_save (const char *path, const struct ha_view *v)
{
  char tmp[PATH_MAX], line[512], buf[700];
  struct ha_view copy = *v;
  int fd, n;

  copy.in_sync = false;
  if (ha_view_format (&copy, line, sizeof line) == -1)
    return -1;
  n = snprintf (buf, sizeof buf, MAGIC "\n%s\ncrc=%08x\n", line, checksum (line));
  if (snprintf (tmp, sizeof tmp, "%s.tmp", path) >= (int) sizeof tmp)
    return error_set (ENAMETOOLONG, "%s", path);
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1)
    return error_set (errno, "%s", tmp);
  if (write (fd, buf, (size_t) n) != n || fdatasync (fd) == -1) {
    int err = errno ? errno : EIO;
    close (fd);
    unlink (tmp);
    return error_set (err, "writing %s", tmp);
  }
  close (fd);
  if (rename (tmp, path) == -1 || sync_dir (path) == -1)
    return error_set (errno, "replacing %s", path);
  return 0;
}
