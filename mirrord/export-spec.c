/* SPDX-License-Identifier: MIT */
/* Export specifications: parsing and validation, shared by the config
 * file, --export and the control API so all three accept the same. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/size.h"
#include "export.h"

void
export_spec_init (struct export_spec *s)
{
  memset (s, 0, sizeof *s);
  s->format = IMAGE_FORMAT_AUTO;
  s->role = ROLE_PRIMARY;
  s->mode = MODE_SYNC;
  s->granularity = EXPORT_DEFAULT_GRANULARITY;
  s->bitmap_extent = EXPORT_BITMAP_EXTENT_AUTO;
}

void
export_spec_clear (struct export_spec *s)
{
  free (s->name);
  free (s->path);
  free (s->peer);
  free (s->fence_peer);
  free (s->peer_user);
  export_spec_init (s);
}

static int
dup_field (char **dst, const char *src)
{
  *dst = NULL;
  if (src && (*dst = strdup (src)) == NULL)
    return error_set (ENOMEM, "strdup");
  return 0;
}

int
export_spec_copy (struct export_spec *dst, const struct export_spec *src)
{
  *dst = *src;
  if (dup_field (&dst->name, src->name) == -1
      || dup_field (&dst->path, src->path) == -1
      || dup_field (&dst->peer, src->peer) == -1
      || dup_field (&dst->fence_peer, src->fence_peer) == -1
      || dup_field (&dst->peer_user, src->peer_user) == -1) {
    export_spec_clear (dst);
    return -1;
  }
  return 0;
}

static bool
str_equal (const char *a, const char *b)
{
  return (a == NULL && b == NULL) || (a && b && strcmp (a, b) == 0);
}

bool
export_spec_equal (const struct export_spec *a, const struct export_spec *b)
{
  return str_equal (a->name, b->name) && str_equal (a->path, b->path)
    && str_equal (a->peer, b->peer) && a->format == b->format
    && a->role == b->role && a->mode == b->mode
    && a->granularity == b->granularity && a->bandwidth == b->bandwidth
    && a->readonly == b->readonly && a->cache == b->cache
    && a->bitmap_strict == b->bitmap_strict && a->no_bitmap == b->no_bitmap
    && a->bitmap_extent == b->bitmap_extent
    && a->max_lag == b->max_lag && str_equal (a->fence_peer, b->fence_peer)
    && a->peer_timeout_ms == b->peer_timeout_ms
    && str_equal (a->peer_user, b->peer_user);
}

const char *
export_role_name (enum export_role r)
{
  return r == ROLE_SECONDARY ? "secondary" : "primary";
}

const char *
mirror_mode_name (enum mirror_mode m)
{
  return m == MODE_ASYNC ? "async" : "sync";
}

static int
parse_bool (const char *key, const char *v, bool *out)
{
  if (strcmp (v, "true") == 0 || strcmp (v, "yes") == 0
      || strcmp (v, "on") == 0 || strcmp (v, "1") == 0)
    *out = true;
  else if (strcmp (v, "false") == 0 || strcmp (v, "no") == 0
           || strcmp (v, "off") == 0 || strcmp (v, "0") == 0)
    *out = false;
  else
    return error_set (0, "%s: expected true or false, not '%s'", key, v);
  return 0;
}

/* A duration: seconds ("5", "0.5") or milliseconds ("500ms"). */
static int
parse_ms (const char *key, const char *v, unsigned *out)
{
  char *end;
  double d;

  errno = 0;
  d = strtod (v, &end);
  if (errno || end == v || d <= 0)
    return error_set (0, "%s: expected a duration (\"5\", \"0.5\" or \"500ms\"), "
                      "not '%s'", key, v);
  if (strcmp (end, "ms") == 0)
    d /= 1000;
  else if (strcmp (end, "s") != 0 && *end != '\0')
    return error_set (0, "%s: unknown unit in '%s'", key, v);
  if (d > 3600)
    return error_set (0, "%s: %s is over an hour", key, v);
  *out = (unsigned) (d * 1000 + 0.5);
  return 0;
}

/* ---- The export keys: one table that export_spec_set() reads and
 * mirrord --help prints, so the two cannot drift apart. ---- */

struct export_key {
  const char *key;
  const char *value;            /* what it takes, for the help */
  const char *help;
  int (*set) (struct export_spec *s, const char *key, const char *v);
};

/* A string member; an empty value unsets the optional ones. */
static int
set_str (char **dst, const char *v, bool empty_is_null)
{
  free (*dst);
  return dup_field (dst, empty_is_null && v[0] == '\0' ? NULL : v);
}

static int
set_path (struct export_spec *s, const char *key, const char *v)
{
  return set_str (&s->path, v, false);
}

static int
set_peer (struct export_spec *s, const char *key, const char *v)
{
  return set_str (&s->peer, v, true);
}

static int
set_fence_peer (struct export_spec *s, const char *key, const char *v)
{
  return set_str (&s->fence_peer, v, true);
}

static int
set_peer_user (struct export_spec *s, const char *key, const char *v)
{
  return set_str (&s->peer_user, v, true);
}

static int
set_format (struct export_spec *s, const char *key, const char *v)
{
  return image_format_parse (v, &s->format) == -1 ? error_prefix ("%s", key) : 0;
}

static int
set_cache (struct export_spec *s, const char *key, const char *v)
{
  return image_cache_parse (v, &s->cache) == -1 ? error_prefix ("%s", key) : 0;
}

static int
set_enum (const char *key, const char *v, const char *a, const char *b, int *out)
{
  if (strcmp (v, a) == 0)
    *out = 0;
  else if (strcmp (v, b) == 0)
    *out = 1;
  else
    return error_set (0, "%s: expected %s or %s, not '%s'", key, a, b, v);
  return 0;
}

static int
set_role (struct export_spec *s, const char *key, const char *v)
{
  int e = 0;

  if (set_enum (key, v, "primary", "secondary", &e) == -1)
    return -1;
  s->role = e ? ROLE_SECONDARY : ROLE_PRIMARY;
  return 0;
}

static int
set_mode (struct export_spec *s, const char *key, const char *v)
{
  int e = 0;

  if (set_enum (key, v, "sync", "async", &e) == -1)
    return -1;
  s->mode = e ? MODE_ASYNC : MODE_SYNC;
  return 0;
}

static int
set_granularity (struct export_spec *s, const char *key, const char *v)
{
  return size_parse (v, &s->granularity) == -1 ? error_prefix ("%s", key) : 0;
}

static int
set_bandwidth (struct export_spec *s, const char *key, const char *v)
{
  return size_parse (v, &s->bandwidth) == -1 ? error_prefix ("%s", key) : 0;
}

static int
set_max_lag (struct export_spec *s, const char *key, const char *v)
{
  return size_parse (v, &s->max_lag) == -1 ? error_prefix ("%s", key) : 0;
}

static int
set_readonly (struct export_spec *s, const char *key, const char *v)
{
  return parse_bool (key, v, &s->readonly);
}

static int
set_bitmap (struct export_spec *s, const char *key, const char *v)
{
  bool on;

  if (parse_bool (key, v, &on) == -1)
    return -1;
  s->no_bitmap = !on;
  return 0;
}

static int
set_bitmap_strict (struct export_spec *s, const char *key, const char *v)
{
  return parse_bool (key, v, &s->bitmap_strict);
}

static int
set_bitmap_extent (struct export_spec *s, const char *key, const char *v)
{
  return size_parse (v, &s->bitmap_extent) == -1 ? error_prefix ("%s", key) : 0;
}

static int
set_peer_timeout (struct export_spec *s, const char *key, const char *v)
{
  return parse_ms (key, v, &s->peer_timeout_ms);
}

static const struct export_key keys[] = {
  { "path", "PATH", "the image: a file or a block device (required)", set_path },
  { "format", "raw|qcow2|auto", "image format (default auto: probed)", set_format },
  { "role", "primary|secondary", "the role it starts with the first time "
    "(default primary); then the generations decide", set_role },
  { "peer", "URI", "the HA peer's export (nbd:// or nbds://)", set_peer },
  { "mode", "sync|async", "replication to the peer (default sync)", set_mode },
  { "granularity", "SIZE", "dirty-bitmap granule, a power of two from 4K "
    "to 64M (default 64K)", set_granularity },
  { "bandwidth", "SIZE", "mirror limit in bytes per second (default none)",
    set_bandwidth },
  { "readonly", "BOOL", "refuse client writes (default false)", set_readonly },
  { "cache", "none|writeback", "none: O_DIRECT (default); writeback: the "
    "host page cache", set_cache },
  { "bitmap", "BOOL", "track dirty regions (default true; a peer needs it)",
    set_bitmap },
  { "bitmap-strict", "BOOL", "refuse a damaged bitmap file instead of "
    "marking the whole disk dirty (default false)", set_bitmap_strict },
  { "bitmap-extent", "SIZE", "a write that needs new dirty bits on disk "
    "marks its aligned extent of this size: one metadata flush per extent "
    "(default 64M, but 0 with a peer; 0: exact)", set_bitmap_extent },
  { "max-lag", "SIZE", "dirty bytes an async mirror may lag before guest "
    "writes are held (default 256M)", set_max_lag },
  { "fence-peer", "COMMAND", "HA: a hook run before promoting without the "
    "peer; promotion only if it exits 0", set_fence_peer },
  { "peer-timeout", "DURATION", "HA: a silent peer is down after it "
    "(default 5 s; \"500ms\" works too)", set_peer_timeout },
  { "peer-user", "NAME", "HA: the TLS-PSK user the peer replicates as "
    "(default: the one used to reach it)", set_peer_user },
};

#define NR_KEYS (sizeof keys / sizeof keys[0])

bool
export_spec_key (size_t i, const char **key, const char **value,
                 const char **help)
{
  if (i >= NR_KEYS)
    return false;
  *key = keys[i].key;
  *value = keys[i].value;
  *help = keys[i].help;
  return true;
}

int
export_spec_set (struct export_spec *s, const char *key, const char *value)
{
  char list[512];
  size_t len = 0;

  for (size_t i = 0; i < NR_KEYS; i++)
    if (strcmp (key, keys[i].key) == 0)
      return keys[i].set (s, key, value);
  list[0] = '\0';
  for (size_t i = 0; i < NR_KEYS && len < sizeof list; i++)
    len += (size_t) snprintf (list + len, sizeof list - len, "%s%s",
                              i == 0 ? "" : i + 1 == NR_KEYS ? " or " : ", ",
                              keys[i].key);
  return error_set (0, "unknown export key '%s' (expected %s)", key, list);
}

static bool
valid_name (const char *name)
{
  size_t n = strlen (name);

  if (n == 0 || n > 255)
    return false;
  for (const char *p = name; *p; p++)
    if ((unsigned char) *p < 0x21 || *p == '/' || *p == '\\' || *p == 0x7f)
      return false;
  return true;
}

int
export_spec_validate (const struct export_spec *s)
{
  if (s->name == NULL || !valid_name (s->name))
    return error_set (0, "export name '%s' is invalid (1-255 printable "
                      "characters, no spaces or slashes)",
                      s->name ? s->name : "");
  if (s->path == NULL || s->path[0] == '\0')
    return error_set (0, "export %s: no path given", s->name);
  if (s->granularity < EXPORT_MIN_GRANULARITY
      || s->granularity > EXPORT_MAX_GRANULARITY
      || (s->granularity & (s->granularity - 1)) != 0)
    return error_set (0, "export %s: granularity %llu must be a power of two "
                      "between 4K and 64M", s->name,
                      (unsigned long long) s->granularity);
  if (s->bitmap_extent != EXPORT_BITMAP_EXTENT_AUTO
      && (s->bitmap_extent > EXPORT_MAX_BITMAP_EXTENT
          || (s->bitmap_extent & (s->bitmap_extent - 1)) != 0))
    return error_set (0, "export %s: bitmap-extent %llu must be 0 or a power "
                      "of two up to 1G", s->name,
                      (unsigned long long) s->bitmap_extent);
  return 0;
}

int
export_spec_parse (struct export_spec *s, const char *str)
{
  char *copy = strdup (str), *save = NULL, *tok, *eq;
  int r = -1;

  if (copy == NULL)
    return error_set (ENOMEM, "strdup");
  tok = strtok_r (copy, ",", &save);
  eq = tok ? strchr (tok, '=') : NULL;
  if (eq == NULL) {
    error_set (0, "export '%s': expected NAME=PATH[,key=value]...", str);
    goto out;
  }
  *eq = '\0';
  free (s->name);
  if (dup_field (&s->name, tok) == -1
      || export_spec_set (s, "path", eq + 1) == -1)
    goto out;
  while ((tok = strtok_r (NULL, ",", &save)) != NULL) {
    eq = strchr (tok, '=');
    if (eq == NULL && strcmp (tok, "readonly") == 0)
      s->readonly = true;
    else if (eq == NULL) {
      error_set (0, "export '%s': '%s' is not key=value", str, tok);
      goto out;
    }
    else {
      *eq = '\0';
      if (export_spec_set (s, tok, eq + 1) == -1)
        goto out;
    }
  }
  r = export_spec_validate (s);
 out:
  free (copy);
  return r;
}
