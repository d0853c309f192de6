/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

#define ERROR_MAX 1024

static _Thread_local char msg[ERROR_MAX];
static _Thread_local int msg_errno;

int
error_set (int errnum, const char *fmt, ...)
{
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  /* Append the errno text unless the caller asked for none (0). */
  if (errnum > 0 && n >= 0 && (size_t) n < sizeof msg)
    snprintf (msg + n, sizeof msg - n, ": %s", strerror (errnum));
  msg_errno = errnum;
  errno = errnum > 0 ? errnum : EINVAL;
  return -1;
}

int
error_code (int errnum, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  msg_errno = errnum;
  errno = errnum > 0 ? errnum : EINVAL;
  return -1;
}

int
error_prefix (const char *fmt, ...)
{
  char prefix[ERROR_MAX], old[ERROR_MAX];
  int saved = errno;
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, msg, sizeof old);
  /* Truncation is fine: the head of the message matters most. */
  int n = snprintf (msg, sizeof msg, "%s: ", prefix);
  if (n >= 0 && (size_t) n < sizeof msg - 1) {
    size_t room = sizeof msg - 1 - (size_t) n, len = strnlen (old, room);
    memcpy (msg + n, old, len);
    msg[(size_t) n + len] = '\0';
  }
  errno = saved;
  return -1;
}

const char *
error_get (void)
{
  return msg[0] ? msg : "unknown error";
}

int
error_errno (void)
{
  return msg_errno;
}
