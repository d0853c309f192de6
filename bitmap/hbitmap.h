/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_BITMAP_HBITMAP_H
#define MIRRORD_BITMAP_HBITMAP_H

#include <stdbool.h>
#include <stdint.h>

/* A hierarchical bitmap of NBITS bits (design note in hbitmap.c).
 *
 * Bits are numbered 0 .. nbits-1.  Every range argument must lie inside
 * the bitmap (asserted).  The only call that can fail is hbitmap_new();
 * everything else works on memory reserved up front.  Not thread-safe:
 * the caller serialises access (mirrord runs it on the main loop).
 */

struct hbitmap;

/* 2^40 bits: 4 PiB at the smallest granularity, 64 EiB at the largest. */
#define HBITMAP_MAX_BITS (UINT64_C (1) << 40)

/* An empty bitmap.  NULL (error set) if nbits > HBITMAP_MAX_BITS or the
 * memory cannot be reserved.  nbits may be 0. */
struct hbitmap *hbitmap_new (uint64_t nbits);
void hbitmap_free (struct hbitmap *hb);

uint64_t hbitmap_size (const struct hbitmap *hb);
/* Number of set bits, O(1). */
uint64_t hbitmap_count (const struct hbitmap *hb);
/* Bits set in A or B (same size), without double counting:
 * O(words of B that are non-zero). */
uint64_t hbitmap_count_union (const struct hbitmap *a, const struct hbitmap *b);

bool hbitmap_get (const struct hbitmap *hb, uint64_t bit);
/* Set / clear COUNT bits from START; return how many bits changed. */
uint64_t hbitmap_set (struct hbitmap *hb, uint64_t start, uint64_t count);
uint64_t hbitmap_reset (struct hbitmap *hb, uint64_t start, uint64_t count);
void hbitmap_reset_all (struct hbitmap *hb);

/* First set bit >= FROM, or -1.  O(log64 n).  FROM may be >= size. */
int64_t hbitmap_next_set (const struct hbitmap *hb, uint64_t from);
/* First clear bit >= FROM, or -1.  O(distance / 64): a scan. */
int64_t hbitmap_next_zero (const struct hbitmap *hb, uint64_t from);
/* The first run of set bits inside [FROM, FROM + MAX_LEN) (clipped to
 * the size), clipped to that window.  False if the window is clean.
 * O(log64 n + run length / 64). */
bool hbitmap_next_dirty_area (const struct hbitmap *hb, uint64_t from,
                              uint64_t max_len,
                              uint64_t *start, uint64_t *len);

/* DST |= SRC; DST = SRC.  Same size (asserted).  O(non-zero words of
 * SRC), plus O(non-zero words of DST) for the copy. */
void hbitmap_merge (struct hbitmap *dst, const struct hbitmap *src);
void hbitmap_copy (struct hbitmap *dst, const struct hbitmap *src);

/* Level 0 as little-endian 64-bit words, for persistence.  Word W holds
 * bits 64W .. 64W+63, bit 64W in its least significant bit.  Bits past
 * the size read as 0 and are ignored when loaded.  Deserialising
 * replaces the words and rebuilds the upper levels and the count. */
uint64_t hbitmap_word_count (const struct hbitmap *hb);
void hbitmap_serialize (const struct hbitmap *hb, uint64_t first_word,
                        uint64_t nr_words, uint64_t *out_le);
void hbitmap_deserialize_words (struct hbitmap *hb, uint64_t first_word,
                                uint64_t nr_words, const uint64_t *in_le);

#endif
