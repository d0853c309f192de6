/* SPDX-License-Identifier: MIT */
/* ha_decide(): the table of cases two peers meet in, and the wire
 * form of a view. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "ha/generation.h"

#define P HA_PRIMARY
#define S HA_SECONDARY

struct side {
  enum ha_role role;
  uint64_t cur, bm, h0, h1;
  bool discard;
};

struct row {
  const char *what;
  struct side l, p;
  enum ha_decision want;
};

static const struct row table[] = {
  { "both new, nothing on either disk",
    { S, 0, 0, 0, 0 }, { S, 0, 0, 0, 0 }, HA_NO_RESYNC },
  { "fresh secondary meets a primary",
    { S, 0, 0, 0, 0 }, { P, 0xa, 0, 0, 0 }, HA_TARGET_FULL },
  { "primary meets a fresh secondary",
    { P, 0xa, 0, 0, 0 }, { S, 0, 0, 0, 0 }, HA_SOURCE_FULL },
  { "in sync",
    { P, 0xa, 0, 0, 0 }, { S, 0xa, 0, 0, 0 }, HA_NO_RESYNC },
  { "primary wrote while disconnected",
    { P, 0xb, 0xa, 0xa, 0 }, { S, 0xa, 0, 0, 0 }, HA_SOURCE_BITMAP },
  { "the same, seen from the secondary",
    { S, 0xa, 0, 0, 0 }, { P, 0xb, 0xa, 0xa, 0 }, HA_TARGET_BITMAP },
  { "failover: the old primary returns (did not write after the link went)",
    { P, 0xa, 0, 0, 0 }, { P, 0xc, 0xa, 0xa, 0 }, HA_TARGET_BITMAP },
  { "failover, seen from the new primary",
    { P, 0xc, 0xa, 0xa, 0 }, { S, 0xa, 0, 0, 0 }, HA_SOURCE_BITMAP },
  { "split-brain: both moved on from the same generation",
    { P, 0xb, 0xa, 0xa, 0 }, { P, 0xc, 0xa, 0xa, 0 }, HA_SPLITBRAIN },
  { "split-brain even when both are secondary now",
    { S, 0xb, 0xa, 0xa, 0 }, { S, 0xc, 0xa, 0xa, 0 }, HA_SPLITBRAIN },
  { "split-brain resolved: this side discards",
    { S, 0xb, 0xa, 0xa, 0, true }, { P, 0xc, 0xa, 0xa, 0 }, HA_TARGET_BITMAP },
  { "split-brain resolved: the peer discards",
    { P, 0xc, 0xa, 0xa, 0 }, { S, 0xb, 0xa, 0xa, 0, true }, HA_SOURCE_BITMAP },
  { "discard without a common generation: full",
    { S, 0xb, 0, 0, 0, true }, { P, 0xc, 0, 0, 0 }, HA_TARGET_FULL },
  { "peer two generations ahead, bitmap from an older point",
    { S, 0xa, 0, 0, 0 }, { P, 0xd, 0xc, 0xc, 0xa }, HA_TARGET_FULL },
  { "the same from the other side",
    { P, 0xd, 0xc, 0xc, 0xa }, { S, 0xa, 0, 0, 0 }, HA_SOURCE_FULL },
  { "bitmap still counting from the peer's generation after two promotions",
    { P, 0xd, 0xa, 0xc, 0xa }, { S, 0xa, 0, 0, 0 }, HA_SOURCE_BITMAP },
  { "unrelated data, one primary: it wins with a full copy",
    { P, 0xa, 0, 0, 0 }, { S, 0xb, 0, 0, 0 }, HA_SOURCE_FULL },
  { "unrelated data, seen from the secondary",
    { S, 0xb, 0, 0, 0 }, { P, 0xa, 0, 0, 0 }, HA_TARGET_FULL },
  { "unrelated data, two secondaries: no one to prefer",
    { S, 0xa, 0, 0, 0 }, { S, 0xb, 0, 0, 0 }, HA_UNRELATED },
  { "unrelated data, two primaries",
    { P, 0xa, 0, 0, 0 }, { P, 0xb, 0, 0, 0 }, HA_UNRELATED },
};

static struct ha_view
view (const struct side *s)
{
  struct ha_view v = { .role = s->role, .discard = s->discard };
  v.gen = (struct ha_gen) { s->cur, s->bm, { s->h0, s->h1 } };
  return v;
}

static void
test_table (void **state)
{
  (void) state;
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    struct ha_view l = view (&table[i].l), p = view (&table[i].p);
    enum ha_decision got = ha_decide (&l, &p);
    if (got != table[i].want)
      fail_msg ("%s: got '%s', want '%s'", table[i].what,
                ha_decision_name (got), ha_decision_name (table[i].want));
  }
}

/* Whatever one side decides, the other decides the mirror image. */
static void
test_symmetric (void **state)
{
  (void) state;
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    struct ha_view l = view (&table[i].l), p = view (&table[i].p);
    enum ha_decision a = ha_decide (&l, &p), b = ha_decide (&p, &l);
    bool ok = (ha_decision_is_source (a) && ha_decision_is_target (b)
               && ha_decision_is_full (a) == ha_decision_is_full (b))
      || (ha_decision_is_target (a) && ha_decision_is_source (b)
          && ha_decision_is_full (a) == ha_decision_is_full (b))
      || (a == b && !ha_decision_is_source (a) && !ha_decision_is_target (a));
    if (!ok)
      fail_msg ("%s: '%s' one way, '%s' the other", table[i].what,
                ha_decision_name (a), ha_decision_name (b));
  }
}

static void
test_advance_adopt (void **state)
{
  struct ha_gen g = { 0xa, 0, { 0, 0 } }, peer;

  (void) state;
  ha_gen_advance (&g);
  assert_int_not_equal (g.current, 0);
  assert_int_not_equal (g.current, 0xa);
  assert_int_equal (g.bitmap, 0xa);
  assert_int_equal (g.history[0], 0xa);
  peer = g;
  ha_gen_advance (&g);          /* a second promotion keeps the bitmap's start */
  assert_int_equal (g.bitmap, 0xa);
  assert_int_equal (g.history[0], peer.current);
  assert_int_equal (g.history[1], 0xa);
  ha_gen_adopt (&peer, &g);
  assert_int_equal (peer.current, g.current);
  assert_int_equal (peer.bitmap, 0);
}

static void
test_wire (void **state)
{
  struct ha_view v = { HA_PRIMARY, DISK_OUTDATED, { 0x1234, 0xabcd, { 7, 8 } }, true, true };
  struct ha_view w;
  char buf[256];

  (void) state;
  assert_int_equal (ha_view_format (&v, buf, sizeof buf), 0);
  assert_int_equal (ha_view_parse (buf, &w), 0);
  assert_memory_equal (&v.gen, &w.gen, sizeof v.gen);
  assert_int_equal (w.role, HA_PRIMARY);
  assert_int_equal (w.disk, DISK_OUTDATED);
  assert_true (w.discard && w.in_sync);
  /* Newer peers may add fields; malformed ones are refused. */
  assert_int_equal (ha_view_parse ("role=secondary disk=uptodate cur=a future=x", &w), 0);
  assert_int_equal (ha_view_parse ("role=secondary disk=uptodate", &w), -1);
  assert_int_equal (ha_view_parse ("role=boss disk=uptodate cur=1", &w), -1);
  assert_int_equal (ha_view_parse ("role=primary disk=fine cur=1", &w), -1);
  assert_int_equal (ha_view_parse ("role=primary disk=uptodate cur=xyz", &w), -1);
  assert_int_equal (ha_view_parse ("role=primary disk=uptodate cur=1 junk", &w), -1);
  assert_int_equal (ha_view_format (&v, buf, 10), -1);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_table),
    cmocka_unit_test (test_symmetric),
    cmocka_unit_test (test_advance_adopt),
    cmocka_unit_test (test_wire),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
