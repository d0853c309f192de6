/* SPDX-License-Identifier: MIT */
/* Request and output helpers shared by the mirrorctl commands: one
 * request/reply exchange with the daemon (connecting on first use),
 * the ok/error check of the reply, and printing a result. */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "common/error.h"
#include "client.h"
#include "ctl.h"

int64_t
ctl_now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

json_object *
ctl_request (const char *command, const char *key, const char *value)
{
  json_object *req = json_object_new_object ();

  if (req == NULL)
    return NULL;
  json_object_object_add (req, "command", json_object_new_string (command));
  if (value)
    json_object_object_add (req, key, json_object_new_string (value));
  return req;
}

/* Splits a reply into its result or the daemon's refusal. */
static int
check_reply (struct ctl *ctl, json_object *reply, json_object **result)
{
  json_object *ok, *res;
  const char *msg;

  if (!json_object_object_get_ex (reply, "ok", &ok)
      || !json_object_is_type (ok, json_type_boolean)) {
    error_set (0, "malformed reply from mirrord (no \"ok\" member)");
    return CTL_FAILED;
  }
  if (!json_object_get_boolean (ok)) {
    msg = field_str (reply, "error");
    ctl->daemon_errno = (int) field_u64 (reply, "errno");
    error_set (0, "%s", msg ? msg : "mirrord refused the request");
    return CTL_FAILED;
  }
  res = field_obj (reply, "result");
  *result = res ? json_object_get (res) : json_object_new_object ();
  if (*result == NULL) {
    error_set (ENOMEM, "reading the reply");
    return CTL_FAILED;
  }
  return CTL_OK;
}

int
ctl_call (struct ctl *ctl, json_object *req, int64_t deadline_ms,
          json_object **result)
{
  json_object *reply = NULL;
  int r = CTL_OK;

  if (req == NULL) {
    error_set (ENOMEM, "building the request");
    return CTL_FAILED;
  }
  ctl->daemon_errno = 0;
  if (ctl->client == NULL)
    r = client_connect (ctl->socket_path, &ctl->client);
  if (r == CTL_OK)
    r = client_call (ctl->client, req, deadline_ms, &reply);
  if (r == CTL_OK)
    r = check_reply (ctl, reply, result);
  json_object_put (reply);
  json_object_put (req);
  return r;
}

void
ctl_print_json (json_object *obj)
{
  int flags = JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
              | JSON_C_TO_STRING_NOSLASHESCAPE;

  printf ("%s\n", json_object_to_json_string_ext (obj, flags));
}

int
ctl_done (struct ctl *ctl, json_object *result, const char *fmt, ...)
{
  va_list ap;

  if (ctl->json)
    ctl_print_json (result);
  else {
    va_start (ap, fmt);
    vprintf (fmt, ap);
    va_end (ap);
    putchar ('\n');
  }
  json_object_put (result);
  return CTL_OK;
}
