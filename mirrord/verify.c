/* SPDX-License-Identifier: MIT */
/* mirrorctl verify: compare an export with its peer, block by block
 * (verify.h). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <libnbd.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/log.h"
#include "mirrord/export.h"
#include "mirrord/target.h"
#include "mirrord/tls-worker.h"
#include "verify.h"

#define CHUNK (1u << 20)
#define MAX_RANGES 1024
#define STALL_MS 30000

struct verify {
  struct export *e;
  struct loop *loop;
  struct nbd_handle *h;
  struct loop_source *src, *timer;
  struct loop_deferred later, first_look;
  uint64_t size, pos, len, block;
  uint8_t *local, *remote;
  struct image_io io;
  unsigned pending;
  bool started, finished, local_busy;
  char why[256];
  int err;
  uint64_t progress_ns;
  uint64_t differing, last_off, last_len;
  json_object *ranges;
  verify_done_fn done;
  void *opaque;
};

static void
v_free (struct verify *v)
{
  if (v->src)
    loop_source_remove (v->src);
  if (v->timer)
    loop_source_remove (v->timer);
  tls_worker_close (v->h);
  loop_cancel_deferred (v->loop, &v->later);
  loop_cancel_deferred (v->loop, &v->first_look);
  if (v->local)
    bufpool_put (v->local, CHUNK);
  if (v->remote)
    bufpool_put (v->remote, CHUNK);
  json_object_put (v->ranges);
  export_unref (v->e);
  free (v);
}

static void
add_last_range (struct verify *v)
{
  json_object *r;

  if (v->last_len == 0 || json_object_array_length (v->ranges) >= MAX_RANGES)
    return;
  r = json_object_new_object ();
  json_object_object_add (r, "offset", json_object_new_int64 ((int64_t) v->last_off));
  json_object_object_add (r, "length", json_object_new_int64 ((int64_t) v->last_len));
  json_object_array_add (v->ranges, r);
}

static void
deliver (void *opaque)
{
  struct verify *v = opaque;
  json_object *o = NULL;

  if (v->err == 0) {
    add_last_range (v);
    o = json_object_new_object ();
    json_object_object_add (o, "export", json_object_new_string (v->e->spec.name));
    json_object_object_add (o, "compared_bytes", json_object_new_int64 ((int64_t) v->size));
    json_object_object_add (o, "block_size", json_object_new_int64 ((int64_t) v->block));
    json_object_object_add (o, "differing_blocks", json_object_new_int64 ((int64_t) v->differing));
    json_object_object_add (o, "differing_bytes",
                            json_object_new_int64 ((int64_t) (v->differing * v->block)));
    json_object_object_add (o, "ranges", json_object_get (v->ranges));
    log_info ("export %s: verify: %llu differing blocks of %llu bytes",
              v->e->spec.name, (unsigned long long) v->differing,
              (unsigned long long) v->block);
  }
  if (v->err)
    error_set (v->err, "verify against the peer failed: %s",
               v->why[0] ? v->why : strerror (v->err));
  v->done (v->opaque, v->err, o);
  v_free (v);
}

static void
finish (struct verify *v, int err)
{
  if (v->finished)
    return;
  v->finished = true;
  v->err = err;
  if (v->src) {
    loop_source_remove (v->src);
    v->src = NULL;
  }
  /* The image still owns our buffer while a read is in flight. */
  if (!v->local_busy)
    loop_defer (v->loop, &v->later, deliver, v);
}

static void
compare (struct verify *v)
{
  for (uint64_t o = 0; o < v->len; o += v->block) {
    uint64_t n = v->len - o < v->block ? v->len - o : v->block;
    if (memcmp (v->local + o, v->remote + o, n) == 0)
      continue;
    v->differing++;
    if (v->last_len && v->last_off + v->last_len == v->pos + o)
      v->last_len += n;
    else {
      add_last_range (v);
      v->last_off = v->pos + o;
      v->last_len = n;
    }
  }
  v->pos += v->len;
}

static void next_chunk (struct verify *v);

/* Both reads of the chunk are in. */
static void
chunk_done (struct verify *v)
{
  if (v->pending || v->finished)
    return;
  if (v->err) {
    finish (v, v->err);
    return;
  }
  compare (v);
  v->progress_ns = loop_now_ns ();
  next_chunk (v);
}

static void
local_done (struct image_io *io, int err)
{
  struct verify *v = io->opaque;

  v->local_busy = false;
  if (v->finished) {
    loop_defer (v->loop, &v->later, deliver, v);
    return;
  }
  if (err && !v->err)
    v->err = err;
  v->pending--;
  chunk_done (v);
}

static int
remote_done (void *user_data, int *error)
{
  struct verify *v = user_data;

  if (*error && !v->err)
    v->err = *error;
  v->pending--;                 /* chunk_done runs after the notify */
  return 1;
}

static void
next_chunk (struct verify *v)
{
  if (v->pos >= v->size) {
    finish (v, 0);
    return;
  }
  v->len = v->size - v->pos < CHUNK ? v->size - v->pos : CHUNK;
  v->pending = 2;
  if (nbd_aio_pread (v->h, v->remote, v->len, v->pos,
                     (nbd_completion_callback) { .callback = remote_done,
                                                 .user_data = v }, 0) == -1) {
    finish (v, EIO);
    return;
  }
  memset (&v->io, 0, sizeof v->io);
  v->io.cmd = IMAGE_READ;
  v->io.offset = v->pos;
  v->io.count = v->len;
  v->io.buf = v->local;
  v->io.done = local_done;
  v->io.opaque = v;
  v->local_busy = true;
  image_submit (v->e->img, &v->io);
}

static void
on_event (void *opaque, uint32_t events)
{
  struct verify *v = opaque;
  int r;

  if (v->finished)              /* a worker's late report */
    return;
  r = target_handle_events (v->loop, v->src, v->h, events, on_event, v,
                            NULL);
  if (r == 1)                   /* with a TLS worker (tls-worker.h) */
    return;
  if (r == -1) {
    const char *e = tls_worker_error (v->h);
    snprintf (v->why, sizeof v->why, "%s", e ? e : "connection lost");
    finish (v, ECONNRESET);
    return;
  }
  if (!v->started && nbd_aio_is_ready (v->h)) {
    v->started = true;
    if ((uint64_t) nbd_get_size (v->h) != v->size) {
      snprintf (v->why, sizeof v->why, "the peer's size differs");
      finish (v, EINVAL);
      return;
    }
    next_chunk (v);
  }
  else if (v->started)
    chunk_done (v);
  if (!v->finished && v->src)
    target_watch_handle (v->src, v->h);
}

/* libnbd may get through the whole negotiation inside the connect call:
 * the idle handle waits for no event, so the loop takes a first look. */
static void
look (void *opaque)
{
  struct verify *v = opaque;

  if (!v->finished && !v->started)
    on_event (v, 0);
}

static void
watchdog (void *opaque)
{
  struct verify *v = opaque;

  if (!v->finished && loop_now_ns () - v->progress_ns > STALL_MS * 1000000ull) {
    snprintf (v->why, sizeof v->why, "the peer stopped answering");
    finish (v, ETIMEDOUT);
  }
}

int
verify_start (struct export *e, const char *uri, verify_done_fn done,
              void *opaque)
{
  struct verify *v = calloc (1, sizeof *v);
  int fd;

  if (v == NULL)
    return error_set (ENOMEM, "allocating a verify");
  export_ref (e);
  v->e = e;
  v->loop = ioq_loop (e->img->ioq);
  v->size = export_size (e);
  v->block = e->spec.granularity;
  v->done = done;
  v->opaque = opaque;
  v->progress_ns = loop_now_ns ();
  v->ranges = json_object_new_array ();
  v->local = bufpool_get (CHUNK);
  v->remote = bufpool_get (CHUNK);
  if (v->ranges == NULL || v->local == NULL || v->remote == NULL
      || (v->h = nbd_create ()) == NULL) {
    v_free (v);
    return error_set (ENOMEM, "allocating a verify");
  }
  if (target_setup_handle (v->h, uri) == -1
      || nbd_aio_connect_uri (v->h, uri) == -1
      || (fd = nbd_aio_get_fd (v->h)) == -1) {
    if (error_errno () == 0 || strstr (error_get (), "TLS") == NULL)
      error_set (0, "%s: %s", uri, nbd_get_error ());
    v_free (v);
    return -1;
  }
  v->src = loop_add_fd (v->loop, fd, EPOLLIN | EPOLLOUT, on_event, v);
  v->timer = loop_add_timer (v->loop, 1000, 1000, watchdog, v);
  if (v->src == NULL || v->timer == NULL) {
    v_free (v);
    return -1;
  }
  target_watch_handle (v->src, v->h);
  loop_defer (v->loop, &v->first_look, look, v);
  return 0;
}
