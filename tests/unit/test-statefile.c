/* SPDX-License-Identifier: MIT */
/* Atomic state files: replace, remove, and the failures that must leave
 * the old content in place and say which step failed. */
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

#include "common/error.h"
#include "common/statefile.h"

static char dir[] = "/tmp/mirrord-test-statefile-XXXXXX";
static char path[256], tmp[260];

static int
setup (void **state)
{
  assert_non_null (mkdtemp (dir));
  snprintf (path, sizeof path, "%s/vm1.mirror", dir);
  snprintf (tmp, sizeof tmp, "%s.tmp", path);
  return 0;
}

static int
teardown (void **state)
{
  unlink (path);
  unlink (tmp);
  rmdir (dir);
  return 0;
}

static void
assert_content (const char *want)
{
  char buf[256] = "";
  FILE *fp = fopen (path, "r");

  assert_non_null (fp);
  assert_int_equal (fread (buf, 1, sizeof buf - 1, fp), strlen (want));
  fclose (fp);
  assert_string_equal (buf, want);
}

static void
test_replace (void **state)
{
  struct stat st;

  assert_int_equal (statefile_write (path, "one\n", 4), 0);
  assert_content ("one\n");
  assert_int_equal (statefile_write (path, "second\n", 7), 0);
  assert_content ("second\n");
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal (st.st_mode & 0777, 0600);
  assert_int_equal (access (tmp, F_OK), -1);                /* no leftover */
}

/* The rename fails (a directory is in the way): the old file stays, no
 * temporary is left, and the message names the step. */
static void
test_rename_fails (void **state)
{
  char blocked[300];

  snprintf (blocked, sizeof blocked, "%s/blocked", dir);
  assert_int_equal (mkdir (blocked, 0700), 0);
  snprintf (tmp, sizeof tmp, "%s/blocked/x", dir);
  assert_int_equal (mkdir (tmp, 0700), 0);
  errno = 0;
  assert_int_equal (statefile_write (tmp, "new\n", 4), -1);
  assert_non_null (strstr (error_get (), "renaming"));
  assert_int_equal (error_errno (), EISDIR);
  rmdir (tmp);
  snprintf (tmp, sizeof tmp, "%s/blocked/x.tmp", dir);
  assert_int_equal (access (tmp, F_OK), -1);
  rmdir (blocked);
  snprintf (tmp, sizeof tmp, "%s.tmp", path);
}

static void
test_no_directory (void **state)
{
  char nowhere[300];

  snprintf (nowhere, sizeof nowhere, "%s/missing/vm1.ha", dir);
  assert_int_equal (statefile_write (nowhere, "x", 1), -1);
  assert_non_null (strstr (error_get (), "creating"));
  assert_int_equal (error_errno (), ENOENT);
}

static void
test_remove (void **state)
{
  assert_int_equal (statefile_write (path, "x", 1), 0);
  assert_int_equal (statefile_remove (path), 0);
  assert_int_equal (access (path, F_OK), -1);
  assert_int_equal (statefile_remove (path), 0);            /* missing: fine */
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_replace),
    cmocka_unit_test (test_rename_fails),
    cmocka_unit_test (test_no_directory),
    cmocka_unit_test (test_remove),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
