/* SPDX-License-Identifier: MIT */
/* The export registry and the export data path. */
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
  void (*on_drained) (void);
  bool plaintext_peers;         /* --insecure */
} reg = { .exports = LIST_INIT (reg.exports) };

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
export_lookup_for_client (const char *name)
{
  char base[4200];

  if (ha_parse_claim_name (name, base, sizeof base))
    name = base;                /* the HA peer replicating */
  if (name[0] == '\0')
    return reg.count == 1 ? export_first () : NULL;
  return export_find (name);
}

int
export_accept_peer (struct export *e, const char *name, const char *tls_user,
                    char *why, size_t len)
{
  char base[4200];

  if (!ha_parse_claim_name (name, base, sizeof base))
    return 0;
  if (e->ha == NULL) {
    snprintf (why, len, "export %s has no HA peer", e->spec.name);
    return -1;
  }
  return ha_accept_claim (e->ha, name, tls_user, why, len) == 0 ? 1 : -1;
}

int
export_peer_state (struct export *e, char *buf, size_t len)
{
  return e->ha ? ha_peer_state (e->ha, buf, len) : -1;
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

static int
open_ha (struct export *e)
{
  char path[4200], user[256];
  struct ha_opts o = {
    .state_path = path, .peer_uri = e->spec.peer,
    .initial_role = e->spec.role == ROLE_SECONDARY ? HA_SECONDARY : HA_PRIMARY,
    .timeout_ms = e->spec.peer_timeout_ms, .fence_hook = e->spec.fence_peer,
    .peer_user = e->spec.peer_user, .plaintext_claims = reg.plaintext_peers,
  };

  /* Both sides describe the pair alike: by default the peer replicates
   * as the identity this side presents to it. */
  if (o.peer_user == NULL && target_tls_identity (e->spec.peer, user, sizeof user) == 0)
    o.peer_user = user;

  if (e->bitmap == NULL)
    return error_code (EINVAL, "a peer needs the dirty bitmap (bitmap=false)");
  if (e->state_prefix == NULL)
    return error_set (ENOMEM, "allocating");
  snprintf (path, sizeof path, "%s.ha", e->state_prefix);
  e->ha = ha_open (e, &o);
  return e->ha ? 0 : -1;
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
  e->refs = 1;                  /* the registry's */
  e->from_config = from_config;
  list_init (&e->clients);
  list_init (&e->held);
  if (asprintf (&e->state_prefix, "%s/%s", reg.state_dir, spec->name) == -1)
    e->state_prefix = NULL;
  if (spec->peer && open_ha (e) == -1) {
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

void
export_unref (struct export *e)
{
  assert (e->refs > 0);
  if (--e->refs > 0)
    return;
  log_debug ("export %s: freed", e->spec.name);
  ha_close (e->ha);
  mirror_free (e->mirror);
  free (e->state_prefix);
  if (bitmap_store_close (e->bitmap) == -1)
    log_err ("export %s: %s", e->spec.name, error_get ());
  image_close (e->img);
  export_spec_clear (&e->spec);
  if (e->removed) {
    reg.draining--;
    if (reg.on_drained)
      reg.on_drained ();
  }
  free (e);
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
  reg.count--;
  reg.draining++;
  mirror_cancel (e->mirror, false);   /* the export is gone: so is the job */
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
export_attach (struct export *e, struct export_client *c)
{
  list_add_tail (&e->clients, &c->node);
  e->nr_clients++;
  if (!c->peer && e->ha)
    ha_clients_changed (e->ha, ++e->nr_guests);
}

void
export_detach (struct export *e, struct export_client *c)
{
  list_del (&c->node);
  e->nr_clients--;
  if (!c->peer && e->ha)
    ha_clients_changed (e->ha, --e->nr_guests);
  /* The peer's replication connection dropped without a goodbye: its
   * process may have died (kill -9, a crash).  Ask now, not after
   * peer-timeout: an admin promoting this side must not be refused
   * because of a ghost. */
  if (c->peer && !c->closed_cleanly && e->ha)
    ha_replication_lost (e->ha);
}

/* Not "!removed": a removed export's clients are draining, and the
 * writes they sent before the removal must still complete (the
 * server refuses later ones with ESHUTDOWN). */
bool
export_writable (const struct export *e)
{
  return !e->spec.readonly && !e->img->readonly && !e->cut_over
    && (e->ha ? ha_is_primary (e->ha) : e->spec.role == ROLE_PRIMARY);
}

bool
export_writable_by (const struct export *e, const struct export_client *c)
{
  if (c && c->peer)
    return !e->spec.readonly && !e->img->readonly && e->ha
      && !ha_is_primary (e->ha);
  return export_writable (e);
}

bool
export_looks_writable_by (const struct export *e, const struct export_client *c)
{
  return export_writable_by (e, c)
    || (!(c && c->peer) && e->ha && ha_looks_writable (e->ha)
        && !e->spec.readonly && !e->img->readonly);
}

uint64_t
export_size (const struct export *e)
{
  return e->img->size;
}

static bool
is_write (enum image_cmd cmd)
{
  return cmd == IMAGE_WRITE || cmd == IMAGE_TRIM || cmd == IMAGE_ZERO;
}

/* The write is done everywhere it must be: acknowledge it. */
static void
write_finish (struct export_io *x, int err)
{
  struct export *e = x->exp;    /* X may be freed by the caller's done() */
  struct image_io *io = &x->io;

  io->done = x->done;
  io->opaque = x->opaque;
  e->writes_in_flight--;
  io->done (io, err);
  mirror_guest_write_done (e->mirror);
  export_unref (e);
}

/* FORWARDED: the target has this write too, so the bitmap need not
 * send it again; otherwise it keeps the region for the next pass. */
static void
mirrored (struct export_io *x, int forwarded)
{
  if (forwarded == 0)
    bitmap_store_end_write_clean (x->exp->bitmap, &x->intent);
  else
    bitmap_store_end_write (x->exp->bitmap, &x->intent);
  write_finish (x, x->err);
}

/* The write completed locally: the live bitmap learns of it; in
 * write-blocking mode the target must have it too before the ack. */
static void both_done (struct export_io *x);

static void
write_done (struct image_io *io, int err)
{
  struct export_io *x = io->opaque;
  struct export *e = x->exp;

  x->err = err;
  if (x->parallel) {
    if (--x->pending == 0)
      both_done (x);
    return;
  }
  /* The write intent stays until the mirror is done with the write:
   * only then may a forwarded region's bit go. */
  if (err == 0 && mirror_guest_write (e->mirror, x, mirrored) == 1)
    return;
  bitmap_store_end_write (e->bitmap, &x->intent);
  write_finish (x, err);
}

/* The write's region is recorded on disk (or could not be). */
/* Sync mirroring: the local write and the target's at once (the
 * write intent is on disk already), acknowledged when both are done —
 * a guest waits for the slower of the two, not their sum. */
static void
both_done (struct export_io *x)
{
  if (x->err == 0 && x->forwarded == 0)
    bitmap_store_end_write_clean (x->exp->bitmap, &x->intent);
  else
    bitmap_store_end_write (x->exp->bitmap, &x->intent);
  write_finish (x, x->err);
}

static void
forward_done (struct export_io *x, int forwarded)
{
  x->forwarded = forwarded;
  if (--x->pending == 0)
    both_done (x);
}

static void
launch (struct export_io *x)
{
  struct export *e = x->exp;

  x->forwarded = ENOTCONN;
  x->pending = 1;
  x->parallel = mirror_forwards_writes (e->mirror);
  if (x->parallel) {
    x->pending++;
    if (mirror_guest_write (e->mirror, x, forward_done) == 0) {
      x->pending--;
      x->parallel = false;
    }
  }
  image_submit (e->img, &x->io);
}

static void
intent_ready (struct bitmap_intent *in, int err)
{
  struct export_io *x = in->opaque;

  if (err) {
    log_err ("export %s: failing a write: its dirty region could not be "
             "recorded", x->exp->spec.name);
    image_io_complete_later (&x->io, err);
    return;
  }
  launch (x);
}

static void
start_write (struct export *e, struct export_io *x)
{
  struct image_io *io = &x->io;

  /* Write intent: the region is dirty on disk before the data moves. */
  export_ref (e);
  e->writes_in_flight++;
  x->exp = e;
  x->done = io->done;
  x->opaque = io->opaque;
  io->done = write_done;
  io->opaque = x;
  io->img = e->img;
  x->intent.ready = intent_ready;
  x->intent.opaque = x;
  x->parallel = false;
  if (bitmap_store_begin_write (e->bitmap, &x->intent, io->offset, io->count) == 1)
    launch (x);
}

static void
flush_mirrored (struct export_io *x, int err)
{
  struct image_io *io = &x->io;
  struct export *e = x->exp;

  io->done = x->done;
  io->opaque = x->opaque;
  io->done (io, x->err);
  export_unref (e);
}

/* A guest FLUSH in write-blocking mode covers the target too. */
static void
flush_done (struct image_io *io, int err)
{
  struct export_io *x = io->opaque;

  x->err = err;
  if (err == 0 && mirror_guest_flush (x->exp->mirror, x, flush_mirrored) == 1)
    return;
  flush_mirrored (x, err);
}

static void
start_flush (struct export *e, struct export_io *x)
{
  struct image_io *io = &x->io;

  export_ref (e);
  x->exp = e;
  x->done = io->done;
  x->opaque = io->opaque;
  io->done = flush_done;
  io->opaque = x;
  image_submit (e->img, io);
}

/* Answers IO with ERR without touching the image. */
static void
refuse (struct export *e, struct image_io *io, int err)
{
  io->img = e->img;
  image_io_complete_later (io, err);
}

void
export_submit (struct export *e, struct export_io *x)
{
  struct image_io *io = &x->io;

  e->requests++;
  if (x->from_peer) {
    /* Replication into a secondary: the primary tracks these regions
     * in its own bitmap, ours only counts our own clients' writes. */
    if (is_write (io->cmd) && (e->ha == NULL || ha_is_primary (e->ha)
                               || e->spec.readonly)) {
      refuse (e, io, EPERM);
      return;
    }
    if (io->cmd == IMAGE_WRITE)
      e->bytes_written += io->count;
    image_submit (e->img, io);
    return;
  }
  if (is_write (io->cmd) && !export_writable (e)) {
    refuse (e, io, EPERM);
    return;
  }
  if (is_write (io->cmd) && e->ha && ha_before_client_write (e->ha) == -1) {
    log_err ("%s", error_get ());
    refuse (e, io, EIO);
    return;
  }
  if (io->cmd == IMAGE_READ)
    e->bytes_read += io->count;
  else if (io->cmd == IMAGE_WRITE)
    e->bytes_written += io->count;
  if (io->cmd == IMAGE_FLUSH && e->mirror) {
    start_flush (e, x);
    return;
  }
  if (!is_write (io->cmd) || io->count == 0 || e->bitmap == NULL
      || io->offset >= e->img->size || io->count > e->img->size - io->offset) {
    image_submit (e->img, io);  /* image_submit() refuses bad ranges */
    return;
  }
  if (mirror_holds_writes (e->mirror)) {
    /* A cut-over is draining: this write waits for its outcome. */
    list_add_tail (&e->held, &x->held_node);
    return;
  }
  start_write (e, x);
}

void
export_release_held (struct export *e)
{
  while (!list_empty (&e->held)) {
    struct export_io *x = list_entry (e->held.next, struct export_io, held_node);
    list_del (&x->held_node);
    x->io.img = e->img;
    if (!export_writable (e))
      image_io_complete_later (&x->io, EPERM);
    else
      start_write (e, x);
  }
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

int
export_dirty_extents (struct export *e, uint64_t offset, uint64_t count,
                      struct image_extents *out)
{
  struct dirty_bitmap *bm = e->bitmap ? bitmap_store_live (e->bitmap) : NULL;
  uint64_t pos = offset, end = offset + count, start, len;

  while (pos < end) {
    if (bm == NULL)
      return image_extents_add (out, pos, end - pos, 0) < 0 ? -1 : 0;
    int r;
    if (dirty_bitmap_next_dirty (bm, pos, end - pos, &start, &len) == 1)
      return image_extents_add (out, pos, end - pos, 0) < 0 ? -1 : 0;
    r = image_extents_add (out, pos, start - pos, 0);
    if (r == 0)
      r = image_extents_add (out, start, len, 1);
    if (r != 0)
      return r < 0 ? -1 : 0;    /* full: the list ends early */
    pos = start + len;
  }
  return 0;
}

void
export_bitmap_clear (struct export *e, uint64_t offset, uint64_t length)
{
  if (e->bitmap)
    bitmap_store_clear (e->bitmap, offset, length);
}

uint64_t
export_dirty_bytes (const struct export *e)
{
  return e->bitmap ? bitmap_store_dirty_bytes (e->bitmap) : 0;
}
