/* SPDX-License-Identifier: MIT */
/* The qcow2 header and its extensions: parsing, validation, and the
 * list of features this driver refuses.  Pure functions of the bytes,
 * so the fuzzer can drive them directly. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "qcow2.h"

#define EXT_END         0x00000000u
#define EXT_BACKING_FMT 0xe2792acau
#define EXT_FEATURES    0x6803f857u
#define EXT_BITMAPS     0x23852875u
#define EXT_CRYPTO      0x0537be77u
#define EXT_DATA_FILE   0x44415441u

#define V2_HEADER_LENGTH 72u
#define V3_HEADER_LENGTH 104u

static void
parse_fixed (const uint8_t *b, struct qcow2_header *h)
{
  h->version = qcow2_be32 (b + 4);
  h->cluster_bits = qcow2_be32 (b + 20);
  h->size = qcow2_be64 (b + 24);
  h->crypt_method = qcow2_be32 (b + 32);
  h->l1_size = qcow2_be32 (b + 36);
  h->l1_offset = qcow2_be64 (b + 40);
  h->reftable_offset = qcow2_be64 (b + 48);
  h->reftable_clusters = qcow2_be32 (b + 56);
  h->nb_snapshots = qcow2_be32 (b + 60);
  h->header_length = V2_HEADER_LENGTH;
  h->refcount_order = 4;
  if (h->version >= 3) {
    h->incompatible = qcow2_be64 (b + 72);
    h->compatible = qcow2_be64 (b + 80);
    h->autoclear = qcow2_be64 (b + 88);
    h->refcount_order = qcow2_be32 (b + 96);
    h->header_length = qcow2_be32 (b + 100);
  }
}

/* Is [OFF, OFF+LEN) a cluster-aligned range inside the file? */
static bool
in_file (const struct qcow2_header *h, uint64_t off, uint64_t len,
         uint64_t file_size)
{
  return off % (1ull << h->cluster_bits) == 0 && off <= file_size
    && len <= file_size - off;
}

static int
check_geometry (const struct qcow2_header *h, uint64_t file_size)
{
  uint64_t cs, l2_entries, need_l1;

  if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS
      || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
    return error_set (EINVAL, "cluster_bits %u out of range 9..21",
                      h->cluster_bits);
  cs = 1ull << h->cluster_bits;
  if (h->version >= 3 && (h->header_length < V3_HEADER_LENGTH
                          || h->header_length % 8 || h->header_length > cs))
    return error_set (EINVAL, "bad header_length %u", h->header_length);
  if (h->refcount_order > 6)
    return error_set (EINVAL, "refcount_order %u > 6", h->refcount_order);
  if (h->size > (1ull << 61))
    return error_set (EINVAL, "virtual size %llu too large",
                      (unsigned long long) h->size);
  l2_entries = cs / 8;
  need_l1 = (h->size + cs * l2_entries - 1) / (cs * l2_entries);
  if (h->l1_size < need_l1)
    return error_set (EINVAL, "L1 table of %u entries too small for %llu bytes",
                      h->l1_size, (unsigned long long) h->size);
  if ((uint64_t) h->l1_size * 8 > QCOW2_MAX_L1_BYTES)
    return error_set (EINVAL, "L1 table of %u entries too large", h->l1_size);
  if (h->l1_size && !in_file (h, h->l1_offset, (uint64_t) h->l1_size * 8,
                              file_size))
    return error_set (EINVAL, "L1 table offset %#llx invalid",
                      (unsigned long long) h->l1_offset);
  if (h->reftable_clusters == 0
      || (uint64_t) h->reftable_clusters * cs > QCOW2_MAX_REFTABLE_BYTES)
    return error_set (EINVAL, "refcount table of %u clusters invalid",
                      h->reftable_clusters);
  if (!in_file (h, h->reftable_offset, (uint64_t) h->reftable_clusters * cs,
                file_size) || h->reftable_offset == 0)
    return error_set (EINVAL, "refcount table offset %#llx invalid",
                      (unsigned long long) h->reftable_offset);
  return 0;
}

static void
copy_string (char *dst, size_t cap, const uint8_t *src, size_t len)
{
  if (len >= cap)
    len = cap - 1;
  memcpy (dst, src, len);
  dst[len] = '\0';
}

static void
parse_feature_names (const uint8_t *p, uint32_t len, struct qcow2_header *h)
{
  for (uint32_t i = 0; i + 48 <= len; i += 48)
    if (p[i] == 0 && p[i + 1] < 64)
      copy_string (h->incompat_names[p[i + 1]], sizeof h->incompat_names[0],
                   p + i + 2, strnlen ((const char *) p + i + 2, 46));
}

/* Where the bitmap directory is, so that nothing writes over it (its
 * contents are QEMU's business: the bitmaps become invalid anyway). */
static void
parse_bitmaps (const uint8_t *p, uint32_t len, struct qcow2_header *h)
{
  h->has_bitmaps_ext = true;
  if (len < 24)
    return;
  h->bitmap_dir_size = qcow2_be64 (p + 8);
  h->bitmap_dir_offset = qcow2_be64 (p + 16);
}

/* Walks the extensions from the end of the header to the end of the
 * first cluster; unknown ones are skipped (and, since the header is
 * only ever patched in place, preserved). */
static int
parse_extensions (const uint8_t *b, size_t len, struct qcow2_header *h)
{
  size_t pos = h->header_length;

  while (pos + 8 <= len) {
    uint32_t type = qcow2_be32 (b + pos), elen = qcow2_be32 (b + pos + 4);
    const uint8_t *data = b + pos + 8;

    if (type == EXT_END)
      return 0;
    if (elen > len - pos - 8)
      return error_set (EINVAL, "header extension %#x overruns the header",
                        type);
    switch (type) {
    case EXT_BACKING_FMT:
      copy_string (h->backing_format, sizeof h->backing_format, data, elen);
      break;
    case EXT_FEATURES:  parse_feature_names (data, elen, h); break;
    case EXT_BITMAPS:   parse_bitmaps (data, elen, h); break;
    case EXT_CRYPTO:    h->has_crypto_ext = true; break;
    case EXT_DATA_FILE: h->has_data_file_ext = true; break;
    default:            break;
    }
    pos += 8 + ((elen + 7ull) & ~7ull);
  }
  return 0;
}

static int
parse_backing (const uint8_t *b, size_t len, struct qcow2_header *h)
{
  uint64_t off = qcow2_be64 (b + 8);
  uint32_t size = qcow2_be32 (b + 16);

  if (off == 0)
    return 0;
  if (size == 0 || size > QCOW2_MAX_BACKING_NAME || off > len
      || size > len - off)
    return error_set (EINVAL, "backing file name (offset %#llx, %u bytes) "
                      "not within the first cluster",
                      (unsigned long long) off, size);
  copy_string (h->backing_file, sizeof h->backing_file, b + off, size);
  if (strlen (h->backing_file) != size)
    return error_set (EINVAL, "backing file name contains a NUL byte");
  return 0;
}

int
qcow2_header_parse (const uint8_t *buf, size_t len, uint64_t file_size,
                    struct qcow2_header *h)
{
  memset (h, 0, sizeof *h);
  if (len < V2_HEADER_LENGTH || memcmp (buf, "QFI\xfb", 4) != 0)
    return error_set (EINVAL, "not a qcow2 header");
  if (qcow2_be32 (buf + 4) >= 3 && len < V3_HEADER_LENGTH)
    return error_set (EINVAL, "truncated version 3 header");
  parse_fixed (buf, h);
  if (h->version != 2 && h->version != 3)
    return error_set (ENOTSUP, "unsupported qcow2 version %u", h->version);
  if (check_geometry (h, file_size) == -1)
    return -1;
  if (len > (1ull << h->cluster_bits))
    len = 1ull << h->cluster_bits;
  if (h->header_length > len)
    return error_set (EINVAL, "header_length %u past the first cluster",
                      h->header_length);
  if (h->version >= 3 && h->header_length > V3_HEADER_LENGTH)
    h->compression_type = buf[104];
  if (parse_extensions (buf, len, h) == -1 || parse_backing (buf, len, h) == -1)
    return -1;
  return 0;
}

static int
refuse (const char *name)
{
  return error_set (ENOTSUP, "unsupported qcow2 feature: %s", name);
}

static int
refuse_unknown (const struct qcow2_header *h, uint64_t unknown)
{
  for (int bit = 0; bit < 64; bit++)
    if (unknown & (1ull << bit)) {
      if (h->incompat_names[bit][0])
        return error_set (ENOTSUP, "unsupported qcow2 feature: unknown "
                          "incompatible feature bit %d (%s)", bit,
                          h->incompat_names[bit]);
      return error_set (ENOTSUP, "unsupported qcow2 feature: unknown "
                        "incompatible feature bit %d", bit);
    }
  return 0;
}

int
qcow2_header_check_features (const struct qcow2_header *h, bool writable)
{
  uint64_t known = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT
    | QCOW2_INCOMPAT_DATA_FILE | QCOW2_INCOMPAT_COMPRESSION
    | QCOW2_INCOMPAT_EXTL2;

  if (h->incompatible & ~known)
    return refuse_unknown (h, h->incompatible & ~known);
  if (h->crypt_method != 0 || h->has_crypto_ext)
    return refuse ("encryption");
  if ((h->incompatible & QCOW2_INCOMPAT_DATA_FILE) || h->has_data_file_ext)
    return refuse ("external data file");
  if ((h->incompatible & QCOW2_INCOMPAT_COMPRESSION) || h->compression_type) {
    if (h->compression_type == 1)
      return refuse ("compression type zstd");
    return refuse ("compression type other than zlib");
  }
  if (h->incompatible & QCOW2_INCOMPAT_EXTL2)
    return refuse ("extended L2 entries");
  if (!writable)
    return 0;
  if (h->incompatible & QCOW2_INCOMPAT_CORRUPT)
    return refuse ("corrupt bit: its metadata was found inconsistent, and "
                   "writing could destroy data (repair with 'qemu-img check "
                   "-r all', or open read-only)");
  if (h->incompatible & QCOW2_INCOMPAT_DIRTY)
    return refuse ("dirty bit (lazy refcounts need repair: qemu-img check -r all)");
  if (h->nb_snapshots)
    return refuse ("internal snapshots (on a writable open; read-only works)");
  return 0;
}
