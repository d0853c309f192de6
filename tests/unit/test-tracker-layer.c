/* SPDX-License-Identifier: MIT */
/* The write-intent tracker (bitmap/tracker.h) over a memory disk and a
 * real bitmap file: a write's region is on disk before the write goes
 * down, in the live bitmap after it comes back (unless the layer below
 * says the target has it), failed writes stay dirty, everything else
 * passes unmarked; the dirty-extents, mark and clear API. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bitmap/tracker.h"
#include "common/log.h"
#include "tests/blk-mem.h"

#define SIZE (64u << 20)
#define G 65536u

static struct loop *loop;
static struct ioq *ioq;
static char dir[] = "/tmp/mirrord-test-tracker-XXXXXX";
static char path[128];
static struct bitmap_store *store;
static struct blk_mem mem;
static struct tracker trk;
static uint8_t buf[G];

/* Between tracker and disk: a replication layer's stand-in that says
 * whether "the target" has the write, and what the disk had seen of
 * the bitmap file when the write reached it. */
static struct {
  struct blk blk;
  int forwarded;
  uint64_t ondisk_when_down;
} fwd;

static void
fwd_write (struct blk *b, struct blk_req *req)
{
  fwd.ondisk_when_down = bitmap_store_ondisk_bytes (store);
  if (blk_req_writes_in (req, SIZE))
    assert_non_null (req->intent);      /* the tracker's, in flight */
  else
    assert_null (req->intent);          /* untracked */
  req->forwarded = fwd.forwarded;
  blk_submit_lower (b, req);
}

static const struct blk_ops fwd_ops = {
  .name = "fake-replicate", .write = fwd_write, .zero = fwd_write,
  .trim = fwd_write,
};

static void
submit (struct blk_test_io *x, enum image_cmd cmd, uint64_t off, uint64_t count)
{
  blk_test_submit (&trk.blk, x, cmd, 0, off, count, buf);
}

static void
run (struct blk_test_io *x)
{
  assert_true (blk_test_run (loop, &x->done));
}

static int
setup (void **state)
{
  struct bitmap_store_opts o = {
    .path = path, .image_path = "/img", .size = SIZE, .granularity = G,
  };

  unlink (path);
  loop = blk_test_start (&mem, SIZE);
  assert_non_null (loop);
  ioq = ioq_new (loop, 64, 2);
  assert_non_null (ioq);
  store = bitmap_store_open (&o, ioq);
  assert_non_null (store);
  blk_init (&fwd.blk, &fwd_ops, &mem.blk, NULL);
  fwd.forwarded = ENOTCONN;
  tracker_init (&trk, &fwd.blk, store, "t");
  return 0;
}

static int
teardown (void **state)
{
  assert_int_equal (bitmap_store_close (store), 0);
  ioq_free (ioq);
  blk_test_end (loop, &mem);
  return 0;
}

static int
group_setup (void **state)
{
  log_init ("test", false, 0);
  if (mkdtemp (dir) == NULL)
    return -1;
  snprintf (path, sizeof path, "%s/t.bitmap", dir);
  return 0;
}

static int
group_teardown (void **state)
{
  unlink (path);
  rmdir (dir);
  return 0;
}

static void
test_intent_before_data (void **state)
{
  struct blk_test_io w;

  submit (&w, IMAGE_WRITE, 3 * G, 4096);
  assert_int_equal (mem.nr[IMAGE_WRITE], 0);    /* waits for the file */
  run (&w);
  assert_int_equal (w.err, 0);
  assert_int_equal (mem.nr[IMAGE_WRITE], 1);
  assert_true (fwd.ondisk_when_down >= G);      /* recorded first */
  assert_int_equal (tracker_dirty_bytes (&trk), G);
  assert_null (w.req.intent);                   /* ended */
}

static void
test_forwarded_ends_clean (void **state)
{
  struct blk_test_io w;

  fwd.forwarded = 0;
  submit (&w, IMAGE_ZERO, 0, 2 * G);
  run (&w);
  assert_int_equal (w.err, 0);
  assert_int_equal (mem.nr[IMAGE_ZERO], 1);
  assert_int_equal (tracker_dirty_bytes (&trk), 0);
}

static void
test_failed_write_stays_dirty (void **state)
{
  struct blk_test_io w;

  fwd.forwarded = 0;
  mem.fail_err = EIO;
  submit (&w, IMAGE_TRIM, 5 * G, G);
  run (&w);
  assert_int_equal (w.err, EIO);
  assert_int_equal (tracker_dirty_bytes (&trk), G);
}

static void
test_others_pass_unmarked (void **state)
{
  struct blk_test_io r, f, out, empty;

  submit (&r, IMAGE_READ, 0, 4096);
  submit (&f, IMAGE_FLUSH, 0, 0);
  submit (&out, IMAGE_WRITE, SIZE, 4096);       /* past the end */
  submit (&empty, IMAGE_WRITE, 0, 0);
  run (&r);
  run (&f);
  run (&out);
  run (&empty);
  assert_int_equal (r.err, 0);
  assert_int_equal (f.err, 0);
  assert_int_equal (out.err, ENOSPC);           /* the disk refused it */
  assert_int_equal (bitmap_store_ondisk_bytes (store), 0);
  assert_int_equal (tracker_dirty_bytes (&trk), 0);
}

static void
test_extents_mark_clear (void **state)
{
  struct image_extents e = { 0 };

  tracker_mark (&trk, G, G);
  tracker_mark (&trk, 4 * G, 2 * G);
  assert_int_equal (tracker_dirty_bytes (&trk), 3 * G);
  assert_int_equal (tracker_dirty_extents (&trk, 0, 8 * G, &e), 0);
  assert_int_equal (e.nr, 5);
  assert_int_equal (e.ext[0].flags, 0);
  assert_int_equal (e.ext[1].offset, G);
  assert_int_equal (e.ext[1].flags, 1);
  assert_int_equal (e.ext[3].offset, 4 * G);
  assert_int_equal (e.ext[3].length, 2 * G);
  tracker_clear (&trk, 0, 0);
  assert_int_equal (tracker_dirty_bytes (&trk), 0);
  image_extents_reset (&e);
  /* No tracker (bitmap=false): all clean. */
  assert_int_equal (tracker_dirty_extents (NULL, 0, G, &e), 0);
  assert_int_equal (e.nr, 1);
  assert_int_equal (e.ext[0].flags, 0);
  image_extents_free (&e);
}

/* The mirror's API: a long-lived intent, shared past its source. */
static bool intent_ready_seen;

static void
on_ready (struct bitmap_intent *in, int err)
{
  assert_int_equal (err, 0);
  intent_ready_seen = true;
}

static void
test_mirror_api (void **state)
{
  struct bitmap_intent src = { .ready = on_ready }, dst = { 0 };

  intent_ready_seen = false;
  if (tracker_begin (&trk, &src, 8 * G, G) == 0)
    assert_true (blk_test_run (loop, &intent_ready_seen));
  assert_true (bitmap_store_ondisk_bytes (store) >= G);
  tracker_share (&trk, &dst, &src);
  tracker_end (&trk, &src, true);               /* clean: no live bit */
  assert_int_equal (tracker_dirty_bytes (&trk), 0);
  tracker_end (&trk, &dst, false);              /* kept for a pass */
  assert_true (dirty_bitmap_is_dirty (tracker_live (&trk), 8 * G, 1));
  assert_int_equal (tracker_dirty_bytes (&trk), G);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_intent_before_data, setup, teardown),
    cmocka_unit_test_setup_teardown (test_forwarded_ends_clean, setup, teardown),
    cmocka_unit_test_setup_teardown (test_failed_write_stays_dirty, setup, teardown),
    cmocka_unit_test_setup_teardown (test_others_pass_unmarked, setup, teardown),
    cmocka_unit_test_setup_teardown (test_extents_mark_clear, setup, teardown),
    cmocka_unit_test_setup_teardown (test_mirror_api, setup, teardown),
  };
  return cmocka_run_group_tests (tests, group_setup, group_teardown);
}
