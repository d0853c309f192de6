/* SPDX-License-Identifier: MIT */
#include <config.h>

#include "mirror.h"
#include "status.h"

static void
add (json_object *o, const char *key, json_object *v)
{
  json_object_object_add (o, key, v);
}

json_object *
status_export_json (const struct export *e)
{
  json_object *o = json_object_new_object ();

  if (o == NULL)
    return NULL;
  add (o, "name", json_object_new_string (e->spec.name));
  add (o, "path", json_object_new_string (e->spec.path));
  add (o, "format", json_object_new_string (image_format_name (e->img->format)));
  add (o, "size", json_object_new_int64 ((int64_t) e->img->size));
  add (o, "role", json_object_new_string (export_role_name (e->spec.role)));
  add (o, "disk", json_object_new_string ("uptodate"));
  add (o, "granularity", json_object_new_int64 ((int64_t) e->spec.granularity));
  add (o, "dirty_bytes", json_object_new_int64 ((int64_t) export_dirty_bytes (e)));
  add (o, "mirror", e->mirror ? mirror_status_json (e->mirror) : NULL);
  add (o, "peer", NULL);
  add (o, "readonly", json_object_new_boolean (e->spec.readonly || e->img->readonly));
  add (o, "writable", json_object_new_boolean (export_writable (e)));
  add (o, "direct_io", json_object_new_boolean (e->img->direct));
  add (o, "cache", json_object_new_string (image_cache_name (e->spec.cache)));
  add (o, "clients", json_object_new_int ((int) e->nr_clients));
  add (o, "requests", json_object_new_int64 ((int64_t) e->requests));
  add (o, "bytes_read", json_object_new_int64 ((int64_t) e->bytes_read));
  add (o, "bytes_written", json_object_new_int64 ((int64_t) e->bytes_written));
  add (o, "from_config", json_object_new_boolean (e->from_config));
  add (o, "bitmap", json_object_new_boolean (e->bitmap != NULL));
  add (o, "bitmap_flushes", json_object_new_int64
       (e->bitmap ? (int64_t) bitmap_store_flushes (e->bitmap) : 0));
  add (o, "bitmap_blocks_written", json_object_new_int64
       (e->bitmap ? (int64_t) bitmap_store_blocks_written (e->bitmap) : 0));
  return o;
}
