/* SPDX-License-Identifier: MIT */
/* Image locks between open file descriptions of one process: which
 * bytes each kind of user locks, who may join whom, that a refused
 * user leaves nothing behind, and that a release lets the next in.
 * (QEMU itself on the other side: tests/test-image-lock-qemu.sh.) */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/error.h"
#include "image/lock.h"

static char path[64];

static int
setup (void **state)
{
  int fd;

  (void) state;
  snprintf (path, sizeof path, "/tmp/mirrord-test-lock-XXXXXX");
  fd = mkstemp (path);
  if (fd == -1 || ftruncate (fd, 1 << 20) == -1)
    return -1;
  close (fd);
  return 0;
}

static int
teardown (void **state)
{
  (void) state;
  unlink (path);
  return 0;
}

/* Opens the file and locks it as an image opened READONLY (GROWS). */
static int
open_locked (struct image_lock *l, bool readonly, bool grows)
{
  unsigned perm, unshared;
  int fd = open (path, readonly ? O_RDONLY : O_RDWR);

  assert_true (fd >= 0);
  image_lock_perms (readonly, grows, &perm, &unshared);
  if (image_lock_acquire (l, fd, path, perm, unshared) == -1) {
    close (fd);
    return -1;
  }
  return fd;
}

static void
close_locked (struct image_lock *l, int fd)
{
  image_lock_release (l);
  close (fd);
}

/* The bytes of the file other open file descriptions lock, as text. */
static const char *
locked_bytes (void)
{
  static char buf[128];
  size_t n = 0;
  int fd = open (path, O_RDONLY);

  assert_true (fd >= 0);
  buf[0] = '\0';
  for (off_t b = 100; b < 204; b++) {
    struct flock fl = {
      .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = b, .l_len = 1,
    };
    assert_int_equal (fcntl (fd, F_OFD_GETLK, &fl), 0);
    if (fl.l_type != F_UNLCK)
      n += (size_t) snprintf (buf + n, sizeof buf - n, "%s%d", n ? " " : "",
                              (int) b);
  }
  close (fd);
  return buf;
}

static void
test_bytes_of_each_user (void **state)
{
  struct image_lock l;
  int fd;

  (void) state;
  fd = open_locked (&l, false, false);
  assert_string_equal (locked_bytes (), "100 101 201 203");
  close_locked (&l, fd);
  fd = open_locked (&l, false, true);
  assert_string_equal (locked_bytes (), "100 101 103 201 203");
  close_locked (&l, fd);
  fd = open_locked (&l, true, false);
  assert_string_equal (locked_bytes (), "100 201 203");
  close_locked (&l, fd);
  assert_string_equal (locked_bytes (), "");
}

static void
test_readers_share (void **state)
{
  struct image_lock a, b;
  int fa, fb;

  (void) state;
  fa = open_locked (&a, true, false);
  fb = open_locked (&b, true, false);
  assert_true (fa >= 0 && fb >= 0);
  close_locked (&a, fa);
  assert_string_equal (locked_bytes (), "100 201 203");
  close_locked (&b, fb);
}

static void
test_one_writer (void **state)
{
  struct image_lock w, x;
  unsigned perm, unshared;
  int fw, fx;

  (void) state;
  fw = open_locked (&w, false, false);
  assert_true (fw >= 0);
  fx = open (path, O_RDWR);
  assert_true (fx >= 0);
  for (int ro = 0; ro < 2; ro++) {
    image_lock_perms (ro, false, &perm, &unshared);
    assert_int_equal (image_lock_acquire (&x, fx, path, perm, unshared), -1);
    assert_int_equal (error_errno (), EBUSY);
    assert_non_null (strstr (error_get (), "already in use by this mirrord"));
    image_lock_release (&x);            /* holds nothing: harmless */
  }
  /* The refused tries left nothing locked on their descriptor. */
  close_locked (&w, fw);
  assert_string_equal (locked_bytes (), "");
  close (fx);
  fx = open_locked (&x, false, true);
  assert_true (fx >= 0);
  close_locked (&x, fx);
}

static void
test_reader_keeps_writers_out (void **state)
{
  struct image_lock r, w;
  int fr;

  (void) state;
  fr = open_locked (&r, true, false);
  assert_true (fr >= 0);
  assert_int_equal (open_locked (&w, false, false), -1);
  assert_int_equal (error_errno (), EBUSY);
  close_locked (&r, fr);
}

/* Another user's locks, taken by hand as QEMU would (qemu-nbd, raw,
 * read-write: holds read and write, shares write): our refusal names
 * what conflicts. */
static void
test_foreign_writer (void **state)
{
  struct image_lock l;
  int fd = open (path, O_RDWR);

  (void) state;
  for (off_t b = 100; b <= 101; b++) {
    struct flock fl = {
      .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = b, .l_len = 1,
    };
    assert_int_equal (fcntl (fd, F_OFD_SETLK, &fl), 0);
  }
  assert_int_equal (open_locked (&l, true, false), -1);
  assert_non_null (strstr (error_get (), "image locked by another process "
                           "(QEMU or another mirrord?), which has \"write\" "
                           "access"));
  close (fd);
  fd = open_locked (&l, true, false);
  assert_true (fd >= 0);
  close_locked (&l, fd);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_bytes_of_each_user),
    cmocka_unit_test (test_readers_share),
    cmocka_unit_test (test_one_writer),
    cmocka_unit_test (test_reader_keeps_writers_out),
    cmocka_unit_test (test_foreign_writer),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
