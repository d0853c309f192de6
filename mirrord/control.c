/* SPDX-License-Identifier: MIT */
/* The control socket: framing, dispatch, and the commands.
 *
 * Flow control.  Requests are read into c->in (at most MAX_LINE bytes)
 * and answered in order; replies wait in c->out until the socket takes
 * them.  A client that sends requests and never reads the replies would
 * make c->out grow without bound: once OUT_CAP bytes of its replies
 * wait, its requests are no longer answered nor its socket read, until
 * the output drains below the cap.  A reply is never cut, so one reply
 * may take the output over the cap (a large status still goes out).  A
 * client thus costs at most MAX_LINE + OUT_CAP + one reply; one that
 * stays full for STALL_S without taking a byte is disconnected.  Both
 * are logged (rate-limited).
 *
 * Fairness.  One callback answers at most BATCH requests of a client
 * and comes back from the loop for the rest, so a client with a
 * thousand pipelined requests does not hold up the others.
 *
 * Out of descriptors.  As for the NBD listeners (nbd/server.c): the
 * waiting clients are closed through the reserve descriptor, and if
 * that takes none the listener rests until a client closes or the next
 * tick. */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/size.h"
#include "common/fdreserve.h"
#include "common/log.h"
#include "control.h"
#include "export.h"
#include "ha/ha.h"
#include "verify.h"
#include "jsonarg.h"
#include "mirror.h"
#include "status.h"

#define MAX_LINE (1u << 20)
#define OUT_CAP (1u << 20)
#define BATCH 16
#define STALL_S 30
#define ACCEPT_BATCH 16

struct client {
  int fd;
  struct loop_source *src;
  struct list node;
  char name[32];                /* "pid N" from its credentials */
  char *in;
  size_t in_start, in_len;      /* unparsed: in[in_start, in_len) */
  char *out;
  size_t out_len, out_sent, out_cap;
  uint64_t progress_ns;         /* its output last began or moved */
  bool told_full;               /* its stop for a full output is logged */
  bool eof;                     /* it sent all it will: answer, then close */
  bool closing;
  bool busy;                    /* an asynchronous command is running */
  struct loop_deferred more;    /* requests left after a BATCH */
};

static struct {
  struct loop *loop;
  int fd;
  char *path;
  struct loop_source *src;
  struct loop_source *tick;
  bool accept_paused;           /* out of descriptors */
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
      error_code (ENOENT, "export %s not found", name);
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
    error_code (ENOENT, "export %s not found", name);
  return e;
}

/* length 0 is "to the end": the log says what was meant. */
static void
log_bitmap_clear (const struct export *e, uint64_t offset, uint64_t length)
{
  uint64_t size = export_size (e);
  char from[32], len[32];

  if (length == 0 || length > size - offset)
    length = size - offset;
  if (offset == 0 && length == size)
    log_info ("export %s: dirty bitmap cleared for the whole disk, by request",
              e->spec.name);
  else
    log_info ("export %s: dirty bitmap cleared for %s at offset %s "
              "(%llu bytes at %llu), by request", e->spec.name,
              size_format (length, len, sizeof len),
              size_format (offset, from, sizeof from),
              (unsigned long long) length, (unsigned long long) offset);
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
    error_code (EINVAL, "offset %llu is past the end of export %s",
                (unsigned long long) offset, e->spec.name);
    return NULL;
  }
  log_bitmap_clear (e, offset, length);
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
    error_code (EINVAL, "mode must be sync or async, not '%s'", mode);
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
    error_code (EINVAL, "export %s has no peer (no HA pair)", e->spec.name);
    return NULL;
  }
  return e;
}

static void
promoted (void *opaque, int err, const char *msg)
{
  struct waiter *w = opaque;

  if (err) {
    error_code (err, "%s", msg);
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
    error_code (EINVAL, "export %s has no peer to verify against", e->spec.name);
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

static void
cancel_durable (void *opaque)
{
  struct waiter *w = opaque;

  waiter_done (w, status_export_json (w->e));
}

static json_object *
cmd_mirror_cancel (json_object *req, struct client *c)
{
  struct export *e = get_export (req);
  struct waiter *w;

  if (e == NULL)
    return NULL;
  if (e->mirror == NULL || !mirror_active (e->mirror)) {
    error_code (EINVAL, "export %s has no active mirror", e->spec.name);
    return NULL;
  }
  mirror_cancel (e->mirror, false);
  /* Answered once the job file is gone: a crash after the answer must
   * not resume the job. */
  w = waiter_new (c, e);
  if (w == NULL)
    return status_export_json (e);
  if (mirror_when_durable (e->mirror, cancel_durable, w) == -1) {
    export_unref (e);
    free (w);
    return status_export_json (e);
  }
  return PENDING;
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
    error_code (EINVAL, "export %s has no active mirror", e->spec.name);
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

/* ---- Live migration (ha.h, docs/migration.md) ---- */

static unsigned
ms_to_s (unsigned ms)
{
  return ms == 0 ? 0 : ms / 1000 + (ms % 1000 != 0);
}

static json_object *
cmd_migrate_incoming (json_object *req, struct client *c)
{
  struct export *e;
  unsigned timeout_ms;

  (void) c;
  if ((e = get_ha_export (req)) == NULL || get_timeout_ms (req, &timeout_ms) == -1
      || ha_migrate_incoming (e->ha, ms_to_s (timeout_ms)) == -1)
    return NULL;
  return status_export_json (e);
}

static json_object *
cmd_migrate_abort (json_object *req, struct client *c)
{
  struct export *e;

  (void) c;
  if ((e = get_ha_export (req)) == NULL || ha_migrate_abort (e->ha) == -1)
    return NULL;
  return status_export_json (e);
}

/* start and handover answer once their step is over; the reply is the
 * export's status, with the migration in it. */
static json_object *
migrate_pending (json_object *req, struct client *c,
                 int (*fn) (struct ha *, unsigned, ha_reply_fn, void *),
                 ha_reply_fn done)
{
  struct export *e;
  struct waiter *w;
  unsigned timeout_ms;

  if ((e = get_ha_export (req)) == NULL || get_timeout_ms (req, &timeout_ms) == -1)
    return NULL;
  if ((w = waiter_new (c, e)) == NULL) {
    error_set (ENOMEM, "allocating");
    return NULL;
  }
  if (fn (e->ha, ms_to_s (timeout_ms), done, w) == -1) {
    export_unref (e);
    free (w);
    return NULL;
  }
  return PENDING;
}

static void
handed_over (void *opaque, int err, const char *msg)
{
  struct waiter *w = opaque;
  json_object *r, *m;

  if (err) {
    error_code (err, "%s", msg);
    waiter_done (w, NULL);
    return;
  }
  r = status_export_json (w->e);
  m = ha_migrate_json (w->e->ha);
  json_object_object_add (r, "handover_ms",
                          json_object_get (json_object_object_get (m, "handover_ms")));
  json_object_put (m);
  waiter_done (w, r);
}

static json_object *
cmd_migrate_start (json_object *req, struct client *c)
{
  return migrate_pending (req, c, ha_migrate_start, promoted);
}

static json_object *
cmd_migrate_handover (json_object *req, struct client *c)
{
  return migrate_pending (req, c, ha_migrate_handover, handed_over);
}

static const struct {
  const char *name;
  command_fn fn;
} commands[] = {
  { "migrate-incoming", cmd_migrate_incoming },
  { "migrate-start", cmd_migrate_start },
  { "migrate-handover", cmd_migrate_handover },
  { "migrate-abort", cmd_migrate_abort },
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
  error_code (EINVAL, "unknown command '%s'", name);
  return NULL;
}

/* ---- Framing and flow control ---- */

static void client_kill (struct client *c);
static void client_free (struct client *c);
static void client_settle (struct client *c);

static size_t
pending (const struct client *c)
{
  return c->out_len - c->out_sent;
}

static bool
output_full (const struct client *c)
{
  return pending (c) >= OUT_CAP;
}

/* Room for N more bytes at the end of C's output: what went out is
 * dropped when that makes room, else the buffer doubles, so a reply
 * costs its own copy only (a realloc per reply copied the whole
 * pending output each time). */
static int
out_reserve (struct client *c, size_t n)
{
  size_t cap;
  char *nb;

  if (c->out_len + n <= c->out_cap)
    return 0;
  if (c->out_sent > 0) {
    memmove (c->out, c->out + c->out_sent, pending (c));
    c->out_len -= c->out_sent;
    c->out_sent = 0;
    if (c->out_len + n <= c->out_cap)
      return 0;
  }
  cap = c->out_cap ? c->out_cap * 2 : 64 << 10;
  if (cap < c->out_len + n)
    cap = c->out_len + n;
  nb = realloc (c->out, cap);
  if (nb == NULL)
    return -1;
  c->out = nb;
  c->out_cap = cap;
  return 0;
}

static void
queue_reply (struct client *c, json_object *reply)
{
  const char *s = json_object_to_json_string_ext (reply, JSON_C_TO_STRING_PLAIN);
  size_t n = strlen (s);

  if (out_reserve (c, n + 1) == -1) {
    log_ratelimit (LOG_ERR, "control client %s: out of memory for a reply",
                   c->name);
    c->closing = true;
    return;
  }
  if (c->out_len == 0)
    c->progress_ns = loop_now_ns ();
  memcpy (c->out + c->out_len, s, n);
  c->out[c->out_len + n] = '\n';
  c->out_len += n + 1;
  if (output_full (c) && !c->told_full) {
    c->told_full = true;
    log_ratelimit (LOG_WARNING, "control client %s: %zu bytes of replies "
                   "unread: answering none of its requests until it reads",
                   c->name, pending (c));
  }
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

/* The request on LINE: one JSON object and nothing after it but
 * blanks.  NULL with *WHY when it is anything else. */
static json_object *
parse_request (const char *line, const char **why)
{
  struct json_tokener *tok = json_tokener_new ();
  size_t end;
  json_object *req;

  if (tok == NULL) {
    *why = "out of memory";
    return NULL;
  }
  /* With -1 the terminating NUL is parsed too: the end of the data. */
  req = json_tokener_parse_ex (tok, line, -1);
  end = json_tokener_get_parse_end (tok);
  if (end > strlen (line))
    end = strlen (line);        /* a number ends at the NUL it read */
  if (req == NULL)
    /* "null" parses, to NULL, with no error to describe. */
    *why = json_tokener_get_error (tok) == json_tokener_success
      ? "request is not a JSON object"
      : json_tokener_error_desc (json_tokener_get_error (tok));
  else if (!json_object_is_type (req, json_type_object))
    *why = "request is not a JSON object";
  else if (line[end + strspn (line + end, " \t\r")] != '\0')
    *why = "data after the request's JSON object";
  else
    *why = NULL;
  json_tokener_free (tok);
  if (*why && req) {
    json_object_put (req);
    req = NULL;
  }
  return req;
}

/* LINE, LEN bytes (then a NUL): a request, or a blank line (none). */
static void
handle_line (struct client *c, const char *line, size_t len)
{
  const char *why = "request contains a NUL byte";
  json_object *req = NULL, *result, *reply;

  if (strspn (line, " \t\r") == len)
    return;
  if (strlen (line) == len)
    req = parse_request (line, &why);
  if (req == NULL) {
    reply = error_reply (why, EINVAL);
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
more_input (void *opaque)
{
  client_settle (opaque);
}

/* Answers the complete lines received, BATCH at a time, while the
 * client may be answered. */
static void
process_input (struct client *c)
{
  unsigned done = 0;
  char *line, *nl;

  while (!c->closing && !c->busy && !output_full (c)
         && (nl = memchr (line = c->in + c->in_start, '\n',
                          c->in_len - c->in_start)) != NULL) {
    if (done++ == BATCH) {
      if (!c->more.queued)
        loop_defer (ctl.loop, &c->more, more_input, c);
      return;
    }
    *nl = '\0';
    c->in_start += (size_t) (nl - line) + 1;
    handle_line (c, line, (size_t) (nl - line));
  }
  if (c->in_start == c->in_len)
    c->in_start = c->in_len = 0;
  if (c->eof && !c->busy
      && memchr (c->in + c->in_start, '\n', c->in_len - c->in_start) == NULL)
    c->closing = true;          /* all answered: close once sent */
  if (!c->closing && c->in_len - c->in_start >= MAX_LINE
      && memchr (c->in + c->in_start, '\n', c->in_len - c->in_start) == NULL) {
    json_object *r = error_reply ("request line over 1 MiB", E2BIG);
    queue_reply (c, r);
    json_object_put (r);
    c->closing = true;
  }
}

/* May the client's socket be read now? */
static bool
wants_input (const struct client *c)
{
  return !c->closing && !c->eof && !c->busy && !output_full (c)
    && c->in_len - c->in_start < MAX_LINE;
}

static void
receive (struct client *c)
{
  ssize_t r;

  if (c->in_len == MAX_LINE) { /* room at the front only */
    memmove (c->in, c->in + c->in_start, c->in_len - c->in_start);
    c->in_len -= c->in_start;
    c->in_start = 0;
  }
  r = recv (c->fd, c->in + c->in_len, MAX_LINE - c->in_len, MSG_DONTWAIT);
  if (r == 0)
    c->eof = true;              /* a half-close still gets its replies */
  else if (r == -1 && errno != EAGAIN && errno != EINTR)
    client_kill (c);
  else if (r > 0)
    c->in_len += (size_t) r;
}

static void
flush_output (struct client *c)
{
  while (c->out_sent < c->out_len) {
    ssize_t r = send (c->fd, c->out + c->out_sent, pending (c),
                      MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r == -1) {
      if (errno == EAGAIN || errno == EINTR)
        break;
      client_kill (c);
      return;
    }
    c->out_sent += (size_t) r;
    c->progress_ns = loop_now_ns ();
  }
  if (!output_full (c))
    c->told_full = false;
  if (c->out_sent < c->out_len)
    return;
  /* All out: an idle client keeps no big buffer. */
  c->out_len = c->out_sent = 0;
  if (c->out_cap > (64 << 10)) {
    free (c->out);
    c->out = NULL;
    c->out_cap = 0;
  }
  if (c->closing)
    client_kill (c);
}

static void
client_update (struct client *c)
{
  uint32_t ev = wants_input (c) ? EPOLLIN : 0;

  if (c->out_sent < c->out_len)
    ev |= EPOLLOUT;
  loop_source_set_events (c->src, ev);
}

/* After anything happened to C: answer what may be answered, send,
 * and wait for what C may do next.  A closed client is freed here,
 * unless a command still runs for it (control_reply frees it). */
static void
client_settle (struct client *c)
{
  if (c->fd >= 0)
    process_input (c);
  if (c->fd >= 0)
    flush_output (c);
  if (c->fd >= 0)
    client_update (c);
  else if (!c->busy)
    client_free (c);
}

/* The outcome of an asynchronous command (RESULT, or NULL: the error
 * set).  A client that hung up meanwhile is freed now. */
static void
control_reply (struct client *c, json_object *result)
{
  json_object *reply = result ? ok_reply (result)
    : error_reply (error_get (), error_errno ());

  c->busy = false;
  if (c->fd >= 0)
    queue_reply (c, reply);
  json_object_put (reply);
  client_settle (c);            /* and the requests that waited behind it */
}

static void
on_client (void *opaque, uint32_t events)
{
  struct client *c = opaque;

  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
    flush_output (c);
  /* Hung up while we do not read it (busy, or full): it reads nothing
   * more either, and the hang-up would wake us again and again. */
  if (c->fd >= 0 && (events & (EPOLLHUP | EPOLLERR)) && !wants_input (c))
    client_kill (c);
  /* Not while its output is full, even if the event was already on
   * its way: that is the backpressure. */
  if (c->fd >= 0 && wants_input (c) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
    receive (c);
  client_settle (c);
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
resume_accepting (void)
{
  if (!ctl.accept_paused || ctl.fd < 0)
    return;
  ctl.accept_paused = false;
  fdreserve_init ();
  loop_source_set_events (ctl.src, EPOLLIN);
}

static void
client_free (struct client *c)
{
  client_kill (c);
  loop_cancel_deferred (ctl.loop, &c->more);
  list_del (&c->node);
  free (c->in);
  free (c->out);
  free (c);
  resume_accepting ();          /* a descriptor is free */
}

/* Once a second: clients stuck on a full output go; a listener that
 * rested for want of descriptors tries again. */
static void
control_tick (void *opaque)
{
  uint64_t now = loop_now_ns ();
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &ctl.clients) {
    struct client *c = list_entry (pos, struct client, node);
    if (c->fd < 0 || !output_full (c)
        || now - c->progress_ns < STALL_S * UINT64_C (1000000000))
      continue;
    log_ratelimit (LOG_WARNING, "control client %s: disconnected: read none "
                   "of its %zu bytes of replies for %d s", c->name,
                   pending (c), STALL_S);
    client_kill (c);
    if (!c->busy)
      client_free (c);
  }
  resume_accepting ();
}

static void
client_new (int fd)
{
  struct client *c = calloc (1, sizeof *c);
  struct ucred cred;
  socklen_t len = sizeof cred;

  if (c == NULL || (c->in = malloc (MAX_LINE)) == NULL) {
    log_ratelimit (LOG_ERR, "control socket: out of memory for a client");
    free (c);
    close (fd);
    return;
  }
  c->fd = fd;
  if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
    snprintf (c->name, sizeof c->name, "pid %d", (int) cred.pid);
  else
    snprintf (c->name, sizeof c->name, "fd %d", fd);
  c->src = loop_add_fd (ctl.loop, fd, EPOLLIN, on_client, c);
  if (c->src == NULL) {
    log_ratelimit (LOG_ERR, "control socket: %s", error_get ());
    free (c->in);
    free (c);
    close (fd);
    return;
  }
  list_add_tail (&ctl.clients, &c->node);
}

static void
on_accept (void *opaque, uint32_t events)
{
  for (int i = 0; i < ACCEPT_BATCH && !ctl.accept_paused; i++) {
    int fd = accept4 (ctl.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    unsigned refused;
    int err;

    if (fd >= 0) {
      client_new (fd);
      continue;
    }
    err = errno;
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
      return;                   /* EAGAIN, or that client's own failure */
    refused = fdreserve_refuse (ctl.fd, 64);
    log_ratelimit (LOG_WARNING, "control socket: accept: %s; %u waiting "
                   "client%s closed unserved", strerror (err), refused,
                   refused == 1 ? "" : "s");
    if (refused == 0) {
      ctl.accept_paused = true;
      loop_source_set_events (ctl.src, 0);
    }
    return;
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
  if (listen (ctl.fd, 16) == -1) {
    error_set (errno, "listen %s", path);
    goto err;
  }
  if (fdreserve_init () == -1
      || (ctl.tick = loop_add_timer (loop, 1000, 1000, control_tick, NULL)) == NULL
      || (ctl.src = loop_add_fd (loop, ctl.fd, EPOLLIN, on_accept, NULL)) == NULL)
    goto err;
  ctl.path = strdup (path);
  return 0;

 err:
  loop_source_remove (ctl.tick);
  ctl.tick = NULL;
  close (ctl.fd);
  ctl.fd = -1;
  unlink (path);
  return -1;
}

void
control_stop (void)
{
  while (!list_empty (&ctl.clients))
    client_free (list_entry (ctl.clients.next, struct client, node));
  loop_source_remove (ctl.tick);
  ctl.tick = NULL;
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
