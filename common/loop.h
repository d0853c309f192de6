/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_LOOP_H
#define MIRRORD_COMMON_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "list.h"

/* The event loop: one epoll instance driven by one thread.
 *
 * Everything in the daemon that is not a blocking system call runs on
 * this thread: sockets, libaio completions, timers, the control API.
 * Blocking work is handed to ioq's worker threads, whose completions
 * come back here.  Nothing in a callback may block.
 *
 * Sources are owned by the loop.  loop_source_remove() may be called
 * from any callback, including the source's own: the source stops
 * receiving events at once and is freed after the current dispatch
 * round, so a pending event for it is never delivered to freed memory.
 */

struct loop;
struct loop_source;

typedef void (*loop_fd_cb) (void *opaque, uint32_t events);
typedef void (*loop_fn) (void *opaque);

struct loop *loop_new (void);
void loop_free (struct loop *loop);

/* Watches FD for EVENTS (EPOLLIN, EPOLLOUT, ...).  Returns NULL with
 * error_set() on failure. */
struct loop_source *loop_add_fd (struct loop *loop, int fd, uint32_t events,
                                 loop_fd_cb cb, void *opaque);
int loop_source_set_events (struct loop_source *src, uint32_t events);
uint32_t loop_source_events (const struct loop_source *src);
void loop_source_remove (struct loop_source *src);

/* A timer calling CB every INTERVAL_MS (once if INTERVAL_MS is 0)
 * after FIRST_MS.  Remove it with loop_source_remove(). */
struct loop_source *loop_add_timer (struct loop *loop, unsigned first_ms,
                                    unsigned interval_ms, loop_fn cb,
                                    void *opaque);

/* A function run before every wait for events, for batching: the
 * libaio submission queue and socket output are flushed here.  Hooks
 * run in increasing ORDER: replies go out (LOOP_PREPARE_OUTPUT) before
 * new I/O is submitted (LOOP_PREPARE_SUBMIT), because io_submit() can
 * take tens of microseconds that a waiting client should not pay. */
enum { LOOP_PREPARE_OUTPUT = 0, LOOP_PREPARE_SUBMIT = 10 };
int loop_add_prepare (struct loop *loop, int order, loop_fn cb, void *opaque);

/* Calls CB once, from the loop, before it next waits.  D is
 * caller-owned storage that must live until CB runs. */
struct loop_deferred {
  struct list node;
  loop_fn cb;
  void *opaque;
  bool queued;
};
void loop_defer (struct loop *loop, struct loop_deferred *d,
                 loop_fn cb, void *opaque);
/* Takes D back if it has not run yet. */
void loop_cancel_deferred (struct loop *loop, struct loop_deferred *d);

/* Runs until loop_stop().  Returns 0, or -1 on an epoll failure. */
int loop_run (struct loop *loop);
void loop_stop (struct loop *loop);

/* Monotonic time in nanoseconds. */
uint64_t loop_now_ns (void);

#endif
