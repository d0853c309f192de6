/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <errno.h>

#include "protocol.h"

uint32_t
proto_errno_to_nbd (int err)
{
  switch (err) {
  case 0: return NBD_SUCCESS;
  case EROFS:
  case EPERM: return NBD_EPERM;
  case ENOMEM: return NBD_ENOMEM;
  case EINVAL: return NBD_EINVAL;
  case EDQUOT:
  case EFBIG:
  case ENOSPC: return NBD_ENOSPC;
  case EOVERFLOW: return NBD_EOVERFLOW;
  case EOPNOTSUPP: return NBD_ENOTSUP;
  case ESHUTDOWN: return NBD_ESHUTDOWN;
  default: return NBD_EIO;
  }
}

const char *
proto_cmd_name (unsigned type)
{
  switch (type) {
  case NBD_CMD_READ: return "READ";
  case NBD_CMD_WRITE: return "WRITE";
  case NBD_CMD_DISC: return "DISC";
  case NBD_CMD_FLUSH: return "FLUSH";
  case NBD_CMD_TRIM: return "TRIM";
  case NBD_CMD_CACHE: return "CACHE";
  case NBD_CMD_WRITE_ZEROES: return "WRITE_ZEROES";
  case NBD_CMD_BLOCK_STATUS: return "BLOCK_STATUS";
  default: return "unknown";
  }
}

const char *
proto_opt_name (uint32_t option)
{
  switch (option) {
  case NBD_OPT_EXPORT_NAME: return "EXPORT_NAME";
  case NBD_OPT_ABORT: return "ABORT";
  case NBD_OPT_LIST: return "LIST";
  case NBD_OPT_STARTTLS: return "STARTTLS";
  case NBD_OPT_INFO: return "INFO";
  case NBD_OPT_GO: return "GO";
  case NBD_OPT_STRUCTURED_REPLY: return "STRUCTURED_REPLY";
  case NBD_OPT_LIST_META_CONTEXT: return "LIST_META_CONTEXT";
  case NBD_OPT_SET_META_CONTEXT: return "SET_META_CONTEXT";
  default: return "unknown";
  }
}
