/* SPDX-License-Identifier: MIT */
/* libnbd's TLS handshake, off the event loop (tls-worker.h).
 *
 * A job is one nbd_aio_notify_*() call on one handle, made by a
 * detached thread.  The loop thread keeps the jobs it started on a list
 * (only it touches the list); the worker reports back through a pipe
 * the loop watches, writing the job's address.  A job's owner that
 * gives up on its handle (tls_worker_close) while the worker runs
 * shuts the socket down and leaves the handle to whoever of the two
 * finishes last: the worker (not reported yet) or the pipe's reader
 * (reported).  JOB->MU orders that hand-over.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "common/log.h"
#include "tls-worker.h"

struct job {
  struct nbd_handle *h;
  int fd;                       /* a dup of H's socket: libnbd may close
                                   its own while the worker runs */
  uint32_t events;
  loop_fd_cb cb;
  void *opaque;
  int r, err;
  char msg[512];
  pthread_mutex_t mu;
  bool reported;                /* the worker wrote it to the pipe */
  bool abandoned;               /* the owner let go: close H, no CB */
  struct job *next;
};

static struct {
  int rfd, wfd;
  struct loop_source *src;
  struct job *running;          /* started, not delivered (loop only) */
  struct job *delivering;       /* its CB is running */
} w = { .rfd = -1, .wfd = -1 };

static struct job *
find (struct nbd_handle *h)
{
  for (struct job *j = w.running; j; j = j->next)
    if (j->h == h)
      return j;
  return NULL;
}

static void
unlink_job (struct job *j)
{
  for (struct job **p = &w.running; *p; p = &(*p)->next)
    if (*p == j) {
      *p = j->next;
      return;
    }
}

static void
job_free (struct job *j)
{
  if (j->abandoned)
    nbd_close (j->h);
  close (j->fd);
  pthread_mutex_destroy (&j->mu);
  free (j);
}

static bool before_tls (struct nbd_handle *h);

static int
notify (struct nbd_handle *h, uint32_t events)
{
  int r = 0;

  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
    r = nbd_aio_notify_read (h);
  if (r == 0 && (events & EPOLLOUT))
    r = nbd_aio_notify_write (h);
  return r;
}

/* Until its TLS handshake is over, the handle is the worker's: it waits
 * for the socket itself and notifies libnbd, so that a server that
 * answers quickly cannot take a later call on the loop into the
 * handshake either. */
static int
drive (struct nbd_handle *h, int fd, uint32_t events)
{
  int r = notify (h, events);

  while (r == 0 && before_tls (h)) {
    unsigned dir = nbd_aio_get_direction (h);
    struct pollfd p = { .fd = fd };

    if (dir & LIBNBD_AIO_DIRECTION_READ)
      p.events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE)
      p.events |= POLLOUT;
    /* No timeout: an owner that gives up shuts the socket down. */
    if (poll (&p, 1, -1) == -1) {
      if (errno == EINTR)
        continue;
      break;
    }
    r = notify (h, (p.revents & (POLLIN | POLLHUP | POLLERR) ? EPOLLIN : 0)
                | (p.revents & POLLOUT ? EPOLLOUT : 0));
  }
  return r;
}

static void *
work (void *opaque)
{
  struct job *j = opaque;
  bool mine;

  j->r = drive (j->h, j->fd, j->events);
  if (j->r == -1) {
    const char *e = nbd_get_error ();   /* thread-local: read it here */
    snprintf (j->msg, sizeof j->msg, "%s", e ? e : "connection lost");
    j->err = nbd_get_errno ();
  }
  pthread_mutex_lock (&j->mu);
  mine = j->abandoned;
  j->reported = !mine;
  pthread_mutex_unlock (&j->mu);
  if (mine)
    job_free (j);
  else {
    /* A pointer is under PIPE_BUF: the write is atomic. */
    while (write (w.wfd, &j, sizeof j) == -1 && errno == EINTR)
      ;
  }
  return NULL;
}

/* The pipe's reader, on the loop: each finished job's owner is called
 * back, and its next call on the handle returns the worker's result. */
static void
on_reported (void *opaque, uint32_t events)
{
  struct job *j;

  (void) opaque;
  (void) events;
  while (read (w.rfd, &j, sizeof j) == (ssize_t) sizeof j) {
    pthread_mutex_lock (&j->mu);
    pthread_mutex_unlock (&j->mu);      /* the worker is done with it */
    if (!j->abandoned) {
      unlink_job (j);
      w.delivering = j;
      j->cb (j->opaque, 0);
      w.delivering = NULL;
    }
    job_free (j);
  }
}

static int
ensure_pipe (struct loop *loop)
{
  int p[2];

  if (w.src)
    return 0;
  if (pipe2 (p, O_CLOEXEC) == -1)
    return -1;
  /* The reader must not block the loop; the writers (workers) may. */
  fcntl (p[0], F_SETFL, O_NONBLOCK);
  w.src = loop_add_fd (loop, p[0], EPOLLIN, on_reported, NULL);
  if (w.src == NULL) {
    close (p[0]);
    close (p[1]);
    return -1;
  }
  w.rfd = p[0];
  w.wfd = p[1];
  return 0;
}

/* A TLS handle that has not finished its handshake: any notify may
 * enter it, if the server's answers are already in. */
static bool
before_tls (struct nbd_handle *h)
{
  static const char *const before[] = {
    "START", "CONNECT", "MAGIC.", "NEWSTYLE.START", "NEWSTYLE.RECV_GFLAGS",
    "NEWSTYLE.CHECK_GFLAGS", "NEWSTYLE.SEND_CFLAGS", "NEWSTYLE.OPT_STARTTLS.",
  };
  const char *s;

  if (nbd_get_tls (h) == LIBNBD_TLS_DISABLE || nbd_aio_is_connecting (h) != 1)
    return false;
  s = nbd_connection_state (h);
  for (size_t i = 0; s && i < sizeof before / sizeof before[0]; i++)
    if (strncmp (s, before[i], strlen (before[i])) == 0)
      return true;
  return false;
}

static int
start (struct loop *loop, struct nbd_handle *h, uint32_t events,
       loop_fd_cb cb, void *opaque)
{
  int fd = nbd_aio_get_fd (h);  /* open: H is alive, and still ours */
  struct job *j = calloc (1, sizeof *j);
  pthread_attr_t attr;
  pthread_t th;
  int r;

  if (j == NULL || fd == -1 || ensure_pipe (loop) == -1) {
    free (j);
    return -1;
  }
  *j = (struct job) { .h = h, .fd = fcntl (fd, F_DUPFD_CLOEXEC, 0),
                      .events = events, .cb = cb, .opaque = opaque,
                      .next = w.running };
  if (j->fd == -1) {
    free (j);
    return -1;
  }
  pthread_mutex_init (&j->mu, NULL);
  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  r = pthread_create (&th, &attr, work, j);
  pthread_attr_destroy (&attr);
  if (r != 0) {
    job_free (j);
    errno = r;
    return -1;
  }
  w.running = j;
  return 0;
}

int
tls_worker_notify (struct loop *loop, struct nbd_handle *h, uint32_t events,
                   loop_fd_cb cb, void *opaque)
{
  if (w.delivering && w.delivering->h == h)
    return w.delivering->r;
  if (find (h))
    return 1;
  if (events == 0)
    return 0;
  if (before_tls (h)) {
    if (start (loop, h, events, cb, opaque) == 0)
      return 1;
    /* No thread: the handshake spins here, as it always did. */
    log_ratelimit (LOG_WARNING, "cannot start a TLS handshake worker (%s): "
                   "handshaking on the event loop", strerror (errno));
  }
  return notify (h, events);
}

void
tls_worker_abort (struct nbd_handle *h)
{
  struct job *j = find (h);

  /* Its recv() sees end of file: the handshake fails at once. */
  if (j)
    shutdown (j->fd, SHUT_RDWR);
}

bool
tls_worker_busy (struct nbd_handle *h)
{
  return find (h) != NULL;
}

const char *
tls_worker_error (struct nbd_handle *h)
{
  if (w.delivering && w.delivering->h == h)
    return w.delivering->msg;
  return nbd_get_error ();
}

int
tls_worker_errno (struct nbd_handle *h)
{
  if (w.delivering && w.delivering->h == h)
    return w.delivering->err;
  return nbd_get_errno ();
}

void
tls_worker_close (struct nbd_handle *h)
{
  struct job *j = find (h);

  if (j == NULL) {
    if (h)
      nbd_close (h);
    return;
  }
  tls_worker_abort (h);
  unlink_job (j);
  /* Reported already: the pipe's reader frees it; else the worker. */
  pthread_mutex_lock (&j->mu);
  j->abandoned = true;
  pthread_mutex_unlock (&j->mu);
}
