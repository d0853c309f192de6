/* SPDX-License-Identifier: MIT */
#include <config.h>

#include "ha/ha.h"
#include "mirror.h"
#include "status.h"

void
status_add (json_object *o, const char *key, json_object *v)
{
  json_object_object_add (o, key, v);
}

json_object *
status_eta_json (uint64_t remaining, uint64_t rate)
{
  if (remaining == 0)
    return json_object_new_int64 (0);
  if (rate == 0)
    return NULL;
  return json_object_new_int64 ((int64_t) (remaining / rate
                                           + (remaining % rate != 0)));
}

json_object *
status_export_json (const struct export *e)
{
  json_object *o = json_object_new_object ();

  if (o == NULL)
    return NULL;
  status_add (o, "name", json_object_new_string (e->spec.name));
  status_add (o, "path", json_object_new_string (e->spec.path));
  status_add (o, "format", json_object_new_string (image_format_name (e->img->format)));
  status_add (o, "size", json_object_new_int64 ((int64_t) e->img->size));
  status_add (o, "role", json_object_new_string (export_role_name (e->spec.role)));
  status_add (o, "disk", json_object_new_string ("uptodate"));
  status_add (o, "peer", NULL);
  if (e->ha)
    ha_status (e->ha, o);       /* replaces role, disk and peer */
  status_add (o, "granularity", json_object_new_int64 ((int64_t) e->spec.granularity));
  status_add (o, "dirty_bytes", json_object_new_int64 ((int64_t) export_dirty_bytes (e)));
  status_add (o, "mirror", e->mirror ? mirror_status_json (e->mirror) : NULL);
  status_add (o, "readonly", json_object_new_boolean (e->spec.readonly || e->img->readonly));
  status_add (o, "writable", json_object_new_boolean (export_writable (e)));
  status_add (o, "direct_io", json_object_new_boolean (e->img->direct));
  status_add (o, "cache", json_object_new_string (image_cache_name (e->spec.cache)));
  status_add (o, "clients", json_object_new_int ((int) e->nr_clients));
  status_add (o, "requests", json_object_new_int64 ((int64_t) e->stats.requests));
  status_add (o, "bytes_read", json_object_new_int64 ((int64_t) e->stats.bytes_read));
  status_add (o, "bytes_written", json_object_new_int64 ((int64_t) e->stats.bytes_written));
  status_add (o, "from_config", json_object_new_boolean (e->from_config));
  status_add (o, "bitmap", json_object_new_boolean (e->bitmap != NULL));
  status_add (o, "bitmap_flushes", json_object_new_int64
       (e->bitmap ? (int64_t) bitmap_store_flushes (e->bitmap) : 0));
  status_add (o, "bitmap_blocks_written", json_object_new_int64
       (e->bitmap ? (int64_t) bitmap_store_blocks_written (e->bitmap) : 0));
  status_add (o, "bitmap_ondisk_bytes", json_object_new_int64
       (e->bitmap ? (int64_t) bitmap_store_ondisk_bytes (e->bitmap) : 0));
  return o;
}
