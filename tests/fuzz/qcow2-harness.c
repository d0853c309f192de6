/* SPDX-License-Identifier: MIT */
/* The qcow2 fuzz targets' common ground (qcow2-harness.h): every
 * request runs to completion on the loop before the next, so an input
 * replays the same way each time. */
#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "common/ioq.h"
#include "common/log.h"
#include "common/loop.h"
#include "fuzz.h"
#include "qcow2-harness.h"

static struct loop *loop;
static struct ioq *ioq;

struct waiter {
  bool finished;
  int err;
};

void
qcow2_harness_init (const char *ident)
{
  log_init (ident, false, FUZZ_LOG_VERBOSITY);
  loop = loop_new ();
  ioq = loop ? ioq_new (loop, 64, 2) : NULL;
  if (ioq == NULL) {
    fprintf (stderr, "%s: setup: %s\n", ident, error_get ());
    abort ();
  }
}

struct ioq *
qcow2_harness_ioq (void)
{
  return ioq;
}

static void
on_done (struct image_io *io, int err)
{
  struct waiter *w = io->opaque;

  w->finished = true;
  w->err = err;
  loop_stop (loop);
}

int
qcow2_harness_run (struct image *img, enum image_cmd cmd, unsigned flags,
                   uint64_t offset, uint64_t count, void *buf,
                   struct image_extents *ext)
{
  struct image_io io;
  struct waiter w = { false, 0 };

  memset (&io, 0, sizeof io);
  io.cmd = cmd;
  io.flags = flags;
  io.offset = offset;
  io.count = count;
  io.buf = buf;
  io.extents = ext;
  io.done = on_done;
  io.opaque = &w;
  image_submit (img, &io);
  while (!w.finished)
    if (loop_run (loop) == -1)
      abort ();
  return w.err;
}

int
qcow2_harness_memfd (const uint8_t *data, size_t size, char *path,
                     size_t pathlen)
{
  int fd = memfd_create ("fuzz-qcow2", 0);

  if (fd == -1)
    abort ();
  for (size_t done = 0; done < size; ) {
    ssize_t n = write (fd, data + done, size - done);
    if (n <= 0)
      abort ();
    done += (size_t) n;
  }
  snprintf (path, pathlen, "/proc/self/fd/%d", fd);
  return fd;
}

void
qcow2_harness_finish (void)
{
  ioq_free (ioq);
  loop_free (loop);
  bufpool_drain ();
}
