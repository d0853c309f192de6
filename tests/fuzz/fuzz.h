/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_TESTS_FUZZ_H
#define MIRRORD_TESTS_FUZZ_H

/* What every fuzz target (fuzz-*.c) provides.  Each target is built
 * twice: with libFuzzer's main (configure --enable-fuzz), and linked
 * with replay.c (always), which runs the corpus once in make check. */

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

/* replay.c calls it after the last input: the target checks what it
 * counted (returns -1 if the corpus did not do what it should) and
 * frees what it set up, so leaks in the code under test stand out. */
int fuzz_replay_finish (unsigned inputs);

/* The log level of a target: the replay driver logs (its output is a
 * test log), libFuzzer runs do not (millions of error paths). */
#ifdef FUZZ_REPLAY
#define FUZZ_LOG_VERBOSITY 0
#else
#define FUZZ_LOG_VERBOSITY (-1)
#endif

#endif
