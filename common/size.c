/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "size.h"

static int
suffix_shift (const char *s, unsigned *shift)
{
  static const char units[] = "KMGTPE";
  const char *p;

  if (*s == '\0') {
    *shift = 0;
    return 0;
  }
  p = strchr (units, toupper ((unsigned char) *s));
  if (p == NULL || *s == '\0')
    return -1;
  *shift = 10 * (unsigned) (p - units + 1);
  s++;
  if (strcasecmp (s, "") == 0 || strcasecmp (s, "B") == 0
      || strcasecmp (s, "iB") == 0)
    return 0;
  return -1;
}

int
size_parse (const char *str, uint64_t *out)
{
  unsigned long long v;
  unsigned shift;
  char *end;

  if (str == NULL || !isdigit ((unsigned char) *str))
    return error_set (0, "invalid size '%s': expected a number like 64K, 100M, 1G",
                      str ? str : "");
  errno = 0;
  v = strtoull (str, &end, 10);
  if (errno == ERANGE)
    return error_set (0, "size '%s' is too large", str);
  if (suffix_shift (end, &shift) == -1)
    return error_set (0, "invalid size suffix in '%s' (use K, M, G, T, P or E)", str);
  if (shift && v > (UINT64_MAX >> shift))
    return error_set (0, "size '%s' is too large", str);
  *out = (uint64_t) v << shift;
  return 0;
}

const char *
size_format (uint64_t bytes, char *buf, size_t len)
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double v = (double) bytes;
  unsigned i = 0;

  while (v >= 1024 && i < 6) {
    v /= 1024;
    i++;
  }
  if (i == 0)
    snprintf (buf, len, "%llu B", (unsigned long long) bytes);
  else
    snprintf (buf, len, "%.1f %s", v, units[i]);
  return buf;
}
