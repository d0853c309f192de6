/* SPDX-License-Identifier: MIT */
/* The replication layer (mirrord/replicate.h) over a memory disk, with
 * a fake mirror job: this file defines mirror.h's guest API, so the
 * real mirror is not linked.  Covered: no mirror (pass through), sync
 * forwarding in parallel with the local write (either side first),
 * forwarding after the local write, a mirror that declines, a failed
 * local write, FUA reaching disk and target, and FLUSH covering the
 * target. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/log.h"
#include "mirrord/mirror.h"
#include "mirrord/replicate.h"
#include "tests/blk-mem.h"

#define SIZE (1u << 20)

/* ---- The fake mirror ---- */

struct mirror {
  bool forwards;                /* mirror_forwards_writes() */
  int take;                     /* mirror_guest_write()'s answer */
  int take_flush;
  unsigned writes, flushes;
  unsigned disk_writes_seen;    /* the disk's count when asked */
  unsigned flags_seen;
  struct blk_req *pending;
  mirror_write_fn done;
};

static struct blk_mem mem;

bool
mirror_forwards_writes (const struct mirror *m)
{
  return m && m->forwards;
}

int
mirror_guest_write (struct mirror *m, struct blk_req *x, mirror_write_fn done)
{
  if (m == NULL)
    return 0;
  m->writes++;
  m->disk_writes_seen = mem.nr[IMAGE_WRITE];
  m->flags_seen = x->io.flags;
  if (m->take == 0)
    return 0;
  m->pending = x;
  m->done = done;
  return 1;
}

int
mirror_guest_flush (struct mirror *m, struct blk_req *x, mirror_write_fn done)
{
  if (m == NULL || m->take_flush == 0)
    return 0;
  m->flushes++;
  m->pending = x;
  m->done = done;
  return 1;
}

/* The target answers. */
static void
target_answers (struct mirror *m, int forwarded)
{
  struct blk_req *x = m->pending;

  assert_non_null (x);
  m->pending = NULL;
  m->done (x, forwarded);
}

/* ---- The test ---- */

static struct loop *loop;
static struct mirror fake, *job;
static struct replicate rep;
static uint8_t buf[4096];

static void
submit (struct blk_test_io *x, enum image_cmd cmd, unsigned flags)
{
  bool flush = cmd == IMAGE_FLUSH;

  blk_test_prepare (x, cmd, flags, flush ? 0 : 4096, flush ? 0 : 4096, buf);
  x->req.forwarded = ENOTCONN;  /* as the tracker above sets it */
  blk_submit (&rep.blk, &x->req);
}

static int
setup (void **state)
{
  loop = blk_test_start (&mem, SIZE);
  assert_non_null (loop);
  memset (&fake, 0, sizeof fake);
  job = &fake;
  replicate_init (&rep, &mem.blk, &job);
  return 0;
}

static int
teardown (void **state)
{
  blk_test_end (loop, &mem);
  return 0;
}

static void
test_no_mirror_passes (void **state)
{
  struct blk_test_io w, f;

  job = NULL;
  submit (&w, IMAGE_WRITE, 0);
  submit (&f, IMAGE_FLUSH, 0);
  assert_true (blk_test_run (loop, &f.done));
  assert_true (w.done);
  assert_int_equal (w.err, 0);
  assert_int_equal (w.req.forwarded, ENOTCONN);
  assert_int_equal (w.req.depth, 0);    /* nothing pushed */
  assert_int_equal (mem.nr[IMAGE_WRITE], 1);
}

static void
test_sync_parallel_local_first (void **state)
{
  struct blk_test_io w;

  fake.forwards = true;
  fake.take = 1;
  submit (&w, IMAGE_WRITE, IMAGE_FUA);
  assert_int_equal (fake.writes, 1);
  assert_int_equal (fake.disk_writes_seen, 0);  /* before the local one */
  assert_true (blk_test_run (loop, NULL));
  assert_int_equal (mem.nr[IMAGE_WRITE], 1);
  assert_false (w.done);                /* the target has not answered */
  target_answers (&fake, 0);
  assert_true (w.done);
  assert_int_equal (w.err, 0);
  assert_int_equal (w.req.forwarded, 0);
  /* FUA went down unchanged, and the mirror saw it. */
  assert_true (mem.last_flags & IMAGE_FUA);
  assert_true (fake.flags_seen & IMAGE_FUA);
}

static void
test_sync_parallel_target_first (void **state)
{
  struct blk_test_io w;

  fake.forwards = true;
  fake.take = 1;
  mem.hold = true;
  submit (&w, IMAGE_ZERO, 0);
  target_answers (&fake, 0);
  assert_true (blk_test_run (loop, NULL));
  assert_false (w.done);                /* the disk has not answered */
  blk_mem_release (&mem);
  assert_true (blk_test_run (loop, &w.done));
  assert_int_equal (w.err, 0);
  assert_int_equal (w.req.forwarded, 0);
}

static void
test_after_local_write (void **state)
{
  struct blk_test_io w;

  fake.take = 1;                        /* async forward, or blocking */
  submit (&w, IMAGE_WRITE, 0);
  assert_int_equal (fake.writes, 0);
  assert_true (blk_test_run (loop, NULL));
  assert_int_equal (fake.writes, 1);
  assert_int_equal (fake.disk_writes_seen, 1);  /* after the local one */
  assert_false (w.done);
  target_answers (&fake, ENOTCONN);     /* the bitmap keeps it */
  assert_true (w.done);
  assert_int_equal (w.err, 0);
  assert_int_equal (w.req.forwarded, ENOTCONN);
}

static void
test_mirror_declines (void **state)
{
  struct blk_test_io w, p;

  fake.forwards = true;                 /* queue full: declines at once */
  submit (&p, IMAGE_WRITE, 0);
  assert_true (blk_test_run (loop, &p.done));
  assert_int_equal (p.err, 0);
  assert_int_equal (fake.writes, 2);    /* in parallel, then after */
  fake.forwards = false;
  submit (&w, IMAGE_TRIM, 0);
  assert_true (blk_test_run (loop, &w.done));
  assert_int_equal (w.err, 0);
  assert_int_equal (w.req.forwarded, ENOTCONN);
}

static void
test_local_failure (void **state)
{
  struct blk_test_io w;

  fake.take = 1;
  mem.fail_err = EIO;
  submit (&w, IMAGE_WRITE, 0);
  assert_true (blk_test_run (loop, &w.done));
  assert_int_equal (w.err, EIO);
  assert_int_equal (fake.writes, 0);    /* nothing to send */
}

static void
test_flush_covers_target (void **state)
{
  struct blk_test_io f;

  fake.take_flush = 1;
  submit (&f, IMAGE_FLUSH, 0);
  assert_true (blk_test_run (loop, NULL));
  assert_int_equal (mem.nr[IMAGE_FLUSH], 1);
  assert_int_equal (fake.flushes, 1);
  assert_false (f.done);
  target_answers (&fake, 0);
  assert_true (f.done);
  assert_int_equal (f.err, 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_no_mirror_passes, setup, teardown),
    cmocka_unit_test_setup_teardown (test_sync_parallel_local_first, setup, teardown),
    cmocka_unit_test_setup_teardown (test_sync_parallel_target_first, setup, teardown),
    cmocka_unit_test_setup_teardown (test_after_local_write, setup, teardown),
    cmocka_unit_test_setup_teardown (test_mirror_declines, setup, teardown),
    cmocka_unit_test_setup_teardown (test_local_failure, setup, teardown),
    cmocka_unit_test_setup_teardown (test_flush_covers_target, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
