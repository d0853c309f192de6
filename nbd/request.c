/* SPDX-License-Identifier: MIT */
/* Validation of transmission requests: a pure function of the request
 * and what was negotiated, so it is unit tested on its own. */
#include <config.h>

#include <errno.h>

#include "conn.h"

/* Flags each command accepts.  FUA is accepted everywhere (the spec
 * says clients set it on other commands and servers must cope). */
static uint16_t
allowed_flags (uint16_t type, const struct request_ctx *ctx)
{
  uint16_t f = NBD_CMD_FLAG_FUA;

  switch (type) {
  case NBD_CMD_READ:
    return f | (ctx->structured ? NBD_CMD_FLAG_DF : 0);
  case NBD_CMD_WRITE_ZEROES:
    return f | NBD_CMD_FLAG_NO_HOLE
      | ((ctx->eflags & NBD_FLAG_SEND_FAST_ZERO) ? NBD_CMD_FLAG_FAST_ZERO : 0);
  case NBD_CMD_BLOCK_STATUS:
    return f | NBD_CMD_FLAG_REQ_ONE;
  default:
    return f;
  }
}

static bool
is_write (uint16_t type)
{
  return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM
    || type == NBD_CMD_WRITE_ZEROES;
}

int
request_check (uint16_t type, uint16_t flags, uint64_t offset,
               uint32_t count, const struct request_ctx *ctx)
{
  switch (type) {
  case NBD_CMD_READ: case NBD_CMD_WRITE: case NBD_CMD_FLUSH:
  case NBD_CMD_TRIM: case NBD_CMD_CACHE: case NBD_CMD_WRITE_ZEROES:
  case NBD_CMD_BLOCK_STATUS: case NBD_CMD_DISC:
    break;
  default:
    return EINVAL;
  }
  if (flags & ~allowed_flags (type, ctx))
    return EINVAL;
  if (type == NBD_CMD_FLUSH || type == NBD_CMD_DISC)
    return 0;
  if (is_write (type) && !ctx->writable)
    return EPERM;
  if ((type == NBD_CMD_READ || type == NBD_CMD_WRITE)
      && count > NBD_MAX_PAYLOAD)
    return EINVAL;
  if (type == NBD_CMD_BLOCK_STATUS && (!ctx->structured || !ctx->meta_selected))
    return EINVAL;
  /* Zero-length requests are unspecified; refusing them is safe. */
  if (count == 0)
    return EINVAL;
  if (offset > ctx->size || count > ctx->size - offset)
    return (type == NBD_CMD_WRITE || type == NBD_CMD_WRITE_ZEROES)
      ? ENOSPC : EINVAL;
  return 0;
}
