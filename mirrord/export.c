/* SPDX-License-Identifier: MIT */
/* The export registry and the export data path. */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "export.h"

static struct {
  struct ioq *ioq;
  struct list exports;
  unsigned count;
} reg = { .exports = LIST_INIT (reg.exports) };

int
export_registry_init (struct ioq *ioq)
{
  reg.ioq = ioq;
  return 0;
}

struct export *
export_find (const char *name)
{
  for (struct export *e = export_first (); e; e = export_next (e))
    if (strcmp (e->spec.name, name) == 0)
      return e;
  return NULL;
}

struct export *
export_lookup_for_client (const char *name)
{
  if (name[0] == '\0')
    return reg.count == 1 ? export_first () : NULL;
  return export_find (name);
}

struct export *
export_first (void)
{
  return list_empty (&reg.exports) ? NULL
    : list_entry (reg.exports.next, struct export, node);
}

struct export *
export_next (struct export *e)
{
  return e->node.next == &reg.exports ? NULL
    : list_entry (e->node.next, struct export, node);
}

unsigned
export_count (void)
{
  return reg.count;
}

struct export *
export_add (const struct export_spec *spec, bool from_config)
{
  struct export *e;

  if (export_spec_validate (spec) == -1)
    return NULL;
  if (export_find (spec->name)) {
    error_set (EEXIST, "export %s already exists", spec->name);
    return NULL;
  }
  e = calloc (1, sizeof *e);
  if (e == NULL) {
    error_set (ENOMEM, "allocating export");
    return NULL;
  }
  if (export_spec_copy (&e->spec, spec) == -1) {
    free (e);
    return NULL;
  }
  e->img = image_open (spec->path, spec->format, spec->readonly, reg.ioq);
  if (e->img == NULL) {
    error_prefix ("export %s", spec->name);
    export_spec_clear (&e->spec);
    free (e);
    return NULL;
  }
  e->refs = 1;                  /* the registry's */
  e->from_config = from_config;
  list_init (&e->clients);
  list_add_tail (&reg.exports, &e->node);
  reg.count++;
  log_info ("export %s: %s (%s, %llu bytes%s%s)", spec->name, spec->path,
            image_format_name (e->img->format),
            (unsigned long long) e->img->size,
            e->img->direct ? ", O_DIRECT" : ", buffered",
            export_writable (e) ? "" : ", read-only");
  return e;
}

void
export_ref (struct export *e)
{
  e->refs++;
}

void
export_unref (struct export *e)
{
  assert (e->refs > 0);
  if (--e->refs > 0)
    return;
  log_debug ("export %s: freed", e->spec.name);
  image_close (e->img);
  export_spec_clear (&e->spec);
  free (e);
}

static void
unregister (struct export *e)
{
  struct list *pos, *tmp;

  e->removed = true;
  list_del (&e->node);
  reg.count--;
  /* Clients finish what they sent, then disconnect; each drops its
   * reference on the way out. */
  list_for_each_safe (pos, tmp, &e->clients) {
    struct export_client *c = list_entry (pos, struct export_client, node);
    c->ops->shutdown (c);
  }
  export_unref (e);
}

int
export_remove (const char *name)
{
  struct export *e = export_find (name);

  if (e == NULL)
    return error_set (ENOENT, "export %s not found", name);
  log_info ("export %s: removed (%u client%s disconnecting)", name,
            e->nr_clients, e->nr_clients == 1 ? "" : "s");
  unregister (e);
  return 0;
}

void
export_remove_all (void)
{
  struct export *e;

  while ((e = export_first ()) != NULL)
    unregister (e);
}

void
export_attach (struct export *e, struct export_client *c)
{
  list_add_tail (&e->clients, &c->node);
  e->nr_clients++;
}

void
export_detach (struct export *e, struct export_client *c)
{
  list_del (&c->node);
  e->nr_clients--;
}

/* Not "!removed": a removed export's clients are draining, and the
 * writes they sent before the removal must still complete (the
 * server refuses later ones with ESHUTDOWN). */
bool
export_writable (const struct export *e)
{
  return !e->spec.readonly && !e->img->readonly
    && e->spec.role == ROLE_PRIMARY;
}

uint64_t
export_size (const struct export *e)
{
  return e->img->size;
}

void
export_submit (struct export *e, struct image_io *io)
{
  bool writes = io->cmd == IMAGE_WRITE || io->cmd == IMAGE_TRIM
    || io->cmd == IMAGE_ZERO;

  e->requests++;
  if (writes && !export_writable (e)) {
    io->img = e->img;
    image_io_complete_later (io, EPERM);
    return;
  }
  if (io->cmd == IMAGE_WRITE)
    e->bytes_written += io->count;
  else if (io->cmd == IMAGE_READ)
    e->bytes_read += io->count;
  image_submit (e->img, io);
}
