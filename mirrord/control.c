/* SPDX-License-Identifier: MIT */
/* The control socket: framing, dispatch, and the commands. */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/log.h"
#include "control.h"
#include "export.h"
#include "ha/ha.h"
#include "ha/verify.h"
#include "jsonarg.h"
#include "mirror.h"
#include "status.h"

#define MAX_LINE (1u << 20)

struct client {
  int fd;
  struct loop_source *src;
  struct list node;
  char *in;
  size_t in_len;
  char *out;
  size_t out_len, out_sent;
  bool closing;
  bool busy;                    /* an asynchronous command is running */
};

static struct {
  struct loop *loop;
  int fd;
  char *path;
  struct loop_source *src;
  struct list clients;
} ctl = { .fd = -1, .clients = LIST_INIT (ctl.clients) };

/* ---- Commands ---- */

/* A command returns its result, NULL with error_set(), or PENDING:
 * then it calls control_reply() later (the client reads no further
 * requests until it has). */
typedef json_object *(*command_fn) (json_object *req, struct client *c);
static char pending_marker;
#define PENDING ((json_object *) &pending_marker)

static void control_reply (struct client *c, json_object *result);

static json_object *
cmd_version (json_object *req, struct client *c)
{
  json_object *r = json_object_new_object ();
  json_object_object_add (r, "version", json_object_new_string (PACKAGE_VERSION));
  return r;
}

static json_object *
cmd_status (json_object *req, struct client *c)
{
  const char *name;
  json_object *r, *arr;

  if (jsonarg_string (req, "export", &name) == -1)
    return NULL;
  r = json_object_new_object ();
  arr = json_object_new_array ();

  json_object_object_add (r, "exports", arr);
  if (name) {
    struct export *e = export_find (name);
    if (e == NULL) {
      json_object_put (r);
      error_set (ENOENT, "export %s not found", name);
      return NULL;
    }
    json_object_array_add (arr, status_export_json (e));
    return r;
  }
  for (struct export *e = export_first (); e; e = export_next (e))
    json_object_array_add (arr, status_export_json (e));
  return r;
}

/* Copies the request's export keys into SPEC: the config file's
 * parsers check the values, so all three ways in accept the same. */
static int
spec_from_json (struct export_spec *spec, json_object *req)
{
  static const struct { const char *key; enum { TEXT, SIZE, DURATION } kind; } keys[] = {
    { "path", TEXT }, { "format", TEXT }, { "role", TEXT }, { "peer", TEXT },
    { "mode", TEXT }, { "cache", TEXT }, { "fence-peer", TEXT },
    { "granularity", SIZE }, { "bandwidth", SIZE }, { "max-lag", SIZE },
    { "peer-timeout", DURATION },
  };
  const char *name, *v;
  char buf[64];

  if (jsonarg_string_required (req, "name", &name) == -1
      || jsonarg_bool (req, "readonly", &spec->readonly) == -1)
    return -1;
  if ((spec->name = strdup (name)) == NULL)
    return error_set (ENOMEM, "strdup");
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    int r = keys[i].kind == TEXT ? jsonarg_string (req, keys[i].key, &v)
      : jsonarg_config_value (req, keys[i].key, keys[i].kind == SIZE,
                              buf, sizeof buf, &v);
    if (r == -1 || (v && export_spec_set (spec, keys[i].key, v) == -1))
      return -1;
  }
  return export_spec_validate (spec);
}

static json_object *
cmd_export_add (json_object *req, struct client *c)
{
  struct export_spec spec;
  struct export *e = NULL;

  export_spec_init (&spec);
  if (spec_from_json (&spec, req) == 0)
    e = export_add (&spec, false);
  export_spec_clear (&spec);
  return e ? status_export_json (e) : NULL;
}

static json_object *
cmd_export_remove (json_object *req, struct client *c)
{
  const char *name;

  if (jsonarg_string_required (req, "name", &name) == -1
      || export_remove (name) == -1)
    return NULL;
  return json_object_new_object ();
}

/* The export named by the request's "export", or NULL (error set). */
static struct export *
get_export (json_object *req)
{
  const char *name;
  struct export *e;

  if (jsonarg_string_required (req, "export", &name) == -1)
    return NULL;
  e = export_find (name);
  if (e == NULL)
    error_set (ENOENT, "export %s not found", name);
  return e;
}

/* Forget dirty regions whose data is safe elsewhere (after a backup,
 * say).  Without offset/length: the whole disk. */
static json_object *
cmd_bitmap_clear (json_object *req, struct client *c)
{
  struct export *e = get_export (req);
  uint64_t offset, length;

  if (e == NULL || jsonarg_u64 (req, "offset", &offset) == -1
      || jsonarg_u64 (req, "length", &length) == -1)
    return NULL;
  if (offset > export_size (e)) {
    error_set (EINVAL, "offset %llu is past the end of export %s",
               (unsigned long long) offset, e->spec.name);
    return NULL;
  }
  log_info ("export %s: dirty bitmap cleared from %llu for %llu bytes by request",
            e->spec.name, (unsigned long long) offset, (unsigned long long) length);
  export_bitmap_clear (e, offset, length);
  return status_export_json (e);
}

/* ---- Mirror commands ---- */

struct waiter {
  struct client *c;
  struct export *e;
};

static struct waiter *
waiter_new (struct client *c, struct export *e)
{
  struct waiter *w = malloc (sizeof *w);

  if (w) {
    w->c = c;
    w->e = e;
    export_ref (e);
  }
  return w;
}

static void
waiter_done (struct waiter *w, json_object *result)
{
  control_reply (w->c, result);
  export_unref (w->e);
  free (w);
}

static void
mirror_started (void *opaque, int err)
{
  struct waiter *w = opaque;

  if (err) {
    error_set (0, "mirror to target failed: %s",
               w->e->mirror ? mirror_error (w->e->mirror) : "?");
    waiter_done (w, NULL);
    return;
  }
  waiter_done (w, status_export_json (w->e));
}

static json_object *
cmd_mirror_start (json_object *req, struct client *c)
{
  struct export *e = get_export (req);
  const char *uri, *mode;
  uint64_t bandwidth;
  struct waiter *w;

  if (e == NULL || jsonarg_string_required (req, "uri", &uri) == -1
      || jsonarg_string (req, "mode", &mode) == -1
      || jsonarg_u64 (req, "bandwidth", &bandwidth) == -1)
    return NULL;
  if (mode && strcmp (mode, "sync") != 0 && strcmp (mode, "async") != 0) {
    error_set (EINVAL, "mode must be sync or async, not '%s'", mode);
    return NULL;
  }
  w = waiter_new (c, e);
  if (w == NULL) {
    error_set (ENOMEM, "allocating");
    return NULL;
  }
  if (export_mirror_start (e, uri, NULL, 0, mode && strcmp (mode, "async") == 0,
                           bandwidth, false, mirror_started, w) == -1) {
    export_unref (e);
    free (w);
    return NULL;
  }
  return PENDING;
}

/* ---- HA: promote and demote ---- */

static struct export *
get_ha_export (json_object *req)
{
  struct export *e = get_export (req);

  if (e && e->ha == NULL) {
    error_set (EINVAL, "export %s has no peer (no HA pair)", e->spec.name);
    return NULL;
  }
  return e;
}

static void
promoted (void *opaque, int err, const char *msg)
{
  struct waiter *w = opaque;

  if (err) {
    error_set (err, "%s", msg);
    waiter_done (w, NULL);
    return;
  }
  waiter_done (w, status_export_json (w->e));
}

static json_object *
cmd_promote (json_object *req, struct client *c)
{
  struct export *e;
  struct waiter *w;
  bool force;

  if (jsonarg_bool (req, "force", &force) == -1 || (e = get_ha_export (req)) == NULL)
    return NULL;
  if ((w = waiter_new (c, e)) == NULL) {
    error_set (ENOMEM, "allocating");
    return NULL;
  }
  if (ha_promote (e->ha, force, promoted, w) == -1) {
    export_unref (e);
    free (w);
    return NULL;
  }
  return PENDING;
}

static json_object *
cmd_demote (json_object *req, struct client *c)
{
  struct export *e;
  bool force;

  (void) c;
  if (jsonarg_bool (req, "force", &force) == -1 || (e = get_ha_export (req)) == NULL
      || ha_demote (e->ha, force, e->nr_clients) == -1)
    return NULL;
  return status_export_json (e);
}

static void
verified (void *opaque, int err, json_object *result)
{
  waiter_done (opaque, err ? NULL : result);
}

static json_object *
cmd_verify (json_object *req, struct client *c)
{
  struct export *e = get_export (req);
  struct waiter *w;

  if (e == NULL)
    return NULL;
  if (e->spec.peer == NULL) {
    error_set (EINVAL, "export %s has no peer to verify against", e->spec.name);
    return NULL;
  }
  if ((w = waiter_new (c, e)) == NULL) {
    error_set (ENOMEM, "allocating");
    return NULL;
  }
  if (verify_start (e, e->spec.peer, verified, w) == -1) {
    export_unref (e);
    free (w);
    return NULL;
  }
  return PENDING;
}

static json_object *
cmd_mirror_cancel (json_object *req, struct client *c)
{
  struct export *e = get_export (req);

  if (e == NULL)
    return NULL;
  if (e->mirror == NULL || !mirror_active (e->mirror)) {
    error_set (EINVAL, "export %s has no active mirror", e->spec.name);
    return NULL;
  }
  mirror_cancel (e->mirror, false);
  return status_export_json (e);
}

static void
cutover_done (void *opaque, int err, double downtime_ms)
{
  struct waiter *w = opaque;
  json_object *r;

  if (err) {
    waiter_done (w, NULL);      /* the mirror set the error */
    return;
  }
  r = status_export_json (w->e);
  json_object_object_add (r, "downtime_ms", json_object_new_double (downtime_ms));
  waiter_done (w, r);
}

/* The optional "timeout" in seconds as milliseconds, 0 when there is
 * none. */
static int
get_timeout_ms (json_object *req, unsigned *ms)
{
  double s;

  *ms = 0;
  if (jsonarg_seconds (req, "timeout", &s) == -1)
    return -1;
  if (s < 0)
    return 0;                   /* not given */
  /* Nothing drains in no time: 0 gives up at the first chance.  The
   * timer counts milliseconds up to 49 days: longer is capped there. */
  *ms = s * 1000 >= UINT_MAX ? UINT_MAX : s * 1000 < 1 ? 1 : (unsigned) (s * 1000);
  return 0;
}

static json_object *
cmd_mirror_cutover (json_object *req, struct client *c)
{
  struct export *e = get_export (req);
  struct waiter *w;
  unsigned timeout_ms;

  if (e == NULL || get_timeout_ms (req, &timeout_ms) == -1)
    return NULL;
  if (e->mirror == NULL || !mirror_active (e->mirror)) {
    error_set (EINVAL, "export %s has no active mirror", e->spec.name);
    return NULL;
  }
  w = waiter_new (c, e);
  if (w == NULL) {
    error_set (ENOMEM, "allocating");
    return NULL;
  }
  if (mirror_cutover (e->mirror, timeout_ms, cutover_done, w) == -1) {
    export_unref (e);
    free (w);
    return NULL;
  }
  return PENDING;
}

static const struct {
  const char *name;
  command_fn fn;
} commands[] = {
  { "promote", cmd_promote },
  { "verify", cmd_verify },
  { "demote", cmd_demote },
  { "mirror-start", cmd_mirror_start },
  { "mirror-cancel", cmd_mirror_cancel },
  { "mirror-cutover", cmd_mirror_cutover },
  { "bitmap-clear", cmd_bitmap_clear },
  { "version", cmd_version },
  { "status", cmd_status },
  { "export-add", cmd_export_add },
  { "export-remove", cmd_export_remove },
};

static json_object *
dispatch (json_object *req, struct client *c)
{
  const char *name;

  if (jsonarg_string_required (req, "command", &name) == -1)
    return NULL;
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (commands[i].name, name) == 0)
      return commands[i].fn (req, c);
  error_set (EINVAL, "unknown command '%s'", name);
  return NULL;
}

/* ---- Framing ---- */

static void client_kill (struct client *c);
static void client_free (struct client *c);
static void client_update (struct client *c);
static void flush_output (struct client *c);

static void
queue_reply (struct client *c, json_object *reply)
{
  const char *s = json_object_to_json_string_ext (reply, JSON_C_TO_STRING_PLAIN);
  size_t n = strlen (s);
  char *nb = realloc (c->out, c->out_len + n + 1);

  if (nb == NULL) {
    c->closing = true;
    return;
  }
  c->out = nb;
  memcpy (c->out + c->out_len, s, n);
  c->out[c->out_len + n] = '\n';
  c->out_len += n + 1;
}

static json_object *
ok_reply (json_object *result)
{
  json_object *r = json_object_new_object ();

  json_object_object_add (r, "ok", json_object_new_boolean (1));
  json_object_object_add (r, "result", result);
  return r;
}

static json_object *
error_reply (const char *msg, int err)
{
  json_object *r = json_object_new_object ();

  json_object_object_add (r, "ok", json_object_new_boolean (0));
  json_object_object_add (r, "error", json_object_new_string (msg));
  json_object_object_add (r, "errno", json_object_new_int (err));
  return r;
}

static void
handle_line (struct client *c, const char *line)
{
  enum json_tokener_error jerr;
  json_object *req = json_tokener_parse_verbose (line, &jerr), *result, *reply;

  /* "null" parses, to NULL, with no error to describe. */
  if (req == NULL || !json_object_is_type (req, json_type_object)) {
    reply = error_reply (req || jerr == json_tokener_success
                         ? "request is not a JSON object"
                         : json_tokener_error_desc (jerr), EINVAL);
    c->closing = true;
  }
  else if ((result = dispatch (req, c)) == PENDING) {
    c->busy = true;             /* control_reply() answers */
    json_object_put (req);
    return;
  }
  else if (result == NULL) {
    log_debug ("control: %s", error_get ());
    reply = error_reply (error_get (), error_errno ());
  }
  else
    reply = ok_reply (result);
  queue_reply (c, reply);
  json_object_put (reply);
  json_object_put (req);
}

static void
process_input (struct client *c)
{
  char *nl;

  while (!c->closing && !c->busy && (nl = memchr (c->in, '\n', c->in_len)) != NULL) {
    size_t len = (size_t) (nl - c->in);
    *nl = '\0';
    if (len > 0)
      handle_line (c, c->in);
    memmove (c->in, nl + 1, c->in_len - len - 1);
    c->in_len -= len + 1;
  }
  if (!c->closing && !c->busy && c->in_len >= MAX_LINE) {
    json_object *r = error_reply ("request line over 1 MiB", E2BIG);
    queue_reply (c, r);
    json_object_put (r);
    c->closing = true;
  }
}

/* The outcome of an asynchronous command (RESULT, or NULL: the error
 * set).  A client that hung up meanwhile is freed now. */
static void
control_reply (struct client *c, json_object *result)
{
  json_object *reply = result ? ok_reply (result)
    : error_reply (error_get (), error_errno ());

  c->busy = false;
  if (c->fd < 0) {
    json_object_put (reply);
    client_free (c);
    return;
  }
  queue_reply (c, reply);
  json_object_put (reply);
  process_input (c);            /* requests that waited behind it */
  flush_output (c);
  if (c->fd >= 0)
    client_update (c);
  else if (!c->busy)
    client_free (c);
}

static void
flush_output (struct client *c)
{
  while (c->out_sent < c->out_len) {
    ssize_t r = send (c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
                      MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r == -1) {
      if (errno == EAGAIN || errno == EINTR)
        return;
      client_kill (c);
      return;
    }
    c->out_sent += (size_t) r;
  }
  c->out_len = c->out_sent = 0;
  if (c->closing)
    client_kill (c);
}

static void
on_client (void *opaque, uint32_t events)
{
  struct client *c = opaque;

  if (events & EPOLLOUT)
    flush_output (c);
  if (c->fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    ssize_t r = recv (c->fd, c->in + c->in_len, MAX_LINE - c->in_len, MSG_DONTWAIT);
    if (r == 0 || (r == -1 && errno != EAGAIN && errno != EINTR))
      client_kill (c);
    else if (r > 0) {
      c->in_len += (size_t) r;
      process_input (c);
    }
  }
  if (c->fd >= 0)
    flush_output (c);
  if (c->fd >= 0)
    client_update (c);
  else if (!c->busy)
    client_free (c);            /* a busy one is freed by control_reply */
}

static void
client_update (struct client *c)
{
  uint32_t ev = c->closing || c->busy ? 0 : EPOLLIN;

  if (c->out_sent < c->out_len)
    ev |= EPOLLOUT;
  loop_source_set_events (c->src, ev);
}

/* Closes the socket; the caller frees the client once it is done
 * with it.  (A pending event for the dead source is never delivered.) */
static void
client_kill (struct client *c)
{
  if (c->fd < 0)
    return;
  loop_source_remove (c->src);
  close (c->fd);
  c->fd = -1;
}

static void
client_free (struct client *c)
{
  client_kill (c);
  list_del (&c->node);
  free (c->in);
  free (c->out);
  free (c);
}

static void
on_accept (void *opaque, uint32_t events)
{
  int fd;

  while ((fd = accept4 (ctl.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
    struct client *c = calloc (1, sizeof *c);
    if (c == NULL || (c->in = malloc (MAX_LINE)) == NULL) {
      free (c);
      close (fd);
      continue;
    }
    c->fd = fd;
    c->src = loop_add_fd (ctl.loop, fd, EPOLLIN, on_client, c);
    if (c->src == NULL) {
      free (c->in);
      free (c);
      close (fd);
      continue;
    }
    list_add_tail (&ctl.clients, &c->node);
  }
}

int
control_init (struct loop *loop, const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  mode_t old;

  ctl.loop = loop;
  if (strlen (path) >= sizeof sun.sun_path)
    return error_set (ENAMETOOLONG, "control socket path %s", path);
  strcpy (sun.sun_path, path);
  ctl.fd = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (ctl.fd == -1)
    return error_set (errno, "socket");
  unlink (path);
  /* Created 0600 from the start: no window where others could connect. */
  old = umask (0177);
  if (bind (ctl.fd, (struct sockaddr *) &sun, sizeof sun) == -1) {
    umask (old);
    error_set (errno, "bind %s", path);
    close (ctl.fd);
    ctl.fd = -1;
    return -1;
  }
  umask (old);
  if (listen (ctl.fd, 16) == -1
      || (ctl.src = loop_add_fd (loop, ctl.fd, EPOLLIN, on_accept, NULL)) == NULL) {
    error_set (errno, "listen %s", path);
    close (ctl.fd);
    ctl.fd = -1;
    unlink (path);
    return -1;
  }
  ctl.path = strdup (path);
  return 0;
}

void
control_stop (void)
{
  while (!list_empty (&ctl.clients))
    client_free (list_entry (ctl.clients.next, struct client, node));
  if (ctl.fd >= 0) {
    loop_source_remove (ctl.src);
    close (ctl.fd);
    ctl.fd = -1;
  }
  if (ctl.path) {
    unlink (ctl.path);
    free (ctl.path);
    ctl.path = NULL;
  }
}
