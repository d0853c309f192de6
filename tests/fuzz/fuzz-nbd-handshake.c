/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the NBD server's negotiation phase.
 *
 * An input is a mode byte, then the bytes a client sends from its
 * first (the client flags).  Bit 0 of the mode makes the connection a
 * TCP one, where TLS is required (FORCEDTLS), instead of a unix-socket
 * one; bit 1 sends everything at once (no lock-step, below).  The stream runs through the real server (nbd-harness.c):
 * options, option replies, STARTTLS (whose handshake then gets the
 * rest of the input), and transmission if an option enters it.  The
 * client goes in lock-step as real ones do: it waits for the server
 * after the flags and after each well-formed option until one that may
 * enter transmission, so STARTTLS is answered before the bytes after
 * it arrive (sent together, they are refused as injected plaintext).
 *
 * The replay driver (replay-nbd-handshake) checks the seeds did reach
 * the server's replies: every input must get at least the greeting.
 */
#include <config.h>

#include <stdio.h>

#include "fuzz.h"
#include "nbd/conn.h"
#include "nbd-harness.h"

#define MAX_INPUT (1u << 20)
#define GREETING_LEN 18
#define MAX_PAUSES 256

static unsigned answered;       /* inputs that got more than the greeting */

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  nbd_harness_init ("fuzz-nbd-handshake");
  return 0;
}

/* Where the client waits for the server: after the flags, and after
 * each option while they are well-formed, up to GO or EXPORT_NAME. */
static size_t
find_pauses (const uint8_t *p, size_t size, size_t *pauses)
{
  size_t n = 0, off = 4;

  if (size < off)
    return 0;
  pauses[n++] = off;
  while (n < MAX_PAUSES && size - off >= 16 && get64 (p + off) == NBD_IHAVEOPT) {
    uint32_t opt = get32 (p + off + 8), len = get32 (p + off + 12);
    if (len > size - off - 16)
      break;
    off += 16 + (size_t) len;
    pauses[n++] = off;
    if (opt == NBD_OPT_GO || opt == NBD_OPT_EXPORT_NAME)
      break;
  }
  return n;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  size_t pauses[MAX_PAUSES], got;

  if (size == 0 || size > MAX_INPUT)
    return -1;
  got = nbd_harness_run (data + 1, size - 1, data[0] & 1, pauses,
                         (data[0] & 2) ? 0 : find_pauses (data + 1, size - 1, pauses));
  if (got < GREETING_LEN)
    __builtin_trap ();          /* every client is greeted */
  answered += got > GREETING_LEN;
  return 0;
}

int
fuzz_replay_finish (unsigned inputs)
{
  return nbd_harness_replay_finish (inputs, answered);
}
