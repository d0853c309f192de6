/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_JSONARG_H
#define MIRRORD_JSONARG_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

/* Typed reads of a control request's fields (docs/control-api.md).
 *
 * A field that is absent, or null, is "not given": the reader leaves
 * the default (NULL, false, 0) and returns 0; the *_required readers
 * refuse it.  A field of any other type than the one wanted is refused,
 * never converted: the error names the field, the type wanted and the
 * type sent ("field 'readonly' must be a boolean, not a string").
 * Every reader returns 0, or -1 with error_set() (EINVAL). */

int jsonarg_string (json_object *req, const char *key, const char **out);
int jsonarg_string_required (json_object *req, const char *key,
                             const char **out);
int jsonarg_bool (json_object *req, const char *key, bool *out);
/* A non-negative integer. */
int jsonarg_u64 (json_object *req, const char *key, uint64_t *out);
/* A non-negative number of seconds (fractions allowed); -1 when not
 * given. */
int jsonarg_seconds (json_object *req, const char *key, double *out);
/* A value the config file would take as text: a string as it is; for a
 * size (SIZE) also an integer, for a duration (!SIZE) also a number.
 * *OUT is BUF, or the string itself; NULL when not given. */
int jsonarg_config_value (json_object *req, const char *key, bool size,
                          char *buf, size_t len, const char **out);

#endif
