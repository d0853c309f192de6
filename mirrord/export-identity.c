/* SPDX-License-Identifier: MIT */
/* How an export is told apart from every other one.
 *
 * By its file: one file, one export.  Two exports of one image (under
 * another name, through a symlink or a hard link, through another node
 * of the same block device) are two writers, each with a dirty bitmap
 * blind to the other's writes; a mirror of one silently loses what
 * the other wrote.  The image locks (image/lock.h) keep other
 * processes out; within the daemon export_check_file() refuses the
 * second export before its image is opened, naming the first.
 *
 * By an instance id: 128 random bits drawn when the export is opened,
 * sent to NBD clients at the end of its description
 * (NBD_INFO_DESCRIPTION, "mirrord export vm1 (raw) instance 3f0c...").
 * A mirror reads its target's description on connect; finding its own
 * export's id there means the target is the export itself, however
 * it was reached: its unix socket, a TCP address or name of this host,
 * a 0.0.0.0 listener, a proxy that passes descriptions on.  Comparing
 * URIs could not tell all of those apart; the id does.  Another
 * daemon (an HA peer) has other ids.  The id means nothing beyond the
 * life of the export: it is not stored.
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "common/error.h"
#include "export.h"

#define INSTANCE_WORD "instance "

int
export_check_file (const struct export_spec *spec)
{
  struct image_file_id id;

  if (image_file_id_of (spec->path, &id) == -1)
    return 0;                   /* opening it will say why */
  for (struct export *e = export_first (); e; e = export_next (e))
    if (image_file_id_equal (&e->img->file_id, &id))
      return error_code (EEXIST, "export %s: %s is already exported as %s "
                         "(%s)", spec->name, spec->path, e->spec.name,
                         e->spec.path);
  return 0;
}

void
export_identity_init (struct export *e)
{
  unsigned char r[EXPORT_INSTANCE_BYTES];

  if (getrandom (r, sizeof r, 0) != (ssize_t) sizeof r) {
    /* No entropy source: unique enough among this host's daemons,
     * which is all the id is for. */
    struct timespec ts;
    uint64_t w[2];
    clock_gettime (CLOCK_REALTIME, &ts);
    w[0] = ((uint64_t) getpid () << 32) ^ (uint64_t) ts.tv_sec;
    w[1] = (uint64_t) ts.tv_nsec ^ (uint64_t) (uintptr_t) e;
    memcpy (r, w, sizeof r);
  }
  for (size_t i = 0; i < sizeof r; i++)
    snprintf (e->instance + 2 * i, 3, "%02x", r[i]);
}

void
export_describe (const struct export *e, char *buf, size_t len)
{
  snprintf (buf, len, "mirrord export %s (%s) " INSTANCE_WORD "%s",
            e->spec.name, image_format_name (e->img->format), e->instance);
}

bool
export_is_described (const struct export *e, const char *desc)
{
  const char *p = desc ? strstr (desc, INSTANCE_WORD) : NULL;
  size_t n = strlen (e->instance);

  for (; p; p = strstr (p + 1, INSTANCE_WORD)) {
    p += strlen (INSTANCE_WORD);
    if (strncmp (p, e->instance, n) == 0 && (p[n] == '\0' || p[n] == ' '))
      return true;
  }
  return false;
}
