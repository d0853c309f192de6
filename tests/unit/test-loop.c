/* SPDX-License-Identifier: MIT */
/* The event loop's stall report: a callback that holds the loop for a
 * second or more is named in a warning; quick ones are not. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"
#include "common/loop.h"

static struct loop *loop;
static struct loop_deferred d;
static unsigned hold_ms;

static void
hold_then_stop (void *opaque)
{
  struct timespec ts = { hold_ms / 1000, (long) (hold_ms % 1000) * 1000000 };

  (void) opaque;
  nanosleep (&ts, NULL);        /* the misbehaving callback under test */
  loop_stop (loop);
}

/* Runs one deferred callback that holds the loop HOLD for ms and
 * returns what the daemon logged meanwhile (stderr captured). */
static char *
run_holding (unsigned hold)
{
  FILE *f = tmpfile ();
  int saved = dup (STDERR_FILENO);
  static char text[4096];
  size_t n;

  assert_non_null (f);
  hold_ms = hold;
  loop = loop_new ();
  assert_non_null (loop);
  fflush (stderr);
  assert_int_not_equal (dup2 (fileno (f), STDERR_FILENO), -1);
  loop_defer (loop, &d, hold_then_stop, NULL);
  assert_int_equal (loop_run (loop), 0);
  fflush (stderr);
  dup2 (saved, STDERR_FILENO);
  close (saved);
  loop_free (loop);
  rewind (f);
  n = fread (text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose (f);
  return text;
}

static void
test_stall_is_reported (void **state)
{
  const char *text = run_holding (1100);

  (void) state;
  assert_non_null (strstr (text, "event loop held for"));
  assert_non_null (strstr (text, "deferred callback"));
  /* The callback is named: object and offset at least. */
  assert_non_null (strstr (text, "test-loop"));
}

static void
test_quick_callback_is_not (void **state)
{
  (void) state;
  assert_null (strstr (run_holding (10), "event loop held"));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_stall_is_reported),
    cmocka_unit_test (test_quick_callback_is_not),
  };

  log_init ("test-loop", false, 0);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
