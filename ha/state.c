/* SPDX-License-Identifier: MIT */
/* The persisted HA state (state.h). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/error.h"
#include "common/statefile.h"
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
  v->in_sync = v->migrating = v->handover = false;   /* facts of the running daemon */
  r = 0;
 out:
  fclose (fp);
  return r;
}

int
ha_state_save (const char *path, const struct ha_view *v)
{
  char line[512], buf[700];
  struct ha_view copy = *v;
  int n;

  copy.in_sync = copy.migrating = copy.handover = false;
  if (ha_view_format (&copy, line, sizeof line) == -1)
    return -1;
  n = snprintf (buf, sizeof buf, MAGIC "\n%s\ncrc=%08x\n", line, checksum (line));
  return statefile_write (path, buf, (size_t) n);
}
