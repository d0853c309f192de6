/* SPDX-License-Identifier: MIT */
/* Generation identifiers and the connect-time decision (generation.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/error.h"
#include "generation.h"

static bool
in_history (const struct ha_gen *g, uint64_t gen)
{
  return gen && (g->history[0] == gen || g->history[1] == gen);
}

/* Is there a generation both sides' bitmaps count from, so that the
 * union of the two bitmaps covers every difference? */
static bool
bitmaps_cover (const struct ha_gen *l, const struct ha_gen *p)
{
  return l->current == p->current
    || (l->bitmap && l->bitmap == p->current)
    || (p->bitmap && p->bitmap == l->current)
    || (l->bitmap && l->bitmap == p->bitmap);
}

/* The admin demoted one side of a split-brain to discard its changes:
 * it becomes the target of the other. */
static enum ha_decision
resolve_discard (const struct ha_view *l, const struct ha_view *p)
{
  bool cover = bitmaps_cover (&l->gen, &p->gen);

  if (l->discard)
    return cover ? HA_TARGET_BITMAP : HA_TARGET_FULL;
  return cover ? HA_SOURCE_BITMAP : HA_SOURCE_FULL;
}

enum ha_decision
ha_decide (const struct ha_view *l, const struct ha_view *p)
{
  const struct ha_gen *lg = &l->gen, *pg = &p->gen;

  if (l->discard != p->discard)
    return resolve_discard (l, p);
  if (lg->current == 0 || pg->current == 0) {
    if (lg->current == pg->current)
      return HA_NO_RESYNC;      /* neither has data */
    return lg->current == 0 ? HA_TARGET_FULL : HA_SOURCE_FULL;
  }
  if (lg->current == pg->current)
    return HA_NO_RESYNC;
  if (lg->bitmap && lg->bitmap == pg->current)
    return HA_SOURCE_BITMAP;    /* we moved on from where the peer is */
  if (pg->bitmap && pg->bitmap == lg->current)
    return HA_TARGET_BITMAP;
  if (lg->bitmap && lg->bitmap == pg->bitmap)
    return HA_SPLITBRAIN;       /* both moved on from the same point */
  /* One is further along than its bitmap reaches back. */
  if (in_history (pg, lg->current) || in_history (pg, lg->bitmap))
    return HA_TARGET_FULL;
  if (in_history (lg, pg->current) || in_history (lg, pg->bitmap))
    return HA_SOURCE_FULL;
  /* Unrelated data: only a primary's can be preferred. */
  if (l->role == HA_PRIMARY && p->role == HA_SECONDARY)
    return HA_SOURCE_FULL;
  if (p->role == HA_PRIMARY && l->role == HA_SECONDARY)
    return HA_TARGET_FULL;
  return HA_UNRELATED;
}

bool
ha_decision_is_source (enum ha_decision d)
{
  return d == HA_SOURCE_BITMAP || d == HA_SOURCE_FULL;
}

bool
ha_decision_is_target (enum ha_decision d)
{
  return d == HA_TARGET_BITMAP || d == HA_TARGET_FULL;
}

bool
ha_decision_is_full (enum ha_decision d)
{
  return d == HA_SOURCE_FULL || d == HA_TARGET_FULL;
}

uint64_t
ha_gen_new (void)
{
  uint64_t g = 0;

  while (g == 0) {
    if (getrandom (&g, sizeof g, 0) != sizeof g) {
      /* Never expected; time and address still differ per call. */
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      g ^= (uint64_t) ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t) ts.tv_sec
        ^ (uint64_t) (uintptr_t) &g;
    }
  }
  return g;
}

void
ha_gen_advance (struct ha_gen *g)
{
  if (g->bitmap == 0)
    g->bitmap = g->current;
  if (g->current) {
    g->history[1] = g->history[0];
    g->history[0] = g->current;
  }
  g->current = ha_gen_new ();
}

void
ha_gen_adopt (struct ha_gen *g, const struct ha_gen *from)
{
  g->current = from->current;
  g->bitmap = 0;
  g->history[0] = from->history[0];
  g->history[1] = from->history[1];
}

const char *
ha_role_name (enum ha_role r)
{
  return r == HA_PRIMARY ? "primary" : "secondary";
}

static const char *const disk_names[] = {
  [DISK_UPTODATE] = "uptodate", [DISK_INCONSISTENT] = "inconsistent",
  [DISK_OUTDATED] = "outdated", [DISK_SPLITBRAIN] = "splitbrain",
};

const char *
ha_disk_name (enum ha_disk d)
{
  return disk_names[d];
}

int
ha_disk_parse (const char *s, enum ha_disk *out)
{
  for (size_t i = 0; i < sizeof disk_names / sizeof disk_names[0]; i++)
    if (strcmp (s, disk_names[i]) == 0) {
      *out = (enum ha_disk) i;
      return 0;
    }
  return error_set (EINVAL, "unknown disk state '%s'", s);
}

const char *
ha_decision_name (enum ha_decision d)
{
  switch (d) {
  case HA_NO_RESYNC:     return "no resync";
  case HA_SOURCE_BITMAP: return "bitmap resync to the peer";
  case HA_TARGET_BITMAP: return "bitmap resync from the peer";
  case HA_SOURCE_FULL:   return "full resync to the peer";
  case HA_TARGET_FULL:   return "full resync from the peer";
  case HA_SPLITBRAIN:    return "split-brain";
  default:               return "unrelated data";
  }
}

int
ha_view_format (const struct ha_view *v, char *buf, size_t len)
{
  int n = snprintf (buf, len, "role=%s disk=%s cur=%016" PRIx64 " bm=%016"
                    PRIx64 " h0=%016" PRIx64 " h1=%016" PRIx64
                    " discard=%d insync=%d", ha_role_name (v->role),
                    ha_disk_name (v->disk), v->gen.current, v->gen.bitmap,
                    v->gen.history[0], v->gen.history[1], v->discard,
                    v->in_sync);
  if (n >= 0 && (size_t) n < len && v->migrating)
    n += snprintf (buf + n, len - (size_t) n, " mig=1");
  if (n >= 0 && (size_t) n < len && v->handover)
    n += snprintf (buf + n, len - (size_t) n, " handover=1");
  if (n < 0 || (size_t) n >= len)
    return error_set (ENOSPC, "view does not fit %zu bytes", len);
  return 0;
}

static int
parse_hex (const char *key, const char *val, uint64_t *out)
{
  char *end;

  errno = 0;
  *out = strtoull (val, &end, 16);
  if (errno || end == val || *end != '\0')
    return error_set (EINVAL, "bad %s '%s'", key, val);
  return 0;
}

static int
parse_bool (const char *key, const char *val, bool *out)
{
  if (strcmp (val, "0") != 0 && strcmp (val, "1") != 0)
    return error_set (EINVAL, "bad %s '%s'", key, val);
  *out = val[0] == '1';
  return 0;
}

static int
parse_pair (char *key, char *val, struct ha_view *v, unsigned *seen)
{
  if (strcmp (key, "role") == 0) {
    if (strcmp (val, "primary") != 0 && strcmp (val, "secondary") != 0)
      return error_set (EINVAL, "bad role '%s'", val);
    v->role = val[0] == 'p' ? HA_PRIMARY : HA_SECONDARY;
    *seen |= 1;
    return 0;
  }
  if (strcmp (key, "disk") == 0) {
    *seen |= 2;
    return ha_disk_parse (val, &v->disk);
  }
  if (strcmp (key, "cur") == 0) {
    *seen |= 4;
    return parse_hex (key, val, &v->gen.current);
  }
  if (strcmp (key, "bm") == 0)
    return parse_hex (key, val, &v->gen.bitmap);
  if (strcmp (key, "h0") == 0)
    return parse_hex (key, val, &v->gen.history[0]);
  if (strcmp (key, "h1") == 0)
    return parse_hex (key, val, &v->gen.history[1]);
  if (strcmp (key, "discard") == 0)
    return parse_bool (key, val, &v->discard);
  if (strcmp (key, "insync") == 0)
    return parse_bool (key, val, &v->in_sync);
  if (strcmp (key, "mig") == 0)
    return parse_bool (key, val, &v->migrating);
  if (strcmp (key, "handover") == 0)
    return parse_bool (key, val, &v->handover);
  return 0;                     /* a newer peer's field */
}

int
ha_view_parse (const char *s, struct ha_view *v)
{
  char buf[512], *save = NULL, *tok;
  unsigned seen = 0;

  if (strlen (s) >= sizeof buf)
    return error_set (EINVAL, "peer state too long");
  memset (v, 0, sizeof *v);
  strcpy (buf, s);
  for (tok = strtok_r (buf, " ", &save); tok; tok = strtok_r (NULL, " ", &save)) {
    char *eq = strchr (tok, '=');
    if (eq == NULL)
      return error_set (EINVAL, "bad peer state field '%s'", tok);
    *eq = '\0';
    if (parse_pair (tok, eq + 1, v, &seen) == -1)
      return -1;
  }
  if (seen != 7)
    return error_set (EINVAL, "peer state lacks role, disk or cur");
  return 0;
}
