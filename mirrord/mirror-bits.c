/* SPDX-License-Identifier: MIT */
/* The mirror's dirty bits, all in one place (mirror-bits.h). */
#include <config.h>

#include <errno.h>

#include "bitmap/store.h"
#include "common/error.h"
#include "export.h"
#include "mirror-bits.h"
#include "mirror-int.h"

static struct dirty_bitmap *
live (const struct mirror *m)
{
  return bitmap_store_live (m->exp->bitmap);
}

int
mirror_bits_check (struct export *e)
{
  if (e->bitmap == NULL)
    return error_code (EINVAL, "export %s has no dirty bitmap (bitmap=false)",
                      e->spec.name);
  if (dirty_bitmap_is_frozen (bitmap_store_live (e->bitmap)))
    return error_code (EBUSY, "export %s: the bitmap is in use", e->spec.name);
  return 0;
}

uint64_t
mirror_bits_dirty (const struct mirror *m)
{
  return dirty_bitmap_dirty_bytes (live (m));
}

uint32_t
mirror_bits_granularity (const struct mirror *m)
{
  return dirty_bitmap_granularity (live (m));
}

int
mirror_bits_next_pending (const struct mirror *m, uint64_t off, uint64_t len,
                          uint64_t *start, uint64_t *run)
{
  return dirty_bitmap_next_pending (live (m), off, len, start, run);
}

void
mirror_bits_mark (struct mirror *m, uint64_t off, uint64_t len)
{
  bitmap_store_mark (m->exp->bitmap, off, len);
}

void
mirror_bits_clear_all (struct mirror *m)
{
  bitmap_store_clear (m->exp->bitmap, 0, 0);
}

int
mirror_bits_pass_begin (struct mirror *m)
{
  return dirty_bitmap_freeze (live (m));
}

void
mirror_bits_pass_commit (struct mirror *m, const struct mirror_range *r,
                         size_t n)
{
  /* The file follows lazily; failed copies were marked again. */
  for (size_t i = 0; i < n; i++)
    bitmap_store_clear (m->exp->bitmap, r[i].off, r[i].len);
  dirty_bitmap_abdicate (live (m));
}

void
mirror_bits_pass_abandon (struct mirror *m)
{
  dirty_bitmap_reclaim (live (m));
}

int
mirror_bits_mark_all (struct mirror *m, struct bitmap_intent *in)
{
  return bitmap_store_begin_write (m->exp->bitmap, in, 0, export_size (m->exp));
}

void
mirror_bits_intent_share (struct mirror *m, struct bitmap_intent *dst,
                          const struct bitmap_intent *src)
{
  bitmap_store_share_intent (m->exp->bitmap, dst, src);
}

void
mirror_bits_intent_end (struct mirror *m, struct bitmap_intent *in, bool clean)
{
  if (clean)
    bitmap_store_end_write_clean (m->exp->bitmap, in);
  else
    bitmap_store_end_write (m->exp->bitmap, in);   /* marks it live */
}
