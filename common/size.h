/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_SIZE_H
#define MIRRORD_COMMON_SIZE_H

#include <stdint.h>

/* Parses a size: a decimal number with an optional binary suffix
 * (K, M, G, T, P, E, case-insensitive, optionally followed by "iB" or
 * "B").  "64K" is 65536.  Returns -1 with error_set() on junk,
 * negative numbers or overflow. */
int size_parse (const char *str, uint64_t *out);

/* Formats BYTES as "1.5 GiB" into BUF. */
const char *size_format (uint64_t bytes, char *buf, size_t len);

#endif
