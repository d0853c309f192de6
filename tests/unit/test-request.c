/* SPDX-License-Identifier: MIT */
/* request_check(): which transmission requests are refused, and how. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "nbd/conn.h"

#define SIZE (1u << 20)

static const struct request_ctx rw = {
  .size = SIZE, .writable = true, .structured = true, .meta_selected = true,
  .eflags = NBD_FLAG_SEND_FAST_ZERO,
};
static const struct request_ctx ro = {
  .size = SIZE, .writable = false, .structured = false,
};

static void
test_valid_requests (void **state)
{
  assert_int_equal (request_check (NBD_CMD_READ, 0, 0, 4096, &rw), 0);
  assert_int_equal (request_check (NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096, &rw), 0);
  assert_int_equal (request_check (NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, SIZE - 1, 1, &rw), 0);
  assert_int_equal (request_check (NBD_CMD_FLUSH, 0, 0, 0, &rw), 0);
  assert_int_equal (request_check (NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0, &rw), 0);
  assert_int_equal (request_check (NBD_CMD_WRITE_ZEROES,
                                   NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
                                   0, SIZE, &rw), 0);
  assert_int_equal (request_check (NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE,
                                   0, SIZE, &rw), 0);
  assert_int_equal (request_check (NBD_CMD_DISC, 0, 0, 0, &rw), 0);
  /* Commands with no payload may exceed the maximum payload. */
  assert_int_equal (request_check (NBD_CMD_TRIM, 0, 0, SIZE, &rw), 0);
}

static void
test_range (void **state)
{
  /* Past the end: reads EINVAL, writes ENOSPC (the spec's SHOULDs). */
  assert_int_equal (request_check (NBD_CMD_READ, 0, SIZE, 1, &rw), EINVAL);
  assert_int_equal (request_check (NBD_CMD_READ, 0, SIZE - 1, 2, &rw), EINVAL);
  assert_int_equal (request_check (NBD_CMD_WRITE, 0, SIZE - 1, 2, &rw), ENOSPC);
  assert_int_equal (request_check (NBD_CMD_WRITE_ZEROES, 0, SIZE, 4096, &rw), ENOSPC);
  assert_int_equal (request_check (NBD_CMD_TRIM, 0, SIZE + 1, 1, &rw), EINVAL);
  /* Offsets that would wrap around. */
  assert_int_equal (request_check (NBD_CMD_READ, 0, UINT64_MAX, 2, &rw), EINVAL);
  assert_int_equal (request_check (NBD_CMD_WRITE, 0, UINT64_MAX - 1, 4, &rw), ENOSPC);
  assert_int_equal (request_check (NBD_CMD_READ, 0, 0, 0, &rw), EINVAL);
}

static void
test_oversized (void **state)
{
  struct request_ctx big = rw;

  big.size = UINT64_C (1) << 40;
  assert_int_equal (request_check (NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD, &big), 0);
  assert_int_equal (request_check (NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1, &big), EINVAL);
  assert_int_equal (request_check (NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 1, &big), EINVAL);
}

static void
test_flags (void **state)
{
  /* DF needs structured replies; REQ_ONE only on BLOCK_STATUS. */
  assert_int_equal (request_check (NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1, &ro), EINVAL);
  assert_int_equal (request_check (NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 1, &rw), EINVAL);
  assert_int_equal (request_check (NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 1, &rw), EINVAL);
  assert_int_equal (request_check (NBD_CMD_READ, 1u << 9, 0, 1, &rw), EINVAL);
  /* FAST_ZERO only if advertised. */
  struct request_ctx nofast = rw;
  nofast.eflags = 0;
  assert_int_equal (request_check (NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO,
                                   0, 1, &nofast), EINVAL);
}

static void
test_policy (void **state)
{
  assert_int_equal (request_check (NBD_CMD_WRITE, 0, 0, 1, &ro), EPERM);
  assert_int_equal (request_check (NBD_CMD_TRIM, 0, 0, 1, &ro), EPERM);
  assert_int_equal (request_check (NBD_CMD_WRITE_ZEROES, 0, 0, 1, &ro), EPERM);
  assert_int_equal (request_check (NBD_CMD_READ, 0, 0, 1, &ro), 0);
  /* BLOCK_STATUS needs a selected context. */
  assert_int_equal (request_check (NBD_CMD_BLOCK_STATUS, 0, 0, 1, &ro), EINVAL);
  assert_int_equal (request_check (9, 0, 0, 1, &rw), EINVAL);
  assert_int_equal (request_check (0xffff, 0, 0, 1, &rw), EINVAL);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_valid_requests),
    cmocka_unit_test (test_range),
    cmocka_unit_test (test_oversized),
    cmocka_unit_test (test_flags),
    cmocka_unit_test (test_policy),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
