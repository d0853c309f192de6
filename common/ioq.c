/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/uio.h>

#include "error.h"
#include "ioq.h"
#include "log.h"

#define MAX_BATCH 128
/* Queued aio ops are submitted at the end of the loop iteration, or as
 * soon as this many wait.  Waiting for the whole iteration makes
 * convoys: the device idles while a burst of 32 completes and goes back
 * to the client.  Measured on 4k QD32 (medians of 6 alternating runs):
 * batch 8 gave +27% random write and +10% random read over 128, and
 * +22% write over submitting each op alone. */
#define SUBMIT_BATCH 8

struct ioq {
  struct loop *loop;
  io_context_t ctx;
  unsigned depth;               /* io_setup() size */
  unsigned submitted;           /* in the kernel */
  unsigned in_flight;           /* submitted anywhere, not yet done */
  int efd;
  struct loop_source *src;
  struct list pending;          /* aio ops waiting for io_submit */
  unsigned nr_pending;
  unsigned batch;               /* submit as soon as this many wait */
  /* Kernel features found missing at run time, then routed to threads. */
  bool no_aio_fsync;
  bool no_aio_rwflags;

  /* Worker threads. */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct list work;             /* queued for a worker */
  struct list finished;         /* done by a worker, not yet reported */
  pthread_t *threads;
  unsigned nr_threads;
  unsigned idle;                /* workers waiting for work */
  bool quit;
};

static void
complete (struct ioq *q, struct ioq_op *op, ssize_t result)
{
  q->in_flight--;
  op->done (op, result);
}

/* Runs an op synchronously on a worker thread. */
static ssize_t
run_blocking (struct ioq_op *op)
{
  ssize_t r;

  switch (op->kind) {
  case IOQ_PREAD:
    r = pread (op->fd, op->buf, op->count, (off_t) op->offset);
    break;
  case IOQ_PWRITE: {
    struct iovec iov = { op->buf, op->count };
    r = pwritev2 (op->fd, &iov, 1, (off_t) op->offset, op->rw_flags);
    if (r == -1 && errno == EOPNOTSUPP && op->rw_flags) {
      r = pwrite (op->fd, op->buf, op->count, (off_t) op->offset);
      if (r >= 0 && fdatasync (op->fd) == -1)
        r = -1;
    }
    break;
  }
  case IOQ_FSYNC:
    r = fdatasync (op->fd);
    break;
  case IOQ_WORK:
    return op->work (op);
  default:
    errno = EINVAL;
    r = -1;
  }
  return r == -1 ? -errno : r;
}

static void *
worker (void *arg)
{
  struct ioq *q = arg;
  static const uint64_t one = 1;

  pthread_mutex_lock (&q->lock);
  for (;;) {
    while (!q->quit && list_empty (&q->work)) {
      q->idle++;
      pthread_cond_wait (&q->cond, &q->lock);
      q->idle--;
    }
    if (q->quit && list_empty (&q->work))
      break;
    struct ioq_op *op = list_entry (q->work.next, struct ioq_op, node);
    list_del (&op->node);
    pthread_mutex_unlock (&q->lock);

    op->result = run_blocking (op);

    pthread_mutex_lock (&q->lock);
    /* One wake-up per batch: the loop takes the whole list at once. */
    bool wake = list_empty (&q->finished);
    list_add_tail (&q->finished, &op->node);
    if (wake && write (q->efd, &one, sizeof one) != sizeof one)
      log_err ("ioq: eventfd write failed");
  }
  pthread_mutex_unlock (&q->lock);
  return NULL;
}

static void
to_thread (struct ioq *q, struct ioq_op *op)
{
  pthread_mutex_lock (&q->lock);
  list_add_tail (&q->work, &op->node);
  if (q->idle > 0)              /* busy workers pick it up anyway */
    pthread_cond_signal (&q->cond);
  pthread_mutex_unlock (&q->lock);
}

static void
reap_threads (struct ioq *q)
{
  struct list done;
  struct list *pos, *tmp;

  list_init (&done);
  pthread_mutex_lock (&q->lock);
  if (!list_empty (&q->finished)) {
    /* Move the whole list in O(1). */
    done.next = q->finished.next;
    done.prev = q->finished.prev;
    done.next->prev = &done;
    done.prev->next = &done;
    list_init (&q->finished);
  }
  pthread_mutex_unlock (&q->lock);

  list_for_each_safe (pos, tmp, &done) {
    struct ioq_op *op = list_entry (pos, struct ioq_op, node);
    list_del (pos);
    complete (q, op, op->result);
  }
}

static void
reap_aio (struct ioq *q)
{
  struct io_event events[MAX_BATCH];
  struct timespec zero = { 0, 0 };
  int n, i;

  do {
    n = io_getevents (q->ctx, 0, MAX_BATCH, events, &zero);
    if (n < 0) {
      if (n == -EINTR)
        continue;
      log_err ("ioq: io_getevents: %s", strerror (-n));
      return;
    }
    q->submitted -= (unsigned) n;
    for (i = 0; i < n; i++) {
      struct ioq_op *op = events[i].data;
      /* res is the byte count or a negative errno, in a long. */
      complete (q, op, (ssize_t) (long) events[i].res);
    }
  } while (n == MAX_BATCH);
}

static void
eventfd_ready (void *opaque, uint32_t events)
{
  struct ioq *q = opaque;
  uint64_t count;

  if (read (q->efd, &count, sizeof count) == -1 && errno != EAGAIN)
    log_err ("ioq: eventfd read: %m");
  reap_aio (q);
  reap_threads (q);
}

static void
prep_iocb (struct ioq *q, struct ioq_op *op)
{
  struct iocb *cb = &op->iocb;

  switch (op->kind) {
  case IOQ_PREAD:
    io_prep_pread (cb, op->fd, op->buf, op->count, (long long) op->offset);
    break;
  case IOQ_PWRITE:
    io_prep_pwrite (cb, op->fd, op->buf, op->count, (long long) op->offset);
    cb->aio_rw_flags = op->rw_flags;
    break;
  default:
    io_prep_fdsync (cb, op->fd);
    break;
  }
  io_set_eventfd (cb, q->efd);
  cb->data = op;
}

/* The kernel refused the first iocb of a batch: find out whether it is
 * a missing feature we can route around, or a real error. */
static void
submit_refused (struct ioq *q, struct ioq_op *op, int err)
{
  list_del (&op->node);
  q->nr_pending--;
  if (err == EINVAL && op->kind == IOQ_FSYNC && !q->no_aio_fsync) {
    log_info ("ioq: kernel refuses aio fdsync; using worker threads");
    q->no_aio_fsync = true;
    to_thread (q, op);
  }
  else if (err == EINVAL && op->kind == IOQ_PWRITE && op->rw_flags
           && !q->no_aio_rwflags) {
    log_info ("ioq: kernel refuses aio RWF_DSYNC; using worker threads");
    q->no_aio_rwflags = true;
    to_thread (q, op);
  }
  else if (op->kind == IOQ_FSYNC || (op->kind == IOQ_PWRITE && op->rw_flags))
    to_thread (q, op);
  else {
    /* Report it from the loop, never from inside the submitter. */
    op->result = -err;
    pthread_mutex_lock (&q->lock);
    list_add_tail (&q->finished, &op->node);
    pthread_mutex_unlock (&q->lock);
    static const uint64_t one = 1;
    if (write (q->efd, &one, sizeof one) != sizeof one)
      log_err ("ioq: eventfd write failed");
  }
}

static void
flush_pending (void *opaque)
{
  struct ioq *q = opaque;
  struct iocb *cbs[MAX_BATCH];

  while (!list_empty (&q->pending) && q->submitted < q->depth) {
    struct list *pos = q->pending.next;
    unsigned n = 0, room = q->depth - q->submitted;
    int r;

    for (; pos != &q->pending && n < MAX_BATCH && n < room; pos = pos->next) {
      struct ioq_op *op = list_entry (pos, struct ioq_op, node);
      prep_iocb (q, op);
      cbs[n++] = &op->iocb;
    }
    r = io_submit (q->ctx, (long) n, cbs);
    if (r == -EAGAIN)
      return;                   /* retried after the next completion */
    if (r < 0) {
      submit_refused (q, cbs[0]->data, -r);
      continue;
    }
    for (int i = 0; i < r; i++)
      list_del (&((struct ioq_op *) cbs[i]->data)->node);
    q->nr_pending -= (unsigned) r;
    q->submitted += (unsigned) r;
  }
}

static void
enqueue (struct ioq *q, struct ioq_op *op)
{
  q->in_flight++;
  if ((op->kind == IOQ_FSYNC && q->no_aio_fsync)
      || (op->kind == IOQ_PWRITE && op->rw_flags && q->no_aio_rwflags)
      || op->kind == IOQ_WORK || op->use_thread)
    to_thread (q, op);
  else {
    list_add_tail (&q->pending, &op->node);
    if (++q->nr_pending >= q->batch)
      flush_pending (q);
  }
}

void
ioq_pread (struct ioq *q, struct ioq_op *op, int fd,
           void *buf, size_t count, uint64_t offset)
{
  op->kind = IOQ_PREAD;
  op->fd = fd;
  op->buf = buf;
  op->count = count;
  op->offset = offset;
  op->rw_flags = 0;
  enqueue (q, op);
}

void
ioq_pwrite (struct ioq *q, struct ioq_op *op, int fd,
            const void *buf, size_t count, uint64_t offset, int rw_flags)
{
  op->kind = IOQ_PWRITE;
  op->fd = fd;
  op->buf = (void *) buf;
  op->count = count;
  op->offset = offset;
  op->rw_flags = rw_flags;
  enqueue (q, op);
}

void
ioq_fsync (struct ioq *q, struct ioq_op *op, int fd)
{
  op->kind = IOQ_FSYNC;
  op->fd = fd;
  op->rw_flags = 0;
  enqueue (q, op);
}

void
ioq_work (struct ioq *q, struct ioq_op *op, ioq_work_fn work)
{
  op->kind = IOQ_WORK;
  op->work = work;
  enqueue (q, op);
}

struct loop *
ioq_loop (const struct ioq *q)
{
  return q->loop;
}

unsigned
ioq_in_flight (const struct ioq *q)
{
  return q->in_flight;
}

static int
start_threads (struct ioq *q, unsigned threads)
{
  q->threads = calloc (threads, sizeof *q->threads);
  if (q->threads == NULL)
    return error_set (errno, "calloc");
  for (; q->nr_threads < threads; q->nr_threads++) {
    int r = pthread_create (&q->threads[q->nr_threads], NULL, worker, q);
    if (r != 0)
      return error_set (r, "pthread_create");
  }
  return 0;
}

struct ioq *
ioq_new (struct loop *loop, unsigned depth, unsigned threads)
{
  struct ioq *q = calloc (1, sizeof *q);
  int r;

  if (q == NULL) {
    error_set (errno, "calloc");
    return NULL;
  }
  q->loop = loop;
  q->depth = depth;
  q->efd = -1;
  q->batch = SUBMIT_BATCH;
  list_init (&q->pending);
  list_init (&q->work);
  list_init (&q->finished);
  pthread_mutex_init (&q->lock, NULL);
  pthread_cond_init (&q->cond, NULL);

  r = io_setup ((int) depth, &q->ctx);
  if (r < 0) {
    error_set (-r, "io_setup(%u) (raise /proc/sys/fs/aio-max-nr?)", depth);
    goto err;
  }
  q->efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (q->efd == -1) {
    error_set (errno, "eventfd");
    goto err;
  }
  q->src = loop_add_fd (loop, q->efd, EPOLLIN, eventfd_ready, q);
  if (q->src == NULL || loop_add_prepare (loop, LOOP_PREPARE_SUBMIT, flush_pending, q) == -1)
    goto err;
  if (start_threads (q, threads) == -1)
    goto err;
  return q;

 err:
  ioq_free (q);
  return NULL;
}

void
ioq_free (struct ioq *q)
{
  if (q == NULL)
    return;
  pthread_mutex_lock (&q->lock);
  q->quit = true;
  pthread_cond_broadcast (&q->cond);
  pthread_mutex_unlock (&q->lock);
  for (unsigned i = 0; i < q->nr_threads; i++)
    pthread_join (q->threads[i], NULL);
  free (q->threads);
  if (q->ctx)
    io_destroy (q->ctx);
  loop_source_remove (q->src);
  if (q->efd >= 0)
    close (q->efd);
  pthread_mutex_destroy (&q->lock);
  pthread_cond_destroy (&q->cond);
  free (q);
}
