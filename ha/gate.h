/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_HA_GATE_H
#define MIRRORD_HA_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/list.h"
#include "image/block.h"

/* The role gate: the top layer of an export's stack (block.h).
 *
 * It decides whether a write may go down at all, and when:
 *   - refused with EPERM when the export is not writable now (read-only,
 *     a secondary, after a cut-over): the host's writable() says;
 *   - refused with EIO when before_write() fails (a primary that could
 *     not save the new generation its first write needs, ha.h);
 *   - held while holding() says so (a cut-over is draining), in arrival
 *     order, until gate_release(): then each goes down, or is refused
 *     if the export stopped being writable meanwhile;
 *   - counted while in flight (write_begin/write_end), which is how a
 *     cut-over knows when the last one is done.
 * Reads, block status, cache and flush pass untouched; the gate turns
 * the flags read-only when writes would be refused.
 *
 * The gate knows no role, mirror or export: its host (the export)
 * answers through struct gate_ops.  An export has two gates: one for
 * its clients, and one for the HA peer's replication connections (they
 * write to a secondary, the reverse of a client).  The statistics are
 * kept here: every request passes the gate once.
 */

struct gate_ops {
  bool (*writable) (void *host);
  /* Optional (NULL: never / nothing / not counted). */
  bool (*holding) (void *host);
  int (*before_write) (void *host);     /* -1 with error_set(): EIO */
  void (*write_begin) (void *host);
  void (*write_end) (void *host);       /* after the write's reply */
  /* The flags say writable although writes are refused (a live
   * migration's incoming window: QEMU -incoming needs a writable
   * export, and must not change a byte before the hand-over). */
  bool (*looks_writable) (void *host);
};

struct gate_stats {
  uint64_t requests, bytes_read, bytes_written;
};

struct gate {
  struct blk blk;
  const struct gate_ops *ops;
  void *host;
  bool count_reads;             /* bytes_read counts this gate's reads */
  struct gate_stats *stats;     /* may be shared by an export's gates */
  struct list held;
  unsigned nr_held;
};

void gate_init (struct gate *g, struct blk *lower, const struct gate_ops *ops,
                void *host, struct gate_stats *stats, bool count_reads);
/* Held writes go on, in the order they came (refused with EPERM if
 * the export is no longer writable). */
void gate_release (struct gate *g);

#endif
