/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_TESTS_FUZZ_QCOW2_HARNESS_H
#define MIRRORD_TESTS_FUZZ_QCOW2_HARNESS_H

/* What the two qcow2 fuzz targets (fuzz-qcow2.c, fuzz-qcow2-write.c)
 * share: a loop and an I/O queue, requests run one at a time to
 * completion, and memfds standing in for image files. */

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

/* Sets up logging (IDENT; quiet under libFuzzer), the loop and the
 * queue; aborts if it cannot. */
void qcow2_harness_init (const char *ident);
struct ioq *qcow2_harness_ioq (void);

/* Submits one request and runs the loop until it completes; returns
 * its error (0 on success).  BUF is the data of a READ or WRITE. */
int qcow2_harness_run (struct image *img, enum image_cmd cmd, unsigned flags,
                       uint64_t offset, uint64_t count, void *buf,
                       struct image_extents *ext);

/* A memfd holding SIZE bytes of DATA; its /proc/self/fd path in PATH.
 * Returns the descriptor (the caller closes it). */
int qcow2_harness_memfd (const uint8_t *data, size_t size, char *path,
                         size_t pathlen);

/* Frees what qcow2_harness_init set up (the replay drivers' end). */
void qcow2_harness_finish (void);

#endif
