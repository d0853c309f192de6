/* SPDX-License-Identifier: MIT */
/* The mirror job's state machine (mirrord/mirror-fsm.h), linked alone:
 * the table exactly as designed, every legal move made and logged
 * (one line, with its reason and the job's error), every illegal one
 * refused and logged, the names users see, and the job's real paths —
 * the full sync, a resume, a lost and regained target, a cut-over
 * completed, given up and failed, and a cancel and a failure from
 * every state that has them. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/log.h"
#include "mirrord/mirror-fsm.h"

#define N MF_NR_STATES

/* The design, written out once more by hand: a change to the table
 * must change this too. */
static const char *const expected[N][N] = {
  /* to:             MARK CONN SYNC READY CUT DISC COMPL FAIL CANC */
  [MF_MARKING] =      { 0, "full-sync marks on disk", 0, 0, 0, 0, 0,
                        "full-sync marks failed", "cancelled" },
  [MF_CONNECTING] =   { 0, 0, "target up", 0, 0, "target unreachable", 0,
                        "target refused", "cancelled" },
  [MF_SYNCING] =      { 0, 0, 0, "converged", "cut-over asked", "target lost",
                        0, 0, "cancelled" },
  [MF_READY] =        { 0, 0, 0, 0, "cut-over asked", "target lost", 0, 0,
                        "cancelled" },
  [MF_CUTOVER] =      { 0, 0, "cut-over timed out", "cut-over timed out", 0, 0,
                        "cut over", "target lost during the cut-over",
                        "cancelled" },
  [MF_DISCONNECTED] = { 0, 0, "target back", 0, 0, 0, 0, "target refused",
                        "cancelled" },
};

static const char *const names[N] = {
  "marking", "connecting", "syncing", "ready", "cutover", "disconnected",
  "completed", "failed", "cancelled",
};

/* ---- What the module logs (stderr, captured) ---- */

static FILE *cap;
static int saved_stderr = -1;
static char logged[4096];

static void
capture (void)
{
  fflush (stderr);
  cap = tmpfile ();
  assert_non_null (cap);
  saved_stderr = dup (2);
  assert_true (saved_stderr >= 0);
  assert_int_equal (dup2 (fileno (cap), 2), 2);
}

static const char *
captured (void)
{
  size_t n;

  fflush (stderr);
  dup2 (saved_stderr, 2);
  close (saved_stderr);
  rewind (cap);
  n = fread (logged, 1, sizeof logged - 1, cap);
  logged[n] = '\0';
  fclose (cap);
  return logged;
}

static unsigned
lines (const char *s)
{
  unsigned n = 0;

  for (; *s; s++)
    n += *s == '\n';
  return n;
}

static struct mirror_fsm
at (enum mirror_fsm_state s)
{
  struct mirror_fsm f;

  mirror_fsm_init (&f, MF_MARKING, "vm1", "nbd://t");
  f.state = s;                  /* the test's shortcut to any state */
  return f;
}

/* ---- The table ---- */

static void
test_table (void **state)
{
  (void) state;
  for (int from = 0; from < N; from++)
    for (int to = 0; to < N; to++)
      assert_int_equal (mirror_fsm_allowed (from, to), expected[from][to] != NULL);
  assert_false (mirror_fsm_allowed (N, MF_SYNCING));
  assert_false (mirror_fsm_allowed (MF_SYNCING, N));
}

/* Every legal move: made, and logged as one line naming the export,
 * the target, both states, the reason and the error. */
static void
test_every_legal_move (void **state)
{
  unsigned moves = 0;

  (void) state;
  for (int from = 0; from < N; from++)
    for (int to = 0; to < N; to++) {
      struct mirror_fsm f = at (from);
      char want[256];
      const char *out;

      if (expected[from][to] == NULL)
        continue;
      capture ();
      assert_true (mirror_fsm_go (&f, to, expected[from][to], "boom"));
      out = captured ();
      assert_int_equal (f.state, to);
      snprintf (want, sizeof want, "export vm1: mirror to nbd://t: %s -> %s (%s): boom\n",
                names[from], names[to], expected[from][to]);
      assert_non_null (strstr (out, want));
      assert_int_equal (lines (out), 1);
      moves++;
    }
  assert_int_equal (moves, 22);
}

/* Without an error there is no ": " tail. */
static void
test_no_detail (void **state)
{
  struct mirror_fsm f = at (MF_SYNCING);
  const char *out;

  (void) state;
  capture ();
  assert_true (mirror_fsm_go (&f, MF_READY, "converged", ""));
  out = captured ();
  assert_non_null (strstr (out, ": syncing -> ready (converged)\n"));
  capture ();
  assert_true (mirror_fsm_go (&f, MF_CUTOVER, "cut-over asked", NULL));
  out = captured ();
  assert_non_null (strstr (out, ": ready -> cutover (cut-over asked)\n"));
}

/* Every illegal move is refused (built without the assertion here),
 * logged as a bug, and leaves the state alone; so is a terminal
 * state's every move. */
static void
test_every_illegal_move (void **state)
{
  unsigned refused = 0;

  (void) state;
  for (int from = 0; from < N; from++)
    for (int to = 0; to < N; to++) {
      struct mirror_fsm f = at (from);
      const char *out;

      if (expected[from][to] != NULL || from == to)
        continue;
      capture ();
      assert_false (mirror_fsm_go (&f, to, "test", NULL));
      out = captured ();
      assert_int_equal (f.state, from);
      assert_non_null (strstr (out, "illegal state change"));
      assert_non_null (strstr (out, names[from]));
      refused++;
    }
  assert_int_equal (refused, N * N - N - 22);
}

/* Staying is no move: nothing logged. */
static void
test_same_state (void **state)
{
  (void) state;
  for (int s = 0; s < N; s++) {
    struct mirror_fsm f = at (s);
    capture ();
    assert_false (mirror_fsm_go (&f, s, "again", NULL));
    assert_string_equal (captured (), "");
    assert_int_equal (f.state, s);
  }
}

/* ---- Names ---- */

static void
test_names (void **state)
{
  static const enum mirror_state shown[N] = {
    MIRROR_SYNCING, MIRROR_SYNCING, MIRROR_SYNCING, MIRROR_READY,
    MIRROR_CUTOVER, MIRROR_DISCONNECTED, MIRROR_COMPLETED, MIRROR_FAILED,
    MIRROR_CANCELLED,
  };

  (void) state;
  for (int s = 0; s < N; s++) {
    assert_string_equal (mirror_fsm_name (s), names[s]);
    assert_int_equal (mirror_fsm_public (s), shown[s]);
    assert_int_equal (mirror_fsm_terminal (s),
                      s == MF_COMPLETED || s == MF_FAILED || s == MF_CANCELLED);
  }
  assert_string_equal (mirror_fsm_name (N), "?");
  /* Every state but marking and connecting shows under its own name. */
  for (int s = MF_SYNCING; s < N; s++)
    assert_string_equal (mirror_state_name (mirror_fsm_public (s)), names[s]);
}

/* ---- The job's paths ---- */

static void
walk (enum mirror_fsm_state initial, const enum mirror_fsm_state *path,
      size_t n)
{
  struct mirror_fsm f;

  mirror_fsm_init (&f, initial, "vm1", "nbd://t");
  capture ();
  for (size_t i = 0; i < n; i++)
    assert_true (mirror_fsm_go (&f, path[i], "path", NULL));
  assert_int_equal (lines (captured ()), n);
  assert_int_equal (f.state, path[n - 1]);
}

#define WALK(initial, ...) do {                                           \
    static const enum mirror_fsm_state p_[] = { __VA_ARGS__ };            \
    walk (initial, p_, sizeof p_ / sizeof p_[0]);                         \
  } while (0)

static void
test_paths (void **state)
{
  (void) state;
  /* A new job, all the way. */
  WALK (MF_MARKING, MF_CONNECTING, MF_SYNCING, MF_READY, MF_CUTOVER,
        MF_COMPLETED);
  /* A resumed one. */
  WALK (MF_CONNECTING, MF_SYNCING, MF_READY);
  /* Target lost and back, twice; then cut over from syncing. */
  WALK (MF_CONNECTING, MF_SYNCING, MF_DISCONNECTED, MF_SYNCING, MF_READY,
        MF_DISCONNECTED, MF_SYNCING, MF_CUTOVER, MF_COMPLETED);
  /* Unreachable at boot: retried, not failed. */
  WALK (MF_CONNECTING, MF_DISCONNECTED, MF_SYNCING);
  /* Cut-overs given up (timeout, failed flush) go back where they were. */
  WALK (MF_CONNECTING, MF_SYNCING, MF_CUTOVER, MF_SYNCING, MF_READY,
        MF_CUTOVER, MF_READY, MF_CUTOVER, MF_COMPLETED);
}

static void
test_failures (void **state)
{
  (void) state;
  WALK (MF_MARKING, MF_FAILED);                         /* marks not on disk */
  WALK (MF_CONNECTING, MF_FAILED);                      /* refused / unreachable */
  WALK (MF_CONNECTING, MF_DISCONNECTED, MF_FAILED);     /* back, but another size */
  WALK (MF_CONNECTING, MF_SYNCING, MF_CUTOVER, MF_FAILED);  /* lost in cut-over */
}

static void
test_cancels (void **state)
{
  (void) state;
  WALK (MF_MARKING, MF_CANCELLED);
  WALK (MF_CONNECTING, MF_CANCELLED);
  WALK (MF_CONNECTING, MF_SYNCING, MF_CANCELLED);
  WALK (MF_CONNECTING, MF_SYNCING, MF_READY, MF_CANCELLED);
  WALK (MF_CONNECTING, MF_SYNCING, MF_CUTOVER, MF_CANCELLED);
  WALK (MF_CONNECTING, MF_DISCONNECTED, MF_CANCELLED);
}

/* Over is over: a cancel after the end, or a failure after a cancel,
 * is a bug and changes nothing. */
static void
test_terminal_stays (void **state)
{
  (void) state;
  for (int s = MF_COMPLETED; s < N; s++)
    for (int to = 0; to < N; to++) {
      struct mirror_fsm f = at (s);
      capture ();
      assert_false (mirror_fsm_go (&f, to, "late", NULL));
      captured ();
      assert_int_equal (f.state, s);
    }
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_table),
    cmocka_unit_test (test_every_legal_move),
    cmocka_unit_test (test_no_detail),
    cmocka_unit_test (test_every_illegal_move),
    cmocka_unit_test (test_same_state),
    cmocka_unit_test (test_names),
    cmocka_unit_test (test_paths),
    cmocka_unit_test (test_failures),
    cmocka_unit_test (test_cancels),
    cmocka_unit_test (test_terminal_stays),
  };

  log_init ("test-mirror-fsm", false, 0);
  return cmocka_run_group_tests (tests, NULL, NULL);
}
