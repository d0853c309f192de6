/* SPDX-License-Identifier: MIT */
/* The log rate limiter: a burst goes through, the rest is counted and
 * reported once the window is over (by the next line or by the flush),
 * limiters are independent, and counts add up across threads. */
#include <config.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"

/* The log goes to stderr in the foreground: catch it in a file while
 * the code under test logs (capture_on), and give stderr back before
 * reading it, so cmocka's own messages stay visible. */
static FILE *captured;
static int saved_stderr = -1;

static void
capture_on (void)
{
  fflush (stderr);
  dup2 (fileno (captured), STDERR_FILENO);
}

static void
capture_off (void)
{
  fflush (stderr);
  dup2 (saved_stderr, STDERR_FILENO);
}

static int
setup (void **state)
{
  (void) state;
  captured = tmpfile ();
  saved_stderr = dup (STDERR_FILENO);
  return captured && saved_stderr >= 0 ? 0 : -1;
}

static int
teardown (void **state)
{
  (void) state;
  close (saved_stderr);
  fclose (captured);
  return 0;
}

/* How many of the lines logged since the last call contain NEEDLE;
 * *TOTAL is how many there were, the last one is in LAST_LINE.
 * Capturing stops. */
static char last_line[4096];

static unsigned
lines_with (const char *needle, unsigned *total)
{
  static long seen;
  char line[4096];
  unsigned n = 0, all = 0;

  capture_off ();
  fseek (captured, seen, SEEK_SET);
  while (fgets (line, sizeof line, captured)) {
    memcpy (last_line, line, sizeof line);
    all++;
    n += strstr (line, needle) != NULL;
  }
  seen = ftell (captured);
  if (total)
    *total = all;
  return n;
}

static void
wait_ms (unsigned ms)
{
  struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L };

  while (nanosleep (&ts, &ts) == -1)
    ;
}

static void
test_burst_then_count (void **state)
{
  static struct log_limit l = { .interval_ms = 300, .burst = 3 };
  unsigned printed = 0, total;

  (void) state;
  capture_on ();
  for (int i = 0; i < 10; i++)
    printed += log_limited (&l, LOG_WARNING, "refusing client %d", i);
  assert_int_equal (printed, 3);
  assert_int_equal (lines_with ("refusing client", &total), 3);
  assert_int_equal (total, 3);

  /* The window is over: the next line first says what was held back,
   * naming the last one. */
  wait_ms (350);
  capture_on ();
  assert_true (log_limited (&l, LOG_WARNING, "refusing client %d", 10));
  assert_int_equal (lines_with ("suppressed 7 similar messages in 0.", &total), 1);
  assert_int_equal (total, 2);
  /* ... naming the last line held back. */
  capture_on ();
  assert_true (log_limited (&l, LOG_WARNING, "refusing client %d", 11));
  assert_true (log_limited (&l, LOG_WARNING, "refusing client %d", 12));
  assert_false (log_limited (&l, LOG_WARNING, "refusing client %d", 13));
  assert_false (log_limited (&l, LOG_WARNING, "refusing client %d", 14));
  assert_int_equal (lines_with ("", NULL), 2);
  wait_ms (350);
  capture_on ();
  log_limits_flush (false);
  assert_int_equal (lines_with ("suppressed 2 similar messages in 0.", &total), 1);
  assert_int_equal (total, 1);
  assert_non_null (strstr (last_line, "; the last: refusing client 14"));
}

static void
test_flush_reports_a_finished_flood (void **state)
{
  static struct log_limit l = { .interval_ms = 200, .burst = 1 };
  unsigned total;

  (void) state;
  capture_on ();
  for (int i = 0; i < 5; i++)
    log_limited (&l, LOG_INFO, "accept: Too many open files (%d)", i);
  assert_int_equal (lines_with ("accept", &total), 1);

  /* Nothing more comes: within the window the flush is silent, after
   * it the count comes out once. */
  capture_on ();
  log_limits_flush (false);
  assert_int_equal (lines_with ("", &total), 0);
  wait_ms (250);
  capture_on ();
  log_limits_flush (false);
  log_limits_flush (false);
  assert_int_equal (lines_with ("suppressed 4 similar messages", &total), 1);
  assert_int_equal (total, 1);
  /* A new window: the next line goes straight out. */
  capture_on ();
  assert_true (log_limited (&l, LOG_INFO, "accept: again"));
  assert_int_equal (lines_with ("suppressed", &total), 0);
  assert_int_equal (total, 1);
}

static void
test_flush_all_at_exit (void **state)
{
  static struct log_limit l = { .interval_ms = 60000, .burst = 1 };
  unsigned total;

  (void) state;
  capture_on ();
  for (int i = 0; i < 4; i++)
    log_limited (&l, LOG_WARNING, "late line %d", i);
  log_limits_flush (false);     /* the window is not over */
  assert_int_equal (lines_with ("late line", &total), 1);
  assert_int_equal (total, 1);
  capture_on ();
  log_limits_flush (true);      /* exit: report it anyway */
  assert_int_equal (lines_with ("suppressed 3 similar messages", &total), 1);
  assert_int_equal (total, 1);
  assert_non_null (strstr (last_line, "the last: late line 3"));
}

static void
test_limiters_are_independent (void **state)
{
  static struct log_limit a = { .interval_ms = 60000, .burst = 2 };
  static struct log_limit b = { .interval_ms = 60000, .burst = 2 };
  unsigned total;

  (void) state;
  capture_on ();
  for (int i = 0; i < 5; i++) {
    log_limited (&a, LOG_WARNING, "from a");
    log_limited (&b, LOG_WARNING, "from b");
  }
  assert_int_equal (lines_with ("from b", &total), 2);
  assert_int_equal (total, 4);
  capture_on ();
  /* The default limiter of a call site. */
  for (int i = 0; i < 50; i++)
    log_ratelimit (LOG_WARNING, "site %d", i);
  assert_int_equal (lines_with ("site", NULL), LOG_LIMIT_BURST);
}

static void
test_debug_lines_follow_verbosity (void **state)
{
  static struct log_limit l = { .interval_ms = 60000, .burst = 100 };

  (void) state;
  capture_on ();
  assert_false (log_limited (&l, LOG_DEBUG, "debug line"));
  assert_int_equal (lines_with ("debug line", NULL), 0);
}

#define THREADS 4
#define PER_THREAD 2000
static struct log_limit shared = { .interval_ms = 60000, .burst = 7 };

static void *
hammer (void *arg)
{
  unsigned *printed = arg;

  for (int i = 0; i < PER_THREAD; i++)
    *printed += log_limited (&shared, LOG_WARNING, "thread line");
  return NULL;
}

static void
test_threads_count_everything (void **state)
{
  pthread_t t[THREADS];
  unsigned printed[THREADS] = { 0 }, sum = 0;

  (void) state;
  capture_on ();
  for (int i = 0; i < THREADS; i++)
    assert_int_equal (pthread_create (&t[i], NULL, hammer, &printed[i]), 0);
  for (int i = 0; i < THREADS; i++) {
    pthread_join (t[i], NULL);
    sum += printed[i];
  }
  assert_int_equal (sum, 7);
  assert_int_equal (lines_with ("thread line", NULL), 7);
  assert_int_equal (shared.suppressed, THREADS * PER_THREAD - 7);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_burst_then_count),
    cmocka_unit_test (test_flush_reports_a_finished_flood),
    cmocka_unit_test (test_flush_all_at_exit),
    cmocka_unit_test (test_limiters_are_independent),
    cmocka_unit_test (test_debug_lines_follow_verbosity),
    cmocka_unit_test (test_threads_count_everything),
  };

  log_init ("test-log", false, 0);
  return cmocka_run_group_tests (tests, setup, teardown);
}
