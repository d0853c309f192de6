/* SPDX-License-Identifier: MIT */
/* The export registry: what exports there are, and their lifetimes
 * (export.h).  The data path is the stack, export-stack.c; the NBD
 * server's view, export-nbd.c. */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/log.h"
#include "export.h"
#include "ha/ha.h"
#include "mirror.h"
#include "target.h"

static struct {
  struct ioq *ioq;
  char *state_dir;
  struct list exports;
  unsigned count;
  unsigned draining;            /* removed, not yet freed */
  struct list removed;          /* those, in removal order */
  struct loop_deferred reap;    /* frees the unused ones, from the loop */
  void (*on_drained) (void);
  bool plaintext_peers;         /* --insecure */
} reg = { .exports = LIST_INIT (reg.exports),
          .removed = LIST_INIT (reg.removed) };

int
export_registry_init (struct ioq *ioq, const char *state_dir)
{
  reg.ioq = ioq;
  free (reg.state_dir);
  reg.state_dir = strdup (state_dir);
  return reg.state_dir ? 0 : error_set (ENOMEM, "strdup");
}

void
export_registry_allow_plaintext_peers (bool allow)
{
  reg.plaintext_peers = allow;
}

static struct bitmap_store *
open_bitmap (const struct export_spec *spec, uint64_t size)
{
  char path[4096];
  struct bitmap_store_opts o = {
    .path = path, .image_path = spec->path, .size = size,
    .granularity = (uint32_t) spec->granularity, .strict = spec->bitmap_strict,
    .extent = spec->bitmap_extent != EXPORT_BITMAP_EXTENT_AUTO ? spec->bitmap_extent
      : spec->peer ? 0 : EXPORT_DEFAULT_BITMAP_EXTENT,
  };

  if ((size_t) snprintf (path, sizeof path, "%s/%s.bitmap", reg.state_dir,
                         spec->name) >= sizeof path) {
    error_set (ENAMETOOLONG, "bitmap path for export %s", spec->name);
    return NULL;
  }
  return bitmap_store_open (&o, reg.ioq);
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

/* A mirror job saved by a previous run resumes from the bitmap; an
 * export with a peer= and no saved job starts a full sync to it. */
static void
resume_mirror_as (struct export *e, bool plain_peer)
{
  char path[4200], line[4200], uri[4096] = "", mode[16] = "sync";
  unsigned long long bw = 0;
  bool resume = false;
  FILE *fp;

  if (e->bitmap == NULL)
    return;
  snprintf (path, sizeof path, "%s.mirror", export_state_prefix (e));
  fp = fopen (path, "r");
  if (fp) {
    while (fgets (line, sizeof line, fp)) {
      line[strcspn (line, "\n")] = '\0';
      if (strncmp (line, "uri=", 4) == 0)
        snprintf (uri, sizeof uri, "%.4000s", line + 4);
      else if (strncmp (line, "mode=", 5) == 0)
        snprintf (mode, sizeof mode, "%.8s", line + 5);
      else if (strncmp (line, "bandwidth=", 10) == 0)
        bw = strtoull (line + 10, NULL, 10);
    }
    fclose (fp);
    resume = uri[0] != '\0';
  }
  if (e->ha && !plain_peer)
    return;                     /* the HA pair decides (ha.h) */
  if (!resume && e->spec.peer && e->spec.role == ROLE_PRIMARY) {
    snprintf (uri, sizeof uri, "%s", e->spec.peer);
    snprintf (mode, sizeof mode, "%s", mirror_mode_name (e->spec.mode));
    bw = e->spec.bandwidth;
  }
  if (uri[0] == '\0')
    return;
  if (export_mirror_start (e, uri, NULL, 0, strcmp (mode, "async") == 0, bw, resume,
                           NULL, NULL) == -1)
    log_err ("export %s: mirror to %s: %s", e->spec.name, uri, error_get ());
}

static void
resume_mirror (struct export *e)
{
  resume_mirror_as (e, false);
}

void
export_mirror_plain_peer (struct export *e)
{
  if (e->mirror == NULL || !mirror_active (e->mirror))
    resume_mirror_as (e, true);
}

struct export *
export_add (const struct export_spec *spec, bool from_config)
{
  struct export *e;

  if (export_spec_validate (spec) == -1)
    return NULL;
  if (export_find (spec->name)) {
    error_code (EEXIST, "export %s already exists", spec->name);
    return NULL;
  }
  if (export_check_file (spec) == -1)
    return NULL;
  e = calloc (1, sizeof *e);
  if (e == NULL) {
    error_set (ENOMEM, "allocating export");
    return NULL;
  }
  if (export_spec_copy (&e->spec, spec) == -1) {
    free (e);
    return NULL;
  }
  e->img = image_open (spec->path, spec->format, spec->readonly, spec->cache,
                       reg.ioq);
  if (e->img != NULL && e->img->size == 0) {
    /* Nothing to serve or mirror, and no client can use it. */
    error_code (EINVAL, "%s is empty (0 bytes): give the image a size "
                "first (qemu-img create, or truncate -s)", spec->path);
    image_close (e->img);
    e->img = NULL;
  }
  if (e->img == NULL) {
    error_prefix ("export %s", spec->name);
    export_spec_clear (&e->spec);
    free (e);
    return NULL;
  }
  e->bitmap = spec->no_bitmap ? NULL : open_bitmap (spec, e->img->size);
  if (e->bitmap == NULL && !spec->no_bitmap) {
    error_prefix ("export %s", spec->name);
    image_close (e->img);
    export_spec_clear (&e->spec);
    free (e);
    return NULL;
  }
  export_identity_init (e);
  export_build_stack (e);
  e->refs = 1;                  /* the registry's */
  e->from_config = from_config;
  list_init (&e->clients);
  if (asprintf (&e->state_prefix, "%s/%s", reg.state_dir, spec->name) == -1)
    e->state_prefix = NULL;
  if (spec->peer && export_open_ha (e, reg.plaintext_peers) == -1) {
    error_prefix ("export %s", spec->name);
    if (bitmap_store_close (e->bitmap) == -1)
      log_err ("export %s: %s", spec->name, error_get ());
    image_close (e->img);
    free (e->state_prefix);
    export_spec_clear (&e->spec);
    free (e);
    return NULL;
  }
  list_add_tail (&reg.exports, &e->node);
  reg.count++;
  resume_mirror (e);
  log_info ("export %s: %s (%s, %llu bytes%s%s)", spec->name, spec->path,
            image_format_name (e->img->format),
            (unsigned long long) e->img->size,
            e->img->direct ? ", O_DIRECT"
            : spec->cache == IMAGE_CACHE_WRITEBACK ? ", cache=writeback" : ", buffered",
            export_writable (e) ? "" : ", read-only");
  return e;
}

void
export_ref (struct export *e)
{
  e->refs++;
}

/* The registry's teardown of a removed export nothing uses. */
static void
free_export (struct export *e)
{
  log_debug ("export %s: freed", e->spec.name);
  list_del (&e->node);
  ha_close (e->ha);
  mirror_free (e->mirror);
  free (e->state_prefix);
  if (bitmap_store_close (e->bitmap) == -1)
    log_err ("export %s: %s", e->spec.name, error_get ());
  image_close (e->img);
  export_spec_clear (&e->spec);
  free (e);
  reg.draining--;
  if (reg.on_drained)
    reg.on_drained ();
}

void
export_registry_reap (void)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &reg.removed) {
    struct export *e = list_entry (pos, struct export, node);
    if (e->refs == 0)
      free_export (e);
  }
}

static void
reap_later (void *opaque)
{
  export_registry_reap ();
}

void
export_unref (struct export *e)
{
  assert (e->refs > 0);
  if (--e->refs > 0)
    return;
  /* Only a removed export loses its last reference (the registry holds
   * one while it is listed); the registry frees it, never the caller,
   * which may be a connection or a job with more to do on the way out. */
  assert (e->removed);
  loop_defer (ioq_loop (reg.ioq), &reg.reap, reap_later, NULL);
}

unsigned
export_draining (void)
{
  return reg.draining;
}

void
export_on_drained (void (*fn) (void))
{
  reg.on_drained = fn;
}

static void
unregister (struct export *e)
{
  struct list *pos, *tmp;

  e->removed = true;
  list_del (&e->node);
  list_add_tail (&reg.removed, &e->node);
  reg.count--;
  reg.draining++;
  mirror_cancel (e->mirror, false);   /* the export is gone: so is the job */
  /* Clients finish what they sent, then disconnect; each drops its
   * reference on the way out. */
  list_for_each_safe (pos, tmp, &e->clients) {
    struct server_client *c = list_entry (pos, struct server_client, node);
    c->shutdown (c);
  }
  /* The registry's own reference.  Unused, the export goes now (a
   * reload may reopen its file at once); otherwise the last user's
   * export_unref() has the registry free it later, from the loop. */
  assert (e->refs > 0);
  if (--e->refs == 0)
    free_export (e);
}

int
export_remove (const char *name)
{
  struct export *e = export_find (name);

  if (e == NULL)
    return error_code (ENOENT, "export %s not found", name);
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
export_attach (struct export *e, struct server_client *c, bool peer)
{
  list_add_tail (&e->clients, &c->node);
  e->nr_clients++;
  if (!peer && e->ha)
    ha_clients_changed (e->ha, ++e->nr_guests);
}

void
export_detach (struct export *e, struct server_client *c, bool peer)
{
  list_del (&c->node);
  e->nr_clients--;
  if (!peer && e->ha)
    ha_clients_changed (e->ha, --e->nr_guests);
  /* The peer's replication connection dropped without a goodbye: its
   * process may have died (kill -9, a crash).  Ask now, not after
   * peer-timeout: an admin promoting this side must not be refused
   * because of a ghost. */
  if (peer && !c->closed_cleanly && e->ha)
    ha_replication_lost (e->ha);
}

void
export_release_held (struct export *e)
{
  gate_release (&e->gate);
}

void
export_cut_over (struct export *e)
{
  e->cut_over = true;
}

const char *
export_state_prefix (const struct export *e)
{
  return e->state_prefix ? e->state_prefix : e->spec.name;
}

int
export_mirror_start (struct export *e, const char *uri, const char *label,
                     unsigned timeout_ms, bool async,
                     uint64_t bandwidth, bool resume,
                     void (*started) (void *opaque, int err), void *opaque)
{
  struct mirror_opts o = { .uri = uri, .label = label, .timeout_ms = timeout_ms,
                           .async = async, .bandwidth = bandwidth,
                           .resume = resume, .started = started, .opaque = opaque };
  struct mirror *m;

  if (e->mirror && mirror_active (e->mirror))
    return error_code (EBUSY, "export %s already mirrors to a target "
                       "(mirror cancel it first)", e->spec.name);
  if (e->mirror && !mirror_idle (e->mirror))
    return error_code (EBUSY, "export %s: the previous mirror is still "
                       "stopping", e->spec.name);
  m = mirror_start (e, &o);
  if (m == NULL)
    return -1;
  mirror_free (e->mirror);
  e->mirror = m;
  return 0;
}

bool
export_stop_mirrors (void)
{
  bool idle = true;

  for (struct export *e = export_first (); e; e = export_next (e)) {
    mirror_cancel (e->mirror, true);
    idle = idle && mirror_idle (e->mirror);
  }
  return idle;
}

struct tracker *
export_tracker (struct export *e)
{
  return e->bitmap ? &e->trk : NULL;
}

void
export_bitmap_mark (struct export *e, uint64_t offset, uint64_t length)
{
  tracker_mark (export_tracker (e), offset, length);
}

void
export_bitmap_clear (struct export *e, uint64_t offset, uint64_t length)
{
  tracker_clear (export_tracker (e), offset, length);
}

uint64_t
export_dirty_bytes (const struct export *e)
{
  return e->bitmap ? tracker_dirty_bytes (&e->trk) : 0;
}
