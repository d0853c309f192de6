/* SPDX-License-Identifier: MIT */
/* The TLS-PSK key file (psk.h).
 *
 * Secrets never touch the ordinary heap: the file's text is read into
 * a locked anonymous mapping, its keys are decoded into another (half
 * the text's size is always enough: two hex digits per byte), and both
 * are zeroed before they are unmapped.
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "error.h"
#include "log.h"
#include "psk.h"

/* ---- Locked memory ---- */

static size_t
page_round (size_t len)
{
  size_t page = (size_t) sysconf (_SC_PAGESIZE);

  return len == 0 ? page : (len + page - 1) / page * page;
}

static void *
locked_alloc (size_t len)
{
  void *p = mmap (NULL, len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  if (p == MAP_FAILED) {
    error_set (errno, "allocating %zu bytes for keys", len);
    return NULL;
  }
  /* Best effort: RLIMIT_MEMLOCK may be small for an unprivileged user,
   * and a key in swap is a smaller risk than no daemon. */
  if (mlock (p, len) == -1)
    log_debug ("mlock of the key memory failed: %m");
  madvise (p, len, MADV_DONTDUMP);
  return p;
}

static void
locked_free (void *p, size_t len)
{
  if (p == NULL)
    return;
  explicit_bzero (p, len);
  munlock (p, len);
  munmap (p, len);
}

/* ---- Parsing ---- */

static int
hex_value (char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

static bool
username_ok (const char *s, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (isspace ((unsigned char) s[i]) || iscntrl ((unsigned char) s[i]))
      return false;
  return true;
}

struct parser {
  struct psk_keys *k;
  const char *file;
  size_t line, used;            /* USED: bytes of the key region taken */
  size_t *lines;                /* line of each key, for duplicates */
};

static int
check_username (struct parser *p, const char *user, size_t len)
{
  if (len == 0)
    return error_set (0, "%s:%zu: empty username (expected USERNAME:HEXKEY)",
                      p->file, p->line);
  if (len > PSK_MAX_USERNAME)
    return error_set (0, "%s:%zu: username longer than %d bytes",
                      p->file, p->line, PSK_MAX_USERNAME);
  if (!username_ok (user, len))
    return error_set (0, "%s:%zu: username contains spaces or control "
                      "characters", p->file, p->line);
  for (size_t i = 0; i < p->k->nr; i++)
    if (strlen (p->k->keys[i].username) == len
        && memcmp (p->k->keys[i].username, user, len) == 0)
      return error_set (0, "%s:%zu: username '%.*s' already has a key "
                        "(line %zu)", p->file, p->line, (int) len, user,
                        p->lines[i]);
  return 0;
}

/* Decodes HEX (LEN digits) into the key region; returns the key. */
static const uint8_t *
decode_key (struct parser *p, const char *user, size_t ulen,
            const char *hex, size_t len)
{
  uint8_t *out = p->k->region + p->used;

  for (size_t i = 0; i < len; i++)
    if (hex_value (hex[i]) < 0) {
      error_set (0, "%s:%zu: key for '%.*s' is not hexadecimal",
                 p->file, p->line, (int) ulen, user);
      return NULL;
    }
  if (len == 0 || len % 2 || len / 2 > PSK_MAX_KEY) {
    error_set (0, "%s:%zu: key for '%.*s' must be 2 to %d hex digits, "
               "an even number (psktool writes 64)", p->file, p->line,
               (int) ulen, user, 2 * PSK_MAX_KEY);
    return NULL;
  }
  for (size_t i = 0; i < len; i += 2)
    out[i / 2] = (uint8_t) (hex_value (hex[i]) << 4 | hex_value (hex[i + 1]));
  p->used += len / 2;
  return out;
}

static int
add_key (struct parser *p, const char *user, size_t ulen, const uint8_t *key,
         size_t len)
{
  struct psk_keys *k = p->k;
  struct psk_key *keys = realloc (k->keys, (k->nr + 1) * sizeof *keys);
  size_t *lines = realloc (p->lines, (k->nr + 1) * sizeof *lines);

  if (keys)
    k->keys = keys;
  if (lines)
    p->lines = lines;
  if (keys == NULL || lines == NULL)
    return error_set (ENOMEM, "%s", p->file);
  keys[k->nr] = (struct psk_key) { .username = strndup (user, ulen),
                                   .key = key, .len = len };
  if (keys[k->nr].username == NULL)
    return error_set (ENOMEM, "%s", p->file);
  lines[k->nr] = p->line;
  k->nr++;
  return 0;
}

/* One line, without its newline. */
static int
parse_line (struct parser *p, const char *s, size_t len)
{
  const char *colon;
  const uint8_t *key;
  size_t ulen;

  /* psktool writes "\n"; an editor may leave "\r" or trailing blanks. */
  while (len > 0 && isspace ((unsigned char) s[len - 1]))
    len--;
  if (len == 0 || s[0] == '#')
    return 0;
  colon = memchr (s, ':', len);
  if (colon == NULL)
    return error_set (0, "%s:%zu: expected USERNAME:HEXKEY", p->file, p->line);
  ulen = (size_t) (colon - s);
  if (check_username (p, s, ulen) == -1)
    return -1;
  key = decode_key (p, s, ulen, colon + 1, len - ulen - 1);
  if (key == NULL)
    return -1;
  return add_key (p, s, ulen, key, (len - ulen - 1) / 2);
}

struct psk_keys *
psk_parse (const char *file, const char *text, size_t len)
{
  struct psk_keys *k = calloc (1, sizeof *k);
  struct parser p = { .k = k, .file = file };
  size_t pos = 0;

  if (k == NULL || (k->file = strdup (file)) == NULL) {
    free (k);
    error_set (ENOMEM, "%s", file);
    return NULL;
  }
  k->region_len = page_round (len / 2);
  k->region = locked_alloc (k->region_len);
  if (k->region == NULL)
    goto err;
  while (pos < len) {
    const char *nl = memchr (text + pos, '\n', len - pos);
    size_t end = nl ? (size_t) (nl - text) : len;
    p.line++;
    if (memchr (text + pos, '\0', end - pos)) {
      error_set (0, "%s:%zu: NUL byte in the key file", file, p.line);
      goto err;
    }
    if (parse_line (&p, text + pos, end - pos) == -1)
      goto err;
    pos = end + 1;
  }
  if (k->nr == 0) {
    error_set (0, "%s: no keys in the file (expected lines USERNAME:HEXKEY, "
               "as 'psktool -u NAME -p FILE' writes)", file);
    goto err;
  }
  free (p.lines);
  mprotect (k->region, k->region_len, PROT_READ);
  return k;

 err:
  free (p.lines);
  psk_free (k);
  return NULL;
}

/* ---- Loading ---- */

static int
read_all (int fd, const char *file, char *buf, size_t len)
{
  size_t got = 0;

  while (got < len) {
    ssize_t r = read (fd, buf + got, len - got);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return error_set (errno, "%s", file);
    if (r == 0)
      break;
    got += (size_t) r;
  }
  return (int) got;
}

struct psk_keys *
psk_load (const char *file)
{
  struct psk_keys *k = NULL;
  struct stat st;
  char *text = NULL;
  size_t cap = 0;
  int fd, n;

  fd = open (file, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    error_set (errno, "%s", file);
    return NULL;
  }
  if (fstat (fd, &st) == -1) {
    error_set (errno, "%s", file);
    goto out;
  }
  if (!S_ISREG (st.st_mode)) {
    error_set (0, "%s: not a regular file", file);
    goto out;
  }
  if (st.st_size > PSK_MAX_FILE) {
    error_set (0, "%s: larger than %u bytes: not a key file", file,
               PSK_MAX_FILE);
    goto out;
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    log_warn ("%s: keys readable by other users (mode %03o); chmod 600",
              file, (unsigned) (st.st_mode & 0777));
  /* One byte more than its size, to notice a file growing under us
   * (being rewritten): half a line must not pass for a key. */
  cap = page_round ((size_t) st.st_size + 1);
  text = locked_alloc (cap);
  if (text == NULL)
    goto out;
  n = read_all (fd, file, text, (size_t) st.st_size + 1);
  if (n == -1)
    goto out;
  if (n > st.st_size) {
    error_set (0, "%s: changed while being read", file);
    goto out;
  }
  if (n == 0) {
    error_set (0, "%s: the key file is empty (expected lines "
               "USERNAME:HEXKEY)", file);
    goto out;
  }
  k = psk_parse (file, text, (size_t) n);

 out:
  locked_free (text, cap);
  close (fd);
  return k;
}

/* ---- Use ---- */

void
psk_lock (const struct psk_keys *k)
{
  if (mlock (k->region, k->region_len) == -1)
    log_debug ("mlock of the key memory failed: %m");
}

const struct psk_key *
psk_lookup (const struct psk_keys *k, const char *username)
{
  for (size_t i = 0; i < k->nr; i++)
    if (strcmp (k->keys[i].username, username) == 0)
      return &k->keys[i];
  return NULL;
}

const char *
psk_first_username (const struct psk_keys *k)
{
  return k->nr ? k->keys[0].username : NULL;
}

void
psk_free (struct psk_keys *k)
{
  if (k == NULL)
    return;
  if (k->region) {
    mprotect (k->region, k->region_len, PROT_READ | PROT_WRITE);
    locked_free (k->region, k->region_len);
  }
  for (size_t i = 0; i < k->nr; i++)
    free (k->keys[i].username);
  free (k->keys);
  free (k->file);
  free (k);
}
