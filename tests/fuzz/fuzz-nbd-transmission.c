/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the NBD server's transmission phase: request
 * headers, command and flag validation, write payloads (and skipping
 * refused ones), simple and structured replies, BLOCK_STATUS over the
 * selected meta contexts, DISC.
 *
 * An input is a byte choosing the negotiation, which the target
 * performs itself so that every other byte lands in transmission:
 *   bit 0  STRUCTURED_REPLY
 *   bit 1  SET_META_CONTEXT base:allocation
 *   bit 2  SET_META_CONTEXT qemu:dirty-bitmap:EXPORT
 *   bit 3  the read-only export (no bitmap, odd size) instead of the
 *          writable one
 *   bit 4  EXPORT_NAME instead of GO
 *   bit 5  the client flag NO_ZEROES
 * then the request stream.  It runs through the real server
 * (nbd-harness.c) against its memory disks.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "nbd/conn.h"
#include "nbd-harness.h"

#define MAX_INPUT (1u << 20)
#define MAX_NEGOTIATION 256

static unsigned answered;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  nbd_harness_init ("fuzz-nbd-transmission");
  return 0;
}

static uint8_t *
option (uint8_t *p, uint32_t opt, const void *data, uint32_t len)
{
  p = put64 (p, NBD_IHAVEOPT);
  p = put32 (p, opt);
  p = put32 (p, len);
  if (len)
    memcpy (p, data, len);
  return p + len;
}

static uint8_t *
meta_context (uint8_t *p, const char *export, uint8_t mode)
{
  uint8_t d[128], *q = d;
  char dirty[64];
  const char *names[2] = { NULL, NULL };
  uint32_t nq = 0;

  snprintf (dirty, sizeof dirty, "qemu:dirty-bitmap:%s", export);
  if (mode & 2)
    names[nq++] = "base:allocation";
  if (mode & 4)
    names[nq++] = dirty;
  q = put32 (q, (uint32_t) strlen (export));
  memcpy (q, export, strlen (export));
  q += strlen (export);
  q = put32 (q, nq);
  for (uint32_t i = 0; i < nq; i++) {
    q = put32 (q, (uint32_t) strlen (names[i]));
    memcpy (q, names[i], strlen (names[i]));
    q += strlen (names[i]);
  }
  return option (p, NBD_OPT_SET_META_CONTEXT, d, (uint32_t) (q - d));
}

/* The client's negotiation for MODE, into P; returns its end. */
static uint8_t *
negotiate (uint8_t *p, uint8_t mode)
{
  const char *export = (mode & 8) ? FUZZ_EXPORT_RO : FUZZ_EXPORT_RW;
  uint32_t n = (uint32_t) strlen (export);
  uint8_t go[64], *q = go;

  p = put32 (p, NBD_FLAG_C_FIXED_NEWSTYLE
             | ((mode & 32) ? NBD_FLAG_C_NO_ZEROES : 0));
  if (mode & 1)
    p = option (p, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
  if (mode & 6)
    p = meta_context (p, export, mode);
  if (mode & 16)
    return option (p, NBD_OPT_EXPORT_NAME, export, n);
  q = put32 (q, n);
  memcpy (q, export, n);
  q = put16 (q + n, 0);         /* no information requests */
  return option (p, NBD_OPT_GO, go, (uint32_t) (q - go));
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  uint8_t *stream, *p;

  if (size == 0 || size > MAX_INPUT)
    return -1;
  stream = malloc (MAX_NEGOTIATION + size - 1);
  if (stream == NULL)
    abort ();
  p = negotiate (stream, data[0]);
  memcpy (p, data + 1, size - 1);
  answered += nbd_harness_run (stream, (size_t) (p - stream) + size - 1, false,
                               NULL, 0) > 0;
  free (stream);
  return 0;
}

int
fuzz_replay_finish (unsigned inputs)
{
  return nbd_harness_replay_finish (inputs, answered);
}
