/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_BITMAP_FORMAT_H
#define MIRRORD_BITMAP_FORMAT_H

/* The on-disk format of a persistent dirty bitmap (docs/bitmap-format.md).
 *
 *   block 0, block 1   header slots A and B (the valid one with the
 *                      higher sequence number wins: a torn header write
 *                      leaves the other slot intact)
 *   block 2 + i        data block i: 511 little-endian 64-bit words of
 *                      bits (the hbitmap serialisation), its own index
 *                      and a crc32
 *
 * Every block is 4096 bytes and ends with a zlib crc32 of the bytes
 * before it.  Every data block is written, empty ones too: an all-zero
 * block never passes its check (the crc32 of 4092 zero bytes is not
 * zero), so a block zeroed by damage, or one past the end of a
 * truncated file, reads as corrupt and never as "nothing dirty".
 * Header fields are big-endian behind wrapper types, so they cannot be
 * used as host integers by accident.
 *
 * Version 2.  Version 1 was the same layout, but its files were sparse
 * and an all-zero data block counted as valid and empty; a version 1
 * file is read with version 2's rules (its all-zero blocks are dirty)
 * and converted (docs/bitmap-format.md).
 */

#include <endian.h>
#include <stdint.h>

#define BITMAP_BLOCK 4096u
#define BITMAP_WORDS_PER_BLOCK 511u
#define BITMAP_BITS_PER_BLOCK (64u * BITMAP_WORDS_PER_BLOCK)
#define BITMAP_MAGIC "MRDBITMP"
#define BITMAP_VERSION 2u
#define BITMAP_VERSION_SPARSE 1u     /* all-zero blocks were valid */
#define BITMAP_HEADER_SLOTS 2u
#define BITMAP_HISTORY 4u
#define BITMAP_PATH_MAX 1024u

/* Header flags. */
#define BITMAP_FLAG_CLEAN (1u << 0)   /* closed cleanly: bits are exact */

typedef struct { uint32_t be; } be32_t;
typedef struct { uint64_t be; } be64_t;

static inline uint32_t be32_get (be32_t v) { return be32toh (v.be); }
static inline uint64_t be64_get (be64_t v) { return be64toh (v.be); }
static inline be32_t be32_put (uint32_t v) { return (be32_t) { htobe32 (v) }; }
static inline be64_t be64_put (uint64_t v) { return (be64_t) { htobe64 (v) }; }

struct bitmap_header_disk {
  char magic[8];
  be32_t version;
  be32_t header_size;
  be64_t sequence;
  be64_t image_size;
  be32_t granularity;
  be32_t flags;
  be64_t nr_bits;
  be32_t nr_blocks;
  be32_t words_per_block;
  /* Generation identifiers (the HA layer's): the data's current
   * generation, the one the bitmap counts changes since, history. */
  be64_t gen_current;
  be64_t gen_bitmap;
  be64_t gen_history[BITMAP_HISTORY];
  be32_t role;
  be32_t disk_state;
  be32_t path_len;
  char path[BITMAP_PATH_MAX];
  uint8_t reserved[BITMAP_BLOCK - 116 - BITMAP_PATH_MAX - 4];
  be32_t crc;
} __attribute__ ((packed));

/* Naturally aligned (no padding: the assertion below checks), so the
 * words can be handed to hbitmap directly. */
struct bitmap_block_disk {
  uint64_t words_le[BITMAP_WORDS_PER_BLOCK];
  be32_t index;
  be32_t crc;
};

_Static_assert (sizeof (struct bitmap_header_disk) == BITMAP_BLOCK, "header size");
_Static_assert (sizeof (struct bitmap_block_disk) == BITMAP_BLOCK, "block size");

#endif
