/* SPDX-License-Identifier: MIT */
/* The transport of mirrorctl: a unix stream socket carrying one JSON
 * object per line.  Replies are read into a growing buffer until a
 * newline; the buffer keeps any bytes after it for the next reply.
 * A reply may not exceed CLIENT_REPLY_MAX bytes. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/error.h"
#include "client.h"
#include "ctl.h"

#define CLIENT_REPLY_MAX (16u << 20)
#define CLIENT_CHUNK 65536

struct client {
  int fd;
  char *path;
  char *buf;        /* received bytes, buf[0..len) */
  size_t len;
  size_t cap;
};

static int
connect_failed (const char *path, int errnum)
{
  error_set (errnum, "cannot connect to mirrord control socket %s", path);
  return CTL_UNREACHABLE;
}

int
client_connect (const char *path, struct client **out)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  struct client *c;
  int fd;

  if (strlen (path) >= sizeof sun.sun_path)
    return connect_failed (path, ENAMETOOLONG);
  memcpy (sun.sun_path, path, strlen (path) + 1);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1)
    return connect_failed (path, errno);
  if (connect (fd, (struct sockaddr *) &sun, sizeof sun) == -1) {
    int saved = errno;
    close (fd);
    return connect_failed (path, saved);
  }
  c = calloc (1, sizeof *c);
  if (c == NULL || (c->path = strdup (path)) == NULL) {
    free (c);
    close (fd);
    error_set (ENOMEM, "connecting to %s", path);
    return CTL_FAILED;
  }
  c->fd = fd;
  *out = c;
  return CTL_OK;
}

void
client_close (struct client *c)
{
  if (c == NULL)
    return;
  close (c->fd);
  free (c->path);
  free (c->buf);
  free (c);
}

static int
lost (struct client *c, int errnum)
{
  error_set (errnum, "lost the connection to mirrord at %s", c->path);
  return CTL_UNREACHABLE;
}

static int
send_all (struct client *c, const char *data, size_t len)
{
  while (len > 0) {
    ssize_t n = send (c->fd, data, len, MSG_NOSIGNAL);
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1)
      return lost (c, errno);
    data += n;
    len -= (size_t) n;
  }
  return CTL_OK;
}

static int
send_request (struct client *c, json_object *req)
{
  const char *text = json_object_to_json_string_ext (req, JSON_C_TO_STRING_PLAIN);
  int r;

  if (text == NULL) {
    error_set (ENOMEM, "encoding the request");
    return CTL_FAILED;
  }
  r = send_all (c, text, strlen (text));
  if (r == CTL_OK)
    r = send_all (c, "\n", 1);
  return r;
}

/* Waits until the socket is readable or the deadline passes. */
static int
wait_readable (struct client *c, int64_t deadline_ms)
{
  struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
  int64_t left;
  int r;

  if (deadline_ms == 0)
    return CTL_OK;
  do {
    left = deadline_ms - ctl_now_ms ();
    if (left <= 0)
      break;
    r = poll (&pfd, 1, left > 60000 ? 60000 : (int) left);
    if (r > 0)
      return CTL_OK;
    if (r == -1 && errno != EINTR)
      return lost (c, errno);
  } while (1);
  error_set (0, "timed out waiting for a reply from mirrord at %s", c->path);
  return CTL_TIMEOUT;
}

static int
grow (struct client *c)
{
  size_t cap = c->cap ? c->cap * 2 : CLIENT_CHUNK;
  char *p;

  if (c->len >= CLIENT_REPLY_MAX) {
    error_set (0, "reply from mirrord is larger than %u MiB",
               CLIENT_REPLY_MAX >> 20);
    return CTL_FAILED;
  }
  if (cap > CLIENT_REPLY_MAX + 1)
    cap = CLIENT_REPLY_MAX + 1;
  p = realloc (c->buf, cap);
  if (p == NULL) {
    error_set (ENOMEM, "reading the reply");
    return CTL_FAILED;
  }
  c->buf = p;
  c->cap = cap;
  return CTL_OK;
}

/* Reads more bytes.  Sets *EOF_SEEN at end of stream (or reset). */
static int
read_more (struct client *c, int64_t deadline_ms, bool *eof_seen)
{
  ssize_t n;
  int r;

  if (c->len + 1 >= c->cap && (r = grow (c)) != CTL_OK)
    return r;
  if ((r = wait_readable (c, deadline_ms)) != CTL_OK)
    return r;
  do
    n = read (c->fd, c->buf + c->len, c->cap - c->len - 1);
  while (n == -1 && errno == EINTR);
  if (n == -1 && errno != ECONNRESET)
    return lost (c, errno);
  *eof_seen = n <= 0;
  if (n > 0)
    c->len += (size_t) n;
  return CTL_OK;
}

/* Reads until c->buf holds a whole line; its length (without the
 * newline) goes to *LINE_LEN.  An unterminated tail at end of stream
 * counts as a line, so that its parse error can be reported. */
static int
read_line (struct client *c, int64_t deadline_ms, size_t *line_len)
{
  size_t scanned = 0;
  bool eof_seen = false;
  char *nl;
  int r;

  for (;;) {
    if (c->len > scanned
        && (nl = memchr (c->buf + scanned, '\n', c->len - scanned)) != NULL) {
      *line_len = (size_t) (nl - c->buf);
      return CTL_OK;
    }
    scanned = c->len;
    if (eof_seen)
      break;
    if ((r = read_more (c, deadline_ms, &eof_seen)) != CTL_OK)
      return r;
  }
  if (c->len == 0) {
    error_set (0, "mirrord at %s closed the connection without a reply",
               c->path);
    return CTL_UNREACHABLE;
  }
  *line_len = c->len;
  return CTL_OK;
}

/* Drops the first line (and its newline) from the buffer. */
static void
consume_line (struct client *c, size_t line_len)
{
  size_t used = line_len < c->len ? line_len + 1 : c->len;

  memmove (c->buf, c->buf + used, c->len - used);
  c->len -= used;
}

static bool
only_space (const char *s, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
      return false;
  return true;
}

static int
parse_reply (struct client *c, size_t line_len, json_object **reply)
{
  json_tokener *tok = json_tokener_new ();
  json_object *obj = NULL;
  size_t end = 0;

  if (tok == NULL) {
    error_set (ENOMEM, "parsing the reply");
    return CTL_FAILED;
  }
  c->buf[line_len] = '\0';
  if (line_len <= INT32_MAX)
    obj = json_tokener_parse_ex (tok, c->buf, (int) line_len);
  if (obj != NULL)
    end = json_tokener_get_parse_end (tok);
  json_tokener_free (tok);
  if (obj == NULL || !json_object_is_type (obj, json_type_object)
      || !only_space (c->buf + end, line_len - end)) {
    json_object_put (obj);
    error_set (0, "unparseable reply from mirrord at %s", c->path);
    return CTL_FAILED;
  }
  *reply = obj;
  return CTL_OK;
}

int
client_call (struct client *c, json_object *req, int64_t deadline_ms,
             json_object **reply)
{
  size_t line_len;
  int r;

  if ((r = send_request (c, req)) != CTL_OK)
    return r;
  if ((r = read_line (c, deadline_ms, &line_len)) != CTL_OK)
    return r;
  r = parse_reply (c, line_len, reply);
  consume_line (c, line_len);
  return r;
}
