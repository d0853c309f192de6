/* SPDX-License-Identifier: MIT */
/* Wire encoding: byte order, layouts, errno mapping, and the image
 * extent list that BLOCK_STATUS and sparse reads are built from. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "image/image.h"
#include "nbd/conn.h"

static void
test_layouts (void **state)
{
  assert_int_equal (sizeof (struct nbd_request), 28);
  assert_int_equal (sizeof (struct nbd_simple_reply), 16);
  assert_int_equal (sizeof (struct nbd_structured_reply), 20);
  assert_int_equal (sizeof (struct nbd_option_hdr), 16);
  assert_int_equal (sizeof (struct nbd_option_reply), 20);
}

static void
test_byte_order (void **state)
{
  uint8_t buf[8];

  put32 (buf, NBD_REQUEST_MAGIC);
  assert_int_equal (buf[0], 0x25);
  assert_int_equal (buf[3], 0x13);
  assert_int_equal (get32 (buf), NBD_REQUEST_MAGIC);
  put64 (buf, NBD_MAGIC);
  assert_memory_equal (buf, "NBDMAGIC", 8);
  put64 (buf, NBD_IHAVEOPT);
  assert_memory_equal (buf, "IHAVEOPT", 8);
  put16 (buf, 0x1234);
  assert_int_equal (buf[0], 0x12);
  assert_int_equal (get16 (buf), 0x1234);
}

static void
test_errno_mapping (void **state)
{
  assert_int_equal (proto_errno_to_nbd (0), 0);
  assert_int_equal (proto_errno_to_nbd (EPERM), 1);
  assert_int_equal (proto_errno_to_nbd (EROFS), 1);
  assert_int_equal (proto_errno_to_nbd (EIO), 5);
  assert_int_equal (proto_errno_to_nbd (ENOMEM), 12);
  assert_int_equal (proto_errno_to_nbd (EINVAL), 22);
  assert_int_equal (proto_errno_to_nbd (ENOSPC), 28);
  assert_int_equal (proto_errno_to_nbd (EDQUOT), 28);
  assert_int_equal (proto_errno_to_nbd (EFBIG), 28);
  assert_int_equal (proto_errno_to_nbd (EOVERFLOW), 75);
  assert_int_equal (proto_errno_to_nbd (ENOTSUP), 95);
  assert_int_equal (proto_errno_to_nbd (ESHUTDOWN), 108);
  /* Anything the protocol has no number for is EIO. */
  assert_int_equal (proto_errno_to_nbd (EBADF), 5);
  assert_int_equal (proto_errno_to_nbd (ENOENT), 5);
}

static void
test_extents_merge_and_cap (void **state)
{
  struct image_extents e = { .max = 2 };

  assert_int_equal (image_extents_add (&e, 0, 100, 0), 0);
  assert_int_equal (image_extents_add (&e, 100, 50, 0), 0);    /* merged */
  assert_int_equal (e.nr, 1);
  assert_int_equal (e.ext[0].length, 150);
  assert_int_equal (image_extents_add (&e, 150, 10, 3), 0);
  assert_int_equal (image_extents_add (&e, 160, 10, 3), 0);    /* merged */
  assert_int_equal (image_extents_add (&e, 170, 10, 0), 1);    /* full */
  assert_int_equal (e.nr, 2);
  assert_int_equal (e.ext[1].offset, 150);
  assert_int_equal (e.ext[1].length, 20);
  assert_int_equal (image_extents_add (&e, 170, 0, 0), 0);     /* empty: ignored */
  image_extents_free (&e);
  assert_null (e.ext);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_layouts),
    cmocka_unit_test (test_byte_order),
    cmocka_unit_test (test_errno_mapping),
    cmocka_unit_test (test_extents_merge_and_cap),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
