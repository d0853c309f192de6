/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_MIRROR_BITS_H
#define MIRRORD_MIRROR_BITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bitmap_intent;
struct export;
struct mirror;

/* Every dirty-bit operation of the mirror goes through these, and the
 * mirror files touch the export's bitmap nowhere else: the write-intent
 * tracker (issue 16 item 2) is to become the only code that marks and
 * clears dirty bits, and redirecting the mirror to it is then a matter
 * of these few functions.
 *
 * The rules they carry: a bit is cleared only after the target has the
 * data on stable storage (mirror_bits_pass_commit() after the pass's
 * target flush); anything that could not be copied is marked again
 * (the mark lands in the successor while a pass runs); a pass works on
 * a frozen bitmap. */

/* Is E's bitmap usable for a new job (present, not frozen)?  -1 with
 * error_set() if not. */
int mirror_bits_check (struct export *e);

/* Dirty bytes (parent and successor). */
uint64_t mirror_bits_dirty (const struct mirror *m);
uint32_t mirror_bits_granularity (const struct mirror *m);
/* The next run the pass has to copy, from OFF (at most LEN): 0 and
 * *START, *RUN, or 1 if there is none. */
int mirror_bits_next_pending (const struct mirror *m, uint64_t off,
                              uint64_t len, uint64_t *start, uint64_t *run);

/* [OFF, OFF+LEN) must be copied (again). */
void mirror_bits_mark (struct mirror *m, uint64_t off, uint64_t len);
/* Nothing is dirty and the target flushed: clear the whole bitmap (the
 * cut-over's last act, so the file is clean too). */
void mirror_bits_clear_all (struct mirror *m);

/* A pass: freeze (-1 with error_set()), then commit the N copied ranges
 * (the target flushed them: their bits go, the successor's marks are
 * kept) or abandon it (every bit kept). */
struct mirror_range { uint64_t off, len; };
int mirror_bits_pass_begin (struct mirror *m);
void mirror_bits_pass_commit (struct mirror *m, const struct mirror_range *r,
                              size_t n);
void mirror_bits_pass_abandon (struct mirror *m);

/* A new job: the whole disk marked dirty, on disk, before the job is
 * saved.  Returns 1 if done at once, else 0 and IN->ready() follows;
 * then mirror_bits_intent_end (dirty) either way. */
int mirror_bits_mark_all (struct mirror *m, struct bitmap_intent *in);

/* Async forwards: DST takes over SRC's write intent; it ends CLEAN (the
 * target has the write: no bit) or dirty (copy it in a pass). */
void mirror_bits_intent_share (struct mirror *m, struct bitmap_intent *dst,
                               const struct bitmap_intent *src);
void mirror_bits_intent_end (struct mirror *m, struct bitmap_intent *in,
                             bool clean);

#endif
