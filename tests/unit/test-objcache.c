/* SPDX-License-Identifier: MIT */
/* The object cache: objects come back zeroed however they were left,
 * and no more than the bound wait in the cache. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/objcache.h"

struct thing {
  uint64_t a[5];
  void *p;
};

static void
test_reused_objects_are_zeroed (void **state)
{
  struct objcache c = OBJCACHE_INIT (struct thing, 4);
  static const struct thing zero;

  (void) state;
  for (int i = 0; i < 3; i++) {
    struct thing *t = objcache_get (&c);
    assert_non_null (t);
    assert_memory_equal (t, &zero, sizeof *t);
    memset (t, 0xa5, sizeof *t);        /* as a user leaves it */
    objcache_put (&c, t);
  }
  objcache_put (&c, NULL);              /* ignored */
  while (c.nr > 0)
    free (objcache_get (&c));
}

static void
test_cache_is_bounded (void **state)
{
  struct objcache c = OBJCACHE_INIT (struct thing, 4);
  struct thing *t[10];

  (void) state;
  for (int i = 0; i < 10; i++)
    assert_non_null (t[i] = objcache_get (&c));
  for (int i = 0; i < 10; i++)
    objcache_put (&c, t[i]);
  assert_true (c.nr <= 4);              /* the rest were freed */
  while (c.nr > 0)
    free (objcache_get (&c));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_reused_objects_are_zeroed),
    cmocka_unit_test (test_cache_is_bounded),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
