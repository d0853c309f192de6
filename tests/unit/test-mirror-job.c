/* SPDX-License-Identifier: MIT */
/* The mirror job file (mirrord/mirror-job.h) on a real loop and real
 * ioq workers: saved and removed off the loop, the newest change always
 * last on disk however fast they come, waiters told in order and only
 * once their change is on disk, never inside the call, and a failure
 * that still lets them go. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/ioq.h"
#include "common/log.h"
#include "common/loop.h"
#include "image/image.h"
#include "mirrord/export.h"
#include "mirrord/mirror-int.h"
#include "mirrord/mirror-job.h"

static char dir[] = "/tmp/mirrord-test-mirror-job-XXXXXX";
static char prefix[256], path[300], tmp[310];

static struct loop *loop;
static struct ioq *q;
static struct image img;
static struct export e;
static struct mirror m;

/* What each waiter saw when it ran. */
struct seen {
  struct mirror_job_wait w;
  int order;                    /* when it ran, 0 first; -1 not yet */
  bool file_there;
  bool ran;
};
static int ran_count, expect_count;

static bool
file_there (void)
{
  struct stat st;
  return stat (path, &st) == 0;
}

static void
on_wait (struct mirror_job_wait *w)
{
  struct seen *s = (struct seen *) w;

  s->ran = true;
  s->order = ran_count++;
  s->file_there = file_there ();
  if (ran_count == expect_count)
    loop_stop (loop);
}

static void
give_up (void *opaque)
{
  (void) opaque;
  loop_stop (loop);
}

/* Runs the loop until EXPECT waiters have run (or 10 s). */
static void
run_until (int expect)
{
  struct loop_source *t = loop_add_timer (loop, 10000, 0, give_up, NULL);

  expect_count = expect;
  assert_int_equal (loop_run (loop), 0);
  loop_source_remove (t);
  assert_int_equal (ran_count, expect);
}

static void
wait_on (struct seen *s)
{
  memset (s, 0, sizeof *s);
  s->order = -1;
  s->w.fn = on_wait;
  mirror_job_when_durable (&m, &s->w);
}

static int
group_setup (void **state)
{
  (void) state;
  return mkdtemp (dir) ? 0 : -1;
}

static int
group_teardown (void **state)
{
  (void) state;
  return rmdir (dir);
}

static int
setup (void **state)
{
  (void) state;
  snprintf (prefix, sizeof prefix, "%s/vm1", dir);
  snprintf (path, sizeof path, "%s.mirror", prefix);
  snprintf (tmp, sizeof tmp, "%s.tmp", path);
  loop = loop_new ();
  assert_non_null (loop);
  q = ioq_new (loop, 64, 4);    /* four workers: they could race */
  assert_non_null (q);
  memset (&img, 0, sizeof img);
  img.ioq = q;
  memset (&e, 0, sizeof e);
  e.spec.name = (char *) "vm1";
  e.state_prefix = prefix;
  e.img = &img;
  memset (&m, 0, sizeof m);
  m.exp = &e;
  m.loop = loop;
  m.uri = (char *) "nbd://t/vm1";
  m.label = m.uri;
  m.bandwidth = 1000;
  mirror_fsm_init (&m.fsm, MF_CONNECTING, "vm1", m.label);
  mirror_job_init (&m);
  ran_count = 0;
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  mirror_job_free (&m);
  ioq_free (q);
  loop_free (loop);
  unlink (path);
  unlink (tmp);
  return 0;
}

static void
test_save (void **state)
{
  struct seen s;
  char buf[128] = "";
  FILE *f;

  (void) state;
  mirror_job_save (&m);
  wait_on (&s);
  assert_false (s.ran);         /* never inside the call */
  assert_false (mirror_job_idle (&m));
  run_until (1);
  assert_true (s.file_there);
  assert_true (mirror_job_idle (&m));
  f = fopen (path, "r");
  assert_non_null (f);
  assert_int_not_equal (fread (buf, 1, sizeof buf - 1, f), 0);
  fclose (f);
  assert_string_equal (buf, "uri=nbd://t/vm1\nmode=sync\nbandwidth=1000\n");
  assert_int_equal (access (tmp, F_OK), -1);
}

/* Changes faster than the workers: each waiter runs once its change
 * (or a newer one) is on disk, in order, and the newest change is what
 * stays — never an older one finishing last. */
static void
test_newest_wins (void **state)
{
  struct seen s[8];

  (void) state;
  for (int i = 0; i < 8; i++) {
    if (i % 2 == 0)
      mirror_job_save (&m);
    else
      mirror_job_forget (&m);
    wait_on (&s[i]);
  }
  run_until (8);
  for (int i = 0; i < 8; i++) {
    assert_true (s[i].ran);
    assert_int_equal (s[i].order, i);
  }
  /* The last change was a removal: whoever heard of it sees no file. */
  assert_false (s[7].file_there);
  assert_false (file_there ());
  /* And a save after it is there for good. */
  mirror_job_save (&m);
  wait_on (&s[0]);
  ran_count = 0;
  run_until (1);
  assert_true (s[0].file_there);
  assert_true (file_there ());
}

/* Nothing pending: the waiter still runs from the loop. */
static void
test_nothing_pending (void **state)
{
  struct seen s;

  (void) state;
  wait_on (&s);
  assert_false (s.ran);
  run_until (1);
  assert_true (s.ran);
  assert_false (s.file_there);
}

static void
test_cancel_wait (void **state)
{
  struct seen a, b;

  (void) state;
  mirror_job_save (&m);
  wait_on (&a);
  wait_on (&b);
  mirror_job_wait_cancel (&m, &a.w);
  run_until (1);
  assert_false (a.ran);
  assert_true (b.ran);
}

/* A save that fails (no such directory) is logged; the waiters go on
 * and the job is idle again. */
static void
test_failure (void **state)
{
  struct seen s;

  (void) state;
  snprintf (prefix, sizeof prefix, "%s/missing/vm1", dir);
  mirror_job_save (&m);
  wait_on (&s);
  run_until (1);
  assert_true (s.ran);
  assert_true (mirror_job_idle (&m));
  snprintf (prefix, sizeof prefix, "%s/vm1", dir);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_save, setup, teardown),
    cmocka_unit_test_setup_teardown (test_newest_wins, setup, teardown),
    cmocka_unit_test_setup_teardown (test_nothing_pending, setup, teardown),
    cmocka_unit_test_setup_teardown (test_cancel_wait, setup, teardown),
    cmocka_unit_test_setup_teardown (test_failure, setup, teardown),
  };

  log_init ("test-mirror-job", false, 0);
  return cmocka_run_group_tests (tests, group_setup, group_teardown);
}
