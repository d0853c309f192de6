/* SPDX-License-Identifier: MIT */
/* A memory disk behind the block interface (blk-mem.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "blk-mem.h"

#define BLOCK 4096u

static struct blk_mem *
of (struct blk *b)
{
  return (struct blk_mem *) b;
}

static bool
all_zero (const uint8_t *p, uint64_t n)
{
  for (uint64_t i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

static int
extents (struct blk_mem *m, uint64_t off, uint64_t count,
         struct image_extents *e)
{
  for (uint64_t pos = off; pos < off + count; ) {
    uint64_t end = (pos / BLOCK + 1) * BLOCK, len;
    if (end > off + count)
      end = off + count;
    len = end - pos;
    uint32_t f = all_zero (m->data + pos, len)
      ? IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO : 0;
    int r = image_extents_add (e, pos, len, f);
    if (r != 0)
      return r < 0 ? ENOMEM : 0;
    pos = end;
  }
  return 0;
}

static int
check (struct blk_mem *m, const struct image_io *io)
{
  bool writes = blk_cmd_writes (io->cmd);

  if (io->flags & ~IMAGE_FLAGS_ALL)
    return EINVAL;
  if (writes && m->readonly)
    return EPERM;
  if (io->cmd == IMAGE_FLUSH)
    return 0;
  if (io->offset > m->size || io->count > m->size - io->offset)
    return writes ? ENOSPC : EINVAL;
  return 0;
}

static int
execute (struct blk_mem *m, struct image_io *io)
{
  int err = check (m, io);

  if (err)
    return err;
  if (io->extents)
    image_extents_reset (io->extents);
  switch (io->cmd) {
  case IMAGE_READ:
    memcpy (io->buf, m->data + io->offset, io->count);
    if (io->flags & IMAGE_SPARSE)
      return extents (m, io->offset, io->count, io->extents);
    return 0;
  case IMAGE_WRITE:
    memcpy (m->data + io->offset, io->buf, io->count);
    return 0;
  case IMAGE_ZERO: case IMAGE_TRIM:
    memset (m->data + io->offset, 0, io->count);
    return 0;
  case IMAGE_EXTENTS:
    return extents (m, io->offset, io->count, io->extents);
  case IMAGE_FLUSH: case IMAGE_CACHE:
    return 0;
  }
  return EINVAL;
}

static void
completed (struct image_io *io, int err)
{
  struct blk_mem *m = io->opaque;

  m->in_flight--;
  blk_req_return (blk_req_of (io), err);
}

static void
finish (struct blk_mem *m, struct blk_req *req)
{
  int err = m->fail_err ? m->fail_err : execute (m, &req->io);

  m->fail_err = 0;
  blk_complete_later (&m->blk, req, err);
}

static void
submit (struct blk *b, struct blk_req *req)
{
  struct blk_mem *m = of (b);

  m->in_flight++;
  if (req->io.cmd <= IMAGE_EXTENTS)
    m->nr[req->io.cmd]++;
  m->last_flags = req->io.flags;
  m->last_offset = req->io.offset;
  m->last_count = req->io.count;
  blk_req_push (req, completed, m);
  if (m->hold) {
    list_add_tail (&m->held, &req->held_node);
    return;
  }
  finish (m, req);
}

static unsigned
flags (struct blk *b)
{
  return of (b)->readonly ? BLK_CAN_ALL | BLK_READ_ONLY : BLK_CAN_ALL;
}

static uint64_t
size (struct blk *b)
{
  return of (b)->size;
}

static const struct blk_ops mem_ops = {
  .name = "memory",
  .read = submit, .write = submit, .zero = submit, .trim = submit,
  .flush = submit, .block_status = submit, .cache = submit,
  .flags = flags, .size = size,
};

int
blk_mem_init (struct blk_mem *m, struct loop *loop, uint64_t size,
              bool readonly)
{
  memset (m, 0, sizeof *m);
  blk_init (&m->blk, &mem_ops, NULL, loop);
  m->data = calloc (1, size ? size : 1);
  m->size = size;
  m->readonly = readonly;
  list_init (&m->held);
  return m->data ? 0 : -1;
}

void
blk_mem_free (struct blk_mem *m)
{
  free (m->data);
  m->data = NULL;
}

void
blk_mem_release (struct blk_mem *m)
{
  while (!list_empty (&m->held)) {
    struct blk_req *req = list_entry (m->held.next, struct blk_req, held_node);
    list_del (&req->held_node);
    finish (m, req);
  }
}

struct run {
  struct loop *loop;
  const bool *done;
  unsigned ticks;
};

static void
tick (void *opaque)
{
  struct run *r = opaque;

  if ((r->done ? *r->done : r->ticks > 0) || ++r->ticks > 5000)
    loop_stop (r->loop);
}

bool
blk_test_run (struct loop *loop, const bool *done)
{
  struct run r = { .loop = loop, .done = done };
  struct loop_source *t = loop_add_timer (loop, 1, 1, tick, &r);

  if (t == NULL)
    return false;
  if (!done || !*done)
    loop_run (loop);
  loop_source_remove (t);
  return done ? *done : true;
}

static unsigned replies;

static void
test_io_done (struct image_io *io, int err)
{
  struct blk_test_io *x = io->opaque;

  x->done = true;
  x->err = err;
  x->order = ++replies;
}

void
blk_test_prepare (struct blk_test_io *x, enum image_cmd cmd, unsigned flags,
                  uint64_t off, uint64_t count, void *buf)
{
  memset (x, 0, sizeof *x);
  blk_req_init (&x->req);
  x->req.io.cmd = cmd;
  x->req.io.flags = flags;
  x->req.io.offset = off;
  x->req.io.count = count;
  x->req.io.buf = buf;
  x->req.io.done = test_io_done;
  x->req.io.opaque = x;
}

void
blk_test_submit (struct blk *b, struct blk_test_io *x, enum image_cmd cmd,
                 unsigned flags, uint64_t off, uint64_t count, void *buf)
{
  blk_test_prepare (x, cmd, flags, off, count, buf);
  blk_submit (b, &x->req);
}

unsigned
blk_test_replies (void)
{
  return replies;
}

void
blk_test_reset (void)
{
  replies = 0;
}

struct loop *
blk_test_start (struct blk_mem *m, uint64_t size)
{
  struct loop *loop;

  log_init ("test", false, 0);
  loop = loop_new ();
  if (loop && blk_mem_init (m, loop, size, false) == -1) {
    loop_free (loop);
    loop = NULL;
  }
  blk_test_reset ();
  return loop;
}

void
blk_test_end (struct loop *loop, struct blk_mem *m)
{
  blk_mem_free (m);
  loop_free (loop);
}
