/* SPDX-License-Identifier: MIT */
/* Human-readable output of mirrorctl.  Every member is read through
 * field.c, so a missing or mistyped member prints as a default rather
 * than crashing; --json output is the reply's result unchanged. */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>

#include "common/size.h"
#include "ctl.h"

const char *
print_eta (json_object *m, char *buf, size_t len)
{
  uint64_t s = field_u64 (m, "eta_s");

  if (!field_has (m, "eta_s"))  /* null: no rate to go by */
    snprintf (buf, len, "unknown");
  else if (s >= 3600)
    snprintf (buf, len, "%" PRIu64 "h%02um%02us", s / 3600,
              (unsigned) (s / 60 % 60), (unsigned) (s % 60));
  else if (s >= 60)
    snprintf (buf, len, "%um%02us", (unsigned) (s / 60), (unsigned) (s % 60));
  else
    snprintf (buf, len, "%us", (unsigned) s);
  return buf;
}

double
print_percent (uint64_t done, uint64_t total)
{
  if (total == 0 || done >= total)
    return 100.0;
  return (double) (uint64_t) ((double) done * 1000.0 / (double) total) / 10;
}

static void
print_mirror (json_object *m)
{
  char done[32], total[32], rate[32], eta[32];
  uint64_t d = field_u64 (m, "done_bytes"), t = field_u64 (m, "total_bytes");

  if (m == NULL) {
    printf ("  mirror: none\n");
    return;
  }
  printf ("  mirror: %s %s -> %s, %s/%s (%.1f%%), %s/s, ETA %s",
          or_default (field_str (m, "state"), "?"),
          or_default (field_str (m, "mode"), "?"),
          or_default (field_str (m, "target"), "?"),
          size_format (d, done, sizeof done), size_format (t, total, sizeof total),
          print_percent (d, t),
          size_format (field_u64 (m, "rate_bytes_per_s"), rate, sizeof rate),
          print_eta (m, eta, sizeof eta));
  if (field_str (m, "error"))
    printf (", error %s", field_str (m, "error"));
  putchar ('\n');
}

static void
print_peer (json_object *p)
{
  if (p == NULL) {
    printf ("  peer: none\n");
    return;
  }
  printf ("  peer: %s", field_bool (p, "connected") ? "connected" : "disconnected");
  if (field_str (p, "role")) {
    json_object *seen = NULL;
    json_object_object_get_ex (p, "last_seen_s", &seen);
    printf (field_bool (p, "last_known") ? ", last known %s/%s" : ", %s/%s",
            field_str (p, "role"), or_default (field_str (p, "disk"), "?"));
    if (seen && field_bool (p, "last_known"))
      printf (" (%.1f s ago)", json_object_get_double (seen));
  }
  putchar ('\n');
}

static void
print_export (json_object *e)
{
  char size[32], dirty[32], gran[32], rd[32], wr[32];

  printf ("%s: %s %s %s%s\n", or_default (field_str (e, "name"), "?"),
          or_default (field_str (e, "format"), "?"),
          size_format (field_u64 (e, "size"), size, sizeof size),
          or_default (field_str (e, "path"), "?"),
          field_bool (e, "readonly") ? " (readonly)" : "");
  printf ("  role %s, disk %s, %s dirty (granularity %s)\n",
          or_default (field_str (e, "role"), "?"),
          or_default (field_str (e, "disk"), "?"),
          size_format (field_u64 (e, "dirty_bytes"), dirty, sizeof dirty),
          size_format (field_u64 (e, "granularity"), gran, sizeof gran));
  if (field_has (e, "clients"))
    printf ("  clients %" PRIu64 ", read %s, written %s\n",
            field_u64 (e, "clients"),
            size_format (field_u64 (e, "bytes_read"), rd, sizeof rd),
            size_format (field_u64 (e, "bytes_written"), wr, sizeof wr));
  print_mirror (field_obj (e, "mirror"));
  print_peer (field_obj (e, "peer"));
}

void
print_status (json_object *result)
{
  json_object *exports;
  size_t n = 0;

  if (json_object_object_get_ex (result, "exports", &exports)
      && json_object_is_type (exports, json_type_array))
    n = json_object_array_length (exports);
  if (n == 0)
    printf ("no exports\n");
  for (size_t i = 0; i < n; i++)
    print_export (json_object_array_get_idx (exports, i));
}

/* A differing range, as {"offset", "length"} or [offset, length]. */
static void
print_range (json_object *r)
{
  char len[32];
  uint64_t off = field_u64 (r, "offset"), n = field_u64 (r, "length");

  if (json_object_is_type (r, json_type_array)
      && json_object_array_length (r) == 2) {
    off = (uint64_t) json_object_get_int64 (json_object_array_get_idx (r, 0));
    n = (uint64_t) json_object_get_int64 (json_object_array_get_idx (r, 1));
  }
  printf ("  offset %" PRIu64 ", length %s\n", off, size_format (n, len, sizeof len));
}

void
print_verify (const char *export, json_object *result)
{
  json_object *ranges;
  size_t n;

  if (!field_has (result, "differing_blocks")) {
    json_object_object_foreach (result, key, val)
      printf ("%s: %s\n", key, json_object_to_json_string_ext
              (val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    return;
  }
  printf ("%s: %" PRIu64 " differing blocks\n", export,
          field_u64 (result, "differing_blocks"));
  if (!json_object_object_get_ex (result, "ranges", &ranges)
      || !json_object_is_type (ranges, json_type_array))
    return;
  n = json_object_array_length (ranges);
  for (size_t i = 0; i < n; i++)
    print_range (json_object_array_get_idx (ranges, i));
}
