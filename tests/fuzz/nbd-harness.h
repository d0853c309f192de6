/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_TESTS_FUZZ_NBD_HARNESS_H
#define MIRRORD_TESTS_FUZZ_NBD_HARNESS_H

/* The NBD server in-process, for the fuzz targets of its handshake and
 * transmission phases (nbd-harness.c has the details). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Export names the harness serves: a writable raw disk with a dirty
 * bitmap, and a read-only one without, of an odd size. */
#define FUZZ_EXPORT_RW "e"
#define FUZZ_EXPORT_RO "ro"

/* Sets up the loop, the server (TLS-PSK enabled) and the two exports
 * in a private directory (removed at exit).  Aborts on failure. */
void nbd_harness_init (const char *ident);
/* One client connection: sends DATA, waiting at each offset in PAUSES
 * (increasing) until the server is quiet, then half-closes, reading
 * and discarding every reply; returns once the server has closed the
 * connection and freed it, and no I/O is in flight.  TCP makes the
 * server see a TCP client (FORCEDTLS: options before STARTTLS are
 * refused) instead of a unix-socket one.  Returns the number of bytes
 * the server sent. */
size_t nbd_harness_run (const uint8_t *data, size_t size, bool tcp,
                        const size_t *pauses, size_t nr_pauses);
/* Removes the exports and frees everything (the replay driver, so a
 * leak in the server shows up under ASan). */
void nbd_harness_free (void);
/* The replay drivers' end: frees, then reports how many of INPUTS were
 * ANSWERED (each target says what counts).  Returns 0. */
int nbd_harness_replay_finish (unsigned inputs, unsigned answered);

#endif
