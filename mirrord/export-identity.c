/* SPDX-License-Identifier: MIT */
/* How an export is told apart from every other one: by its file.
 *
 * One file, one export.  Two exports of one image (under another
 * name, through a symlink or a hard link, through another node of the
 * same block device) are two writers, each with a dirty bitmap blind
 * to the other's writes; a mirror of one silently loses what the other
 * wrote.  The image locks (image/lock.h) keep other processes out;
 * within the daemon export_check_file() refuses the second export
 * before its image is opened, naming the first.
 */
#include <config.h>

#include <errno.h>

#include "common/error.h"
#include "export.h"

int
export_check_file (const struct export_spec *spec)
{
  struct image_file_id id;

  if (image_file_id_of (spec->path, &id) == -1)
    return 0;                   /* opening it will say why */
  for (struct export *e = export_first (); e; e = export_next (e))
    if (image_file_id_equal (&e->img->file_id, &id))
      return error_set (EEXIST, "export %s: %s is already exported as %s "
                        "(%s)", spec->name, spec->path, e->spec.name,
                        e->spec.path);
  return 0;
}
