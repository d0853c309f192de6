/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/timerfd.h>

#include "error.h"
#include "log.h"
#include "loop.h"

#define MAX_EVENTS 64
#define MAX_PREPARE 8

/* A callback that keeps the loop this long is reported: nothing on the
 * loop may block, and a daemon that stands still must say where. */
#define STALL_NS 1000000000u

struct loop_source {
  struct loop *loop;
  int fd;
  bool owns_fd;                 /* timers: the loop closes the timerfd */
  bool dead;
  uint32_t events;
  loop_fd_cb fd_cb;
  loop_fn timer_cb;
  void *opaque;
  struct list zombie;
};

struct loop {
  int epfd;
  bool stop;
  struct list deferred;
  struct list zombies;          /* removed sources awaiting free */
  struct { int order; loop_fn cb; void *opaque; } prepare[MAX_PREPARE];
  unsigned nr_prepare;
};

uint64_t
loop_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

struct loop *
loop_new (void)
{
  struct loop *loop = calloc (1, sizeof *loop);

  if (loop == NULL) {
    error_set (errno, "calloc");
    return NULL;
  }
  loop->epfd = epoll_create1 (EPOLL_CLOEXEC);
  if (loop->epfd == -1) {
    error_set (errno, "epoll_create1");
    free (loop);
    return NULL;
  }
  list_init (&loop->deferred);
  list_init (&loop->zombies);
  return loop;
}

static void
reap_zombies (struct loop *loop)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &loop->zombies) {
    struct loop_source *src = list_entry (pos, struct loop_source, zombie);
    list_del (pos);
    if (src->owns_fd)
      close (src->fd);
    free (src);
  }
}

void
loop_free (struct loop *loop)
{
  if (loop == NULL)
    return;
  reap_zombies (loop);
  close (loop->epfd);
  free (loop);
}

struct loop_source *
loop_add_fd (struct loop *loop, int fd, uint32_t events,
             loop_fd_cb cb, void *opaque)
{
  struct loop_source *src = calloc (1, sizeof *src);
  struct epoll_event ev = { .events = events };

  if (src == NULL) {
    error_set (errno, "calloc");
    return NULL;
  }
  src->loop = loop;
  src->fd = fd;
  src->events = events;
  src->fd_cb = cb;
  src->opaque = opaque;
  list_init (&src->zombie);
  ev.data.ptr = src;
  if (epoll_ctl (loop->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
    error_set (errno, "epoll_ctl ADD fd %d", fd);
    free (src);
    return NULL;
  }
  return src;
}

int
loop_source_set_events (struct loop_source *src, uint32_t events)
{
  struct epoll_event ev = { .events = events, .data.ptr = src };

  if (src->dead || src->events == events)
    return 0;
  if (epoll_ctl (src->loop->epfd, EPOLL_CTL_MOD, src->fd, &ev) == -1)
    return error_set (errno, "epoll_ctl MOD fd %d", src->fd);
  src->events = events;
  return 0;
}

uint32_t
loop_source_events (const struct loop_source *src)
{
  return src->events;
}

void
loop_source_remove (struct loop_source *src)
{
  if (src == NULL || src->dead)
    return;
  src->dead = true;
  epoll_ctl (src->loop->epfd, EPOLL_CTL_DEL, src->fd, NULL);
  list_add_tail (&src->loop->zombies, &src->zombie);
}

static void
timer_fired (void *opaque, uint32_t events)
{
  struct loop_source *src = opaque;
  uint64_t expirations;

  if (read (src->fd, &expirations, sizeof expirations) != sizeof expirations)
    return;
  src->timer_cb (src->opaque);
}

struct loop_source *
loop_add_timer (struct loop *loop, unsigned first_ms, unsigned interval_ms,
                loop_fn cb, void *opaque)
{
  struct itimerspec its = {
    .it_value = { first_ms / 1000, (long) (first_ms % 1000) * 1000000 },
    .it_interval = { interval_ms / 1000, (long) (interval_ms % 1000) * 1000000 },
  };
  struct loop_source *src;
  int fd;

  if (first_ms == 0)
    its.it_value.tv_nsec = 1;   /* zero would disarm the timer */
  fd = timerfd_create (CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd == -1) {
    error_set (errno, "timerfd_create");
    return NULL;
  }
  if (timerfd_settime (fd, 0, &its, NULL) == -1) {
    error_set (errno, "timerfd_settime");
    close (fd);
    return NULL;
  }
  src = loop_add_fd (loop, fd, EPOLLIN, timer_fired, NULL);
  if (src == NULL) {
    close (fd);
    return NULL;
  }
  src->opaque = opaque;
  src->timer_cb = cb;
  src->owns_fd = true;
  return src;
}

int
loop_add_prepare (struct loop *loop, int order, loop_fn cb, void *opaque)
{
  unsigned i;

  if (loop->nr_prepare == MAX_PREPARE)
    return error_set (ENOSPC, "too many prepare hooks");
  /* Insertion keeps the array sorted by order. */
  for (i = loop->nr_prepare; i > 0 && loop->prepare[i - 1].order > order; i--)
    loop->prepare[i] = loop->prepare[i - 1];
  loop->prepare[i].order = order;
  loop->prepare[i].cb = cb;
  loop->prepare[i].opaque = opaque;
  loop->nr_prepare++;
  return 0;
}

void
loop_defer (struct loop *loop, struct loop_deferred *d,
            loop_fn cb, void *opaque)
{
  if (d->queued)
    return;
  d->cb = cb;
  d->opaque = opaque;
  d->queued = true;
  list_add_tail (&loop->deferred, &d->node);
}

void
loop_cancel_deferred (struct loop *loop, struct loop_deferred *d)
{
  if (d->queued) {
    list_del (&d->node);
    d->queued = false;
  }
}

/* The stall report's clock: a second's threshold needs no better than
 * the tick's resolution, and the coarse clock is read without the TSC,
 * which costs more than the rest of a small callback. */
static uint64_t
coarse_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Logs a callback that held the loop since START_NS for too long,
 * named as addr2line wants it (object and offset) when it has no
 * exported symbol. */
static void
check_stall (uint64_t start_ns, const char *kind, void *fn)
{
  uint64_t took = coarse_ns () - start_ns;
  Dl_info info;

  if (took < STALL_NS)
    return;
  if (dladdr (fn, &info) && info.dli_fname)
    log_warn ("event loop held for %" PRIu64 " ms by a %s callback: %s (%s+%#tx)",
              took / 1000000, kind, info.dli_sname ? info.dli_sname : "?",
              info.dli_fname, (char *) fn - (char *) info.dli_fbase);
  else
    log_warn ("event loop held for %" PRIu64 " ms by a %s callback at %p",
              took / 1000000, kind, fn);
}

static void
run_deferred (struct loop *loop)
{
  /* Callbacks may defer more work; it runs in this same pass. */
  while (!list_empty (&loop->deferred)) {
    struct loop_deferred *d =
      list_entry (loop->deferred.next, struct loop_deferred, node);
    uint64_t t0 = coarse_ns ();
    loop_fn cb = d->cb;         /* D may be freed by its callback */
    list_del (&d->node);
    d->queued = false;
    cb (d->opaque);
    check_stall (t0, "deferred", *(void **) &cb);
  }
}

static void
dispatch (struct epoll_event *ev)
{
  struct loop_source *src = ev->data.ptr;
  uint64_t t0;

  if (src->dead)
    return;
  t0 = coarse_ns ();
  if (src->timer_cb) {
    loop_fn cb = src->timer_cb;
    timer_fired (src, ev->events);
    check_stall (t0, "timer", *(void **) &cb);
  }
  else {
    loop_fd_cb cb = src->fd_cb;
    cb (src->opaque, ev->events);
    check_stall (t0, "file descriptor", *(void **) &cb);
  }
}

int
loop_run (struct loop *loop)
{
  struct epoll_event events[MAX_EVENTS];

  loop->stop = false;
  while (!loop->stop) {
    unsigned i;
    int n;

    /* Deferred work may queue I/O that a prepare hook submits, and a
     * prepare hook may defer work: settle both before sleeping. */
    do {
      run_deferred (loop);
      for (i = 0; i < loop->nr_prepare; i++) {
        uint64_t t0 = coarse_ns ();
        loop_fn cb = loop->prepare[i].cb;
        cb (loop->prepare[i].opaque);
        check_stall (t0, "prepare", *(void **) &cb);
      }
    } while (!list_empty (&loop->deferred));
    if (loop->stop)
      break;
    n = epoll_wait (loop->epfd, events, MAX_EVENTS, -1);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      return error_set (errno, "epoll_wait");
    }
    for (i = 0; i < (unsigned) n; i++)
      dispatch (&events[i]);
    reap_zombies (loop);
  }
  return 0;
}

void
loop_stop (struct loop *loop)
{
  loop->stop = true;
}
