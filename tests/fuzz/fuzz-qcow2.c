/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the qcow2 driver, and its replay driver.
 *
 * Each input is a qcow2 file.  It is written to a memfd and opened
 * through the project's image API as /proc/self/fd/N, read-only: if
 * the open succeeds, IMAGE_EXTENTS over the first MAX_EXTENTS_BYTES and
 * reads (plain and IMAGE_SPARSE) of the first MAX_READ_BYTES run.  Then
 * a copy is opened writable and gets a few writes, zero writes (with
 * and without MAY_TRIM), trims and a FLUSH at offsets taken from the
 * input, then the same reads.  Every request is run to completion on
 * the loop before the next; the image is closed at the end.  Sizes are
 * bounded so that one input takes milliseconds.
 *
 * Built two ways from this one file:
 *   fuzz-qcow2     (configure --enable-fuzz, clang): libFuzzer's main
 *   replay-qcow2   (always, by make check): -DFUZZ_REPLAY adds a main
 *                  that runs every file named, or every file in each
 *                  directory named, once: the corpus as a regression
 *                  test in every build.
 *
 * A backing file name in an input is resolved relative to
 * /proc/self/fd/, so it names nothing useful (or one of our own
 * descriptors, which the driver then probes like any path); absolute
 * names are opened read-only as usual.  The seed corpus's backing
 * file is named "200": /proc/self/fd/200, a memfd holding 1 MiB of a
 * pattern that the harness puts at that descriptor at start, so no
 * file is left anywhere (and none has a fixed name in /tmp).
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/bufpool.h"
#include "common/error.h"
#include "image/image.h"
#include "fuzz.h"
#include "qcow2-harness.h"

#define MAX_INPUT (4u << 20)
#define MAX_READ_BYTES (4u << 20)
#define READ_CHUNK (256u << 10)
#define MAX_EXTENTS_BYTES (256ull << 20)
#define MAX_EXTENTS 256
#define BACKING_FD 200          /* the seeds' backing file name */

static uint8_t *buf;
static unsigned opened;         /* read-only opens that succeeded */

static int
run (struct image *img, enum image_cmd cmd, unsigned flags,
     uint64_t offset, uint64_t count, struct image_extents *ext)
{
  return qcow2_harness_run (img, cmd, flags, offset, count,
                            (cmd == IMAGE_READ || cmd == IMAGE_WRITE) ? buf : NULL,
                            ext);
}

static void
check_extents (const struct image_extents *e, uint64_t offset, uint64_t count)
{
  uint64_t pos = offset;

  for (size_t i = 0; i < e->nr; i++) {
    if (e->ext[i].offset != pos || e->ext[i].length == 0
        || (e->ext[i].flags & ~(IMAGE_EXTENT_HOLE | IMAGE_EXTENT_ZERO)))
      abort ();                 /* not contiguous, empty, or bad flags */
    pos += e->ext[i].length;
  }
  if (pos > offset + count)
    abort ();                   /* past the request */
}

static void
read_all (struct image *img)
{
  struct image_extents e = { .max = MAX_EXTENTS };
  uint64_t n = img->size < MAX_EXTENTS_BYTES ? img->size : MAX_EXTENTS_BYTES;

  if (n && run (img, IMAGE_EXTENTS, 0, 0, n, &e) == 0)
    check_extents (&e, 0, n);
  n = img->size < MAX_READ_BYTES ? img->size : MAX_READ_BYTES;
  for (uint64_t off = 0; off < n; off += READ_CHUNK) {
    uint64_t len = n - off < READ_CHUNK ? n - off : READ_CHUNK;
    bool sparse = (off / READ_CHUNK) % 2;
    if (run (img, IMAGE_READ, sparse ? IMAGE_SPARSE : 0, off, len,
             sparse ? &e : NULL) == 0 && sparse)
      check_extents (&e, off, len);
  }
  image_extents_free (&e);
}

/* Requests for the writable open, drawn from the input's last bytes. */
static void
write_some (struct image *img, const uint8_t *data, size_t size)
{
  uint64_t span = img->size < MAX_READ_BYTES ? img->size : MAX_READ_BYTES;
  const uint8_t *p = size > 48 ? data + size - 48 : data;
  size_t np = size > 48 ? 48 : size;

  if (span < 512)
    return;
  for (size_t i = 0; i + 6 <= np; i += 6) {
    uint64_t off = ((uint64_t) p[i] << 16 | (uint64_t) p[i + 1] << 8 | p[i + 2])
      * 512 % span;
    uint64_t len = ((uint64_t) p[i + 3] << 8 | p[i + 4]) % (128u << 10) + 1;
    if (len > span - off)
      len = span - off;
    memset (buf, p[i + 5], len);
    switch (p[i + 5] % 6) {
    case 0: case 1: run (img, IMAGE_WRITE, 0, off, len, NULL); break;
    case 2: run (img, IMAGE_WRITE, IMAGE_FUA, off, len, NULL); break;
    case 3: run (img, IMAGE_ZERO, 0, off, len, NULL); break;
    case 4: run (img, IMAGE_ZERO, IMAGE_MAY_TRIM, off, len, NULL); break;
    case 5: run (img, IMAGE_TRIM, 0, off, len, NULL); break;
    }
  }
  run (img, IMAGE_FLUSH, 0, 0, 0, NULL);
}

static void
one_open (const uint8_t *data, size_t size, bool readonly)
{
  char path[64];
  int fd = qcow2_harness_memfd (data, size, path, sizeof path);
  struct image *img = image_open (path, IMAGE_FORMAT_QCOW2, readonly,
                                  IMAGE_CACHE_WRITEBACK, qcow2_harness_ioq ());

#ifdef FUZZ_REPLAY
  printf ("  %s open: %s\n", readonly ? "read-only" : "writable",
          img ? "ok" : error_get ());
#endif
  if (img) {
    opened += readonly;
    read_all (img);
    if (!readonly) {
      write_some (img, data, size);
      read_all (img);
    }
    image_close (img);
  }
  close (fd);
}

/* 1 MiB of a pattern at descriptor BACKING_FD (see the top). */
static void
backing_init (void)
{
  static uint8_t pattern[1 << 20];
  char path[64];
  int fd;

  for (size_t i = 0; i < sizeof pattern; i++)
    pattern[i] = (uint8_t) (i >> 9);
  fd = qcow2_harness_memfd (pattern, sizeof pattern, path, sizeof path);
  if (fd == -1 || (fd != BACKING_FD && dup2 (fd, BACKING_FD) == -1))
    abort ();
  if (fd != BACKING_FD)
    close (fd);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  qcow2_harness_init ("fuzz-qcow2");
  buf = aligned_alloc (BUFPOOL_ALIGN, 128u << 10 > READ_CHUNK ? 128u << 10 : READ_CHUNK);
  if (buf == NULL)
    abort ();
  /* The seeds' backing file. */
  backing_init ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size > MAX_INPUT)
    return -1;
  one_open (data, size, true);
  one_open (data, size, false);
  return 0;
}

#ifdef FUZZ_REPLAY
/* replay.c's end of the corpus: free what LLVMFuzzerInitialize set up,
 * so leaks in the code under test stand out. */
int
fuzz_replay_finish (unsigned inputs)
{
  qcow2_harness_finish ();
  free (buf);
  printf ("replayed %u inputs, %u opened\n", inputs, opened);
  return 0;
}
#endif
