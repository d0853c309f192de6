/* SPDX-License-Identifier: MIT */
/* Typed reads of control request fields (see jsonarg.h). */
#include <config.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "common/error.h"
#include "jsonarg.h"

/* "a string", "an integer", ...: what the client sent, in words. */
static const char *
type_words (json_object *v)
{
  switch (json_object_get_type (v)) {
  case json_type_null: return "null";
  case json_type_boolean: return "a boolean";
  case json_type_double: return "a decimal number";
  case json_type_int: return "an integer";
  case json_type_object: return "an object";
  case json_type_array: return "an array";
  case json_type_string: return "a string";
  }
  return "something else";
}

static int
wrong_type (const char *key, const char *want, json_object *v)
{
  return error_code (EINVAL, "field '%s' must be %s, not %s", key, want,
                     type_words (v));
}

/* The value of KEY, or NULL when absent or null. */
static json_object *
given (json_object *req, const char *key)
{
  json_object *v;

  if (!json_object_object_get_ex (req, key, &v)
      || json_object_is_type (v, json_type_null))
    return NULL;
  return v;
}

int
jsonarg_string (json_object *req, const char *key, const char **out)
{
  json_object *v = given (req, key);

  *out = NULL;
  if (v == NULL)
    return 0;
  if (!json_object_is_type (v, json_type_string))
    return wrong_type (key, "a string", v);
  *out = json_object_get_string (v);
  return 0;
}

int
jsonarg_string_required (json_object *req, const char *key, const char **out)
{
  if (jsonarg_string (req, key, out) == -1)
    return -1;
  if (*out == NULL) {
    json_object *v;
    if (json_object_object_get_ex (req, key, &v))
      return wrong_type (key, "a string", v);     /* null */
    return error_code (EINVAL, "request needs field '%s' (a string)", key);
  }
  return 0;
}

int
jsonarg_bool (json_object *req, const char *key, bool *out)
{
  json_object *v = given (req, key);

  *out = false;
  if (v == NULL)
    return 0;
  if (!json_object_is_type (v, json_type_boolean))
    return wrong_type (key, "a boolean", v);
  *out = json_object_get_boolean (v);
  return 0;
}

int
jsonarg_u64 (json_object *req, const char *key, uint64_t *out)
{
  json_object *v = given (req, key);

  *out = 0;
  if (v == NULL)
    return 0;
  if (!json_object_is_type (v, json_type_int))
    return wrong_type (key, "a non-negative integer", v);
  /* json-c keeps integers over INT64_MAX as unsigned: take them whole. */
  if (json_object_get_int64 (v) < 0)
    return error_code (EINVAL, "field '%s' must be a non-negative integer, "
                       "not %lld", key, (long long) json_object_get_int64 (v));
  *out = json_object_get_uint64 (v);
  return 0;
}

int
jsonarg_seconds (json_object *req, const char *key, double *out)
{
  json_object *v = given (req, key);
  double s;

  *out = -1;
  if (v == NULL)
    return 0;
  if (!json_object_is_type (v, json_type_int)
      && !json_object_is_type (v, json_type_double))
    return wrong_type (key, "a number of seconds", v);
  s = json_object_get_double (v);
  if (!isfinite (s) || s < 0)
    return error_code (EINVAL, "field '%s' must be a non-negative number of "
                       "seconds, not %g", key, s);
  *out = s;
  return 0;
}

int
jsonarg_config_value (json_object *req, const char *key, bool size,
                      char *buf, size_t len, const char **out)
{
  json_object *v = given (req, key);

  *out = NULL;
  if (v == NULL)
    return 0;
  if (json_object_is_type (v, json_type_string)) {
    *out = json_object_get_string (v);
    return 0;
  }
  if (json_object_is_type (v, json_type_int) && json_object_get_int64 (v) >= 0) {
    snprintf (buf, len, "%llu", (unsigned long long) json_object_get_uint64 (v));
    *out = buf;
    return 0;
  }
  if (!size && json_object_is_type (v, json_type_double)) {
    snprintf (buf, len, "%.17g", json_object_get_double (v));
    *out = buf;
    return 0;
  }
  if (json_object_is_type (v, json_type_int))
    return error_code (EINVAL, "field '%s' must not be negative", key);
  return wrong_type (key, size ? "an integer or a size string such as \"64K\""
                     : "a number of seconds or a duration string such as \"500ms\"",
                     v);
}
