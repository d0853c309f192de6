/* SPDX-License-Identifier: MIT */
/* Typed reads of object members that tolerate missing members, null
 * and wrong types, so that output code never trusts the reply's shape. */
#include <config.h>

#include "ctl.h"

static json_object *
member (json_object *obj, const char *key, json_type type)
{
  json_object *v;

  if (obj == NULL || !json_object_is_type (obj, json_type_object)
      || !json_object_object_get_ex (obj, key, &v)
      || !json_object_is_type (v, type))
    return NULL;
  return v;
}

const char *
field_str (json_object *obj, const char *key)
{
  json_object *v = member (obj, key, json_type_string);

  return v ? json_object_get_string (v) : NULL;
}

uint64_t
field_u64 (json_object *obj, const char *key)
{
  json_object *v = member (obj, key, json_type_int);

  if (v == NULL)
    v = member (obj, key, json_type_double);
  if (v == NULL)
    return 0;
  if (json_object_is_type (v, json_type_double)) {
    double d = json_object_get_double (v);
    if (!(d > 0))
      return 0;
    return d >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t) d;
  }
  return json_object_get_uint64 (v);
}

bool
field_has (json_object *obj, const char *key)
{
  json_object *v;

  return obj != NULL && json_object_is_type (obj, json_type_object)
         && json_object_object_get_ex (obj, key, &v) && v != NULL;
}

json_object *
field_obj (json_object *obj, const char *key)
{
  return member (obj, key, json_type_object);
}

bool
field_bool (json_object *obj, const char *key)
{
  json_object *v = member (obj, key, json_type_boolean);

  return v ? json_object_get_boolean (v) : false;
}
