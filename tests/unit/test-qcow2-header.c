/* SPDX-License-Identifier: MIT */
/* qcow2_header_parse() and qcow2_header_check_features(): what is
 * accepted, what is structurally invalid (EINVAL), and which features
 * are refused by name (ENOTSUP). */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "common/error.h"
#include "image/qcow2.h"

#define CS 65536u
#define FILE_SIZE (4 * CS)

static uint8_t hdr[CS];

/* A 64 MiB version 3 image as qemu-img makes it: header, refcount
 * table at cluster 1, one refcount block at 2, L1 at 3. */
static void
make (uint32_t version)
{
  memset (hdr, 0, sizeof hdr);
  memcpy (hdr, "QFI\xfb", 4);
  qcow2_put_be32 (hdr + 4, version);
  qcow2_put_be32 (hdr + 20, 16);              /* cluster_bits */
  qcow2_put_be64 (hdr + 24, 64u << 20);       /* size */
  qcow2_put_be32 (hdr + 36, 1);               /* l1_size */
  qcow2_put_be64 (hdr + 40, 3 * CS);          /* l1_table_offset */
  qcow2_put_be64 (hdr + 48, CS);              /* refcount_table_offset */
  qcow2_put_be32 (hdr + 56, 1);               /* refcount_table_clusters */
  if (version >= 3) {
    qcow2_put_be32 (hdr + 96, 4);             /* refcount_order */
    qcow2_put_be32 (hdr + 100, 112);          /* header_length */
  }
}

static int
parse (struct qcow2_header *h)
{
  return qcow2_header_parse (hdr, sizeof hdr, FILE_SIZE, h);
}

static void
add_ext (size_t *pos, uint32_t type, const void *data, uint32_t len)
{
  qcow2_put_be32 (hdr + *pos, type);
  qcow2_put_be32 (hdr + *pos + 4, len);
  memcpy (hdr + *pos + 8, data, len);
  *pos += 8 + ((len + 7) & ~7u);
}

static void
test_valid (void **state)
{
  struct qcow2_header h;
  size_t pos = 112;

  (void) state;
  make (3);
  add_ext (&pos, 0xe2792aca, "raw", 3);           /* backing format */
  add_ext (&pos, 0x12345678, "future", 6);        /* unknown: skipped */
  memcpy (hdr + 1024, "base.img", 8);
  qcow2_put_be64 (hdr + 8, 1024);
  qcow2_put_be32 (hdr + 16, 8);
  assert_int_equal (parse (&h), 0);
  assert_int_equal (h.version, 3);
  assert_int_equal (h.cluster_bits, 16);
  assert_string_equal (h.backing_file, "base.img");
  assert_string_equal (h.backing_format, "raw");
  assert_int_equal (qcow2_header_check_features (&h, true), 0);

  make (2);
  assert_int_equal (parse (&h), 0);
  assert_int_equal (h.refcount_order, 4);
  assert_int_equal (h.header_length, 72);
}

static void
expect_invalid (const char *what)
{
  struct qcow2_header h;

  assert_int_equal (parse (&h), -1);
  if (strstr (error_get (), what) == NULL)
    fail_msg ("'%s' lacks '%s'", error_get (), what);
}

/* The bitmap directory's place, so that writes keep off it. */
static void
test_bitmap_directory (void **state)
{
  struct qcow2_header h;
  uint8_t ext[24] = { 0 };
  size_t pos = 112;

  (void) state;
  make (3);
  assert_int_equal (parse (&h), 0);
  assert_false (h.has_bitmaps_ext);
  assert_int_equal (h.bitmap_dir_size, 0);
  qcow2_put_be32 (ext, 1);                      /* nb_bitmaps */
  qcow2_put_be64 (ext + 8, 1000);               /* bitmap_directory_size */
  qcow2_put_be64 (ext + 16, 2 * CS);            /* bitmap_directory_offset */
  add_ext (&pos, 0x23852875, ext, sizeof ext);
  assert_int_equal (parse (&h), 0);
  assert_true (h.has_bitmaps_ext);
  assert_int_equal (h.bitmap_dir_size, 1000);
  assert_int_equal (h.bitmap_dir_offset, 2 * CS);
  /* Too short to say where: the extension is noted, nothing more. */
  make (3);
  pos = 112;
  add_ext (&pos, 0x23852875, ext, 8);
  assert_int_equal (parse (&h), 0);
  assert_true (h.has_bitmaps_ext);
  assert_int_equal (h.bitmap_dir_size, 0);
}

static void
test_invalid (void **state)
{
  size_t pos = 112;

  (void) state;
  make (3); hdr[0] = 'X';                          expect_invalid ("not a qcow2");
  make (4);                                        expect_invalid ("version 4");
  make (3); qcow2_put_be32 (hdr + 20, 8);          expect_invalid ("cluster_bits");
  make (3); qcow2_put_be32 (hdr + 20, 22);         expect_invalid ("cluster_bits");
  make (3); qcow2_put_be32 (hdr + 100, 100);       expect_invalid ("header_length");
  make (3); qcow2_put_be32 (hdr + 96, 7);          expect_invalid ("refcount_order");
  make (3); qcow2_put_be64 (hdr + 24, 1ull << 40); expect_invalid ("L1 table");
  make (3); qcow2_put_be64 (hdr + 40, 3 * CS + 8); expect_invalid ("L1 table offset");
  make (3); qcow2_put_be64 (hdr + 40, 4 * CS);     expect_invalid ("L1 table offset");
  make (3); qcow2_put_be64 (hdr + 48, 0);          expect_invalid ("refcount table");
  make (3); qcow2_put_be32 (hdr + 56, 0);          expect_invalid ("refcount table");
  make (3); qcow2_put_be32 (hdr + 56, 100);        expect_invalid ("refcount table");
  make (3); qcow2_put_be64 (hdr + 8, CS - 4); qcow2_put_be32 (hdr + 16, 8);
  expect_invalid ("backing file name");
  make (3); qcow2_put_be64 (hdr + 8, 1024); qcow2_put_be32 (hdr + 16, 2000);
  expect_invalid ("backing file name");
  make (3); qcow2_put_be32 (hdr + pos, 0xe2792aca);
  qcow2_put_be32 (hdr + pos + 4, CS);              expect_invalid ("overruns");
}

static void
expect_refused (bool writable, const char *name)
{
  struct qcow2_header h;

  assert_int_equal (parse (&h), 0);
  assert_int_equal (qcow2_header_check_features (&h, writable), -1);
  assert_int_equal (error_errno (), ENOTSUP);
  if (strstr (error_get (), name) == NULL)
    fail_msg ("'%s' lacks '%s'", error_get (), name);
}

static void
set_incompat (uint64_t bits)
{
  qcow2_put_be64 (hdr + 72, bits);
}

static void
test_refusals (void **state)
{
  struct qcow2_header h;
  uint8_t names[48] = { 0, 9 };
  size_t pos = 112;

  (void) state;
  make (3); qcow2_put_be32 (hdr + 32, 2);  expect_refused (false, "encryption");
  make (3); set_incompat (1 << 2);         expect_refused (false, "external data file");
  make (3); set_incompat (1 << 3); qcow2_put_be32 (hdr + 100, 112); hdr[104] = 1;
  expect_refused (false, "compression type zstd");
  make (3); set_incompat (1 << 4);         expect_refused (false, "extended L2 entries");
  make (3); set_incompat (1 << 7);         expect_refused (false, "unknown incompatible feature bit 7");
  make (3); set_incompat (1 << 9);
  memcpy (names + 2, "teleportation", 13);
  add_ext (&pos, 0x6803f857, names, sizeof names);
  expect_refused (false, "bit 9 (teleportation)");

  /* Only writable opens refuse these. */
  make (3); set_incompat (1 << 1);         expect_refused (true, "corrupt bit");
  assert_int_equal (qcow2_header_check_features ((parse (&h), &h), false), 0);
  make (3); set_incompat (1 << 0);         expect_refused (true, "dirty bit");
  make (3); qcow2_put_be32 (hdr + 60, 1);  expect_refused (true, "internal snapshots");
  assert_int_equal (qcow2_header_check_features ((parse (&h), &h), false), 0);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_valid),
    cmocka_unit_test (test_bitmap_directory),
    cmocka_unit_test (test_invalid),
    cmocka_unit_test (test_refusals),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
