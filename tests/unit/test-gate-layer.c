/* SPDX-License-Identifier: MIT */
/* The role gate (ha/gate.h) over a memory disk: reads pass, writes are
 * refused when not writable (EPERM) or when the first-write hook fails
 * (EIO), held while the host holds them and released in order,
 * counted in flight until their reply; the flags follow writability. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/error.h"
#include "common/log.h"
#include "ha/gate.h"
#include "tests/blk-mem.h"

#define SIZE (1u << 20)

/* The host: what an export would answer. */
static struct {
  bool writable, holding, fail_before;
  unsigned in_flight, begun, ended;
  unsigned in_flight_at_end;    /* as write_end() saw it */
  bool replied_before_end;
} host;

static bool h_writable (void *h) { return host.writable; }
static bool h_holding (void *h) { return host.holding; }
static int
h_before (void *h)
{
  return host.fail_before ? error_set (EIO, "generation not saved") : 0;
}
static void h_begin (void *h) { host.in_flight++; host.begun++; }

static void
h_end (void *h)
{
  host.in_flight--;
  host.ended++;
  host.replied_before_end = blk_test_replies () >= host.ended;
}

static const struct gate_ops ops = {
  .writable = h_writable, .holding = h_holding, .before_write = h_before,
  .write_begin = h_begin, .write_end = h_end,
};

static struct loop *loop;
static struct blk_mem mem;
static struct gate gate;
static struct gate_stats stats;
static uint8_t buf[4096];

static void
submit (struct blk_test_io *x, enum image_cmd cmd, uint64_t off, uint64_t count)
{
  blk_test_submit (&gate.blk, x, cmd, 0, off, count, buf);
}

static int
setup (void **state)
{
  loop = blk_test_start (&mem, SIZE);
  assert_non_null (loop);
  memset (&host, 0, sizeof host);
  memset (&stats, 0, sizeof stats);
  host.writable = true;
  gate_init (&gate, &mem.blk, &ops, &host, &stats, true);
  return 0;
}

static int
teardown (void **state)
{
  blk_test_end (loop, &mem);
  return 0;
}

static void
test_passes (void **state)
{
  struct blk_test_io r, w;

  submit (&r, IMAGE_READ, 0, 512);
  submit (&w, IMAGE_WRITE, 4096, 4096);
  assert_false (r.done);          /* never inside the submit */
  assert_true (blk_test_run (loop, &w.done));
  assert_int_equal (r.err, 0);
  assert_int_equal (w.err, 0);
  assert_int_equal (mem.nr[IMAGE_READ], 1);
  assert_int_equal (mem.nr[IMAGE_WRITE], 1);
  assert_int_equal (stats.requests, 2);
  assert_int_equal (stats.bytes_read, 512);
  assert_int_equal (stats.bytes_written, 4096);
  assert_false (blk_flags (&gate.blk) & BLK_READ_ONLY);
  assert_int_equal (blk_size (&gate.blk), SIZE);
}

static void
test_refuses_when_not_writable (void **state)
{
  struct blk_test_io w, z, t, r;

  host.writable = false;
  assert_true (blk_flags (&gate.blk) & BLK_READ_ONLY);
  submit (&w, IMAGE_WRITE, 0, 512);
  submit (&z, IMAGE_ZERO, 0, 512);
  submit (&t, IMAGE_TRIM, 0, 512);
  submit (&r, IMAGE_READ, 0, 512);
  assert_true (blk_test_run (loop, &r.done));
  assert_true (w.done && z.done && t.done);
  assert_int_equal (w.err, EPERM);
  assert_int_equal (z.err, EPERM);
  assert_int_equal (t.err, EPERM);
  assert_int_equal (r.err, 0);
  assert_int_equal (mem.nr[IMAGE_WRITE] + mem.nr[IMAGE_ZERO] + mem.nr[IMAGE_TRIM], 0);
  assert_int_equal (stats.bytes_written, 0);
  assert_int_equal (host.begun, 0);
}

static void
test_before_write_fails (void **state)
{
  struct blk_test_io w;

  host.fail_before = true;
  submit (&w, IMAGE_WRITE, 0, 512);
  assert_true (blk_test_run (loop, &w.done));
  assert_int_equal (w.err, EIO);
  assert_int_equal (mem.nr[IMAGE_WRITE], 0);
}

static void
test_holds_and_releases_in_order (void **state)
{
  struct blk_test_io a, b, r;

  host.holding = true;
  submit (&a, IMAGE_WRITE, 0, 512);
  submit (&b, IMAGE_ZERO, 8192, 512);
  submit (&r, IMAGE_READ, 0, 512);     /* reads are never held */
  assert_true (blk_test_run (loop, &r.done));
  assert_false (a.done || b.done);
  assert_int_equal (mem.nr[IMAGE_WRITE] + mem.nr[IMAGE_ZERO], 0);
  assert_int_equal (gate.nr_held, 2);
  assert_int_equal (host.begun, 0);    /* held: not in flight yet */
  host.holding = false;
  gate_release (&gate);
  assert_int_equal (host.begun, 2);
  assert_true (blk_test_run (loop, &b.done));
  assert_true (a.done);
  assert_true (a.order < b.order);
  assert_int_equal (a.err, 0);
  assert_int_equal (b.err, 0);
  assert_int_equal (mem.last_offset, 8192);   /* B went down last */
}

static void
test_release_after_cut_over_refuses (void **state)
{
  struct blk_test_io a;

  host.holding = true;
  submit (&a, IMAGE_WRITE, 0, 512);
  assert_true (blk_test_run (loop, NULL));
  host.writable = false;               /* the cut-over completed */
  gate_release (&gate);
  assert_true (blk_test_run (loop, &a.done));
  assert_int_equal (a.err, EPERM);
  assert_int_equal (mem.nr[IMAGE_WRITE], 0);
}

static void
test_counts_writes_in_flight (void **state)
{
  struct blk_test_io w, bad;

  mem.hold = true;
  submit (&w, IMAGE_WRITE, 0, 512);
  submit (&bad, IMAGE_WRITE, SIZE, 512);  /* outside: not counted */
  assert_int_equal (host.in_flight, 1);
  assert_true (blk_test_run (loop, NULL));
  assert_int_equal (host.in_flight, 1);  /* the disk has not answered */
  blk_mem_release (&mem);
  assert_true (blk_test_run (loop, &w.done));
  assert_true (blk_test_run (loop, &bad.done));
  assert_int_equal (bad.err, ENOSPC);
  assert_int_equal (host.in_flight, 0);
  assert_int_equal (host.ended, 1);
  assert_true (host.replied_before_end);  /* the reply first */
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_passes, setup, teardown),
    cmocka_unit_test_setup_teardown (test_refuses_when_not_writable, setup, teardown),
    cmocka_unit_test_setup_teardown (test_before_write_fails, setup, teardown),
    cmocka_unit_test_setup_teardown (test_holds_and_releases_in_order, setup, teardown),
    cmocka_unit_test_setup_teardown (test_release_after_cut_over_refuses, setup, teardown),
    cmocka_unit_test_setup_teardown (test_counts_writes_in_flight, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
