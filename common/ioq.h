/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_IOQ_H
#define MIRRORD_COMMON_IOQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <libaio.h>

#include "list.h"
#include "loop.h"

/* ioq: the asynchronous I/O engine under every image.
 *
 * Reads, writes and flushes go to the kernel through libaio (one
 * io_context per loop); their completions arrive on an eventfd that
 * the loop watches.  Operations are queued and submitted in small
 * batches by one io_submit() (when a batch fills, and in the loop's
 * prepare hook for the rest), so a burst of pipelined NBD requests
 * costs few system calls without holding the device idle.
 *
 * Work that Linux only offers as a blocking call (fallocate, and
 * fsync or FUA writes where the kernel refuses them through aio) runs
 * on a small pool of worker threads; its completion comes back through
 * the same eventfd.  Either way the op's done() callback always runs
 * on the loop thread and never from inside the submitting call.
 *
 * An op is caller-owned storage (embed it in the request) and must
 * stay alive until done() has run.  result is the byte count or 0 on
 * success, or a negative errno.
 */

struct ioq;
struct ioq_op;

typedef void (*ioq_done_fn) (struct ioq_op *op, ssize_t result);
typedef ssize_t (*ioq_work_fn) (struct ioq_op *op);

enum ioq_kind { IOQ_PREAD, IOQ_PWRITE, IOQ_FSYNC, IOQ_WORK };

struct ioq_op {
  /* Set by the caller before submitting. */
  ioq_done_fn done;
  void *opaque;
  /* Run reads and writes on a worker thread instead of libaio: for
   * files opened without O_DIRECT, where io_submit() would block. */
  bool use_thread;
  /* Private to ioq. */
  enum ioq_kind kind;
  int fd;
  void *buf;
  size_t count;
  uint64_t offset;
  int rw_flags;
  ioq_work_fn work;
  ssize_t result;
  struct list node;
  struct iocb iocb;
};

struct ioq *ioq_new (struct loop *loop, unsigned depth, unsigned threads);
void ioq_free (struct ioq *q);

void ioq_pread (struct ioq *q, struct ioq_op *op, int fd,
                void *buf, size_t count, uint64_t offset);
/* RW_FLAGS may be RWF_DSYNC for a FUA write. */
void ioq_pwrite (struct ioq *q, struct ioq_op *op, int fd,
                 const void *buf, size_t count, uint64_t offset,
                 int rw_flags);
/* fdatasync(2) semantics. */
void ioq_fsync (struct ioq *q, struct ioq_op *op, int fd);
/* Runs WORK on a worker thread; its return value is the result. */
void ioq_work (struct ioq *q, struct ioq_op *op, ioq_work_fn work);

struct loop *ioq_loop (const struct ioq *q);

/* Operations submitted and not yet completed. */
unsigned ioq_in_flight (const struct ioq *q);

#endif
