/* SPDX-License-Identifier: MIT */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/error.h"
#include "daemon.h"

/* In the parent: waits for the daemon's word and exits with it. */
static void
parent_wait (int fd, pid_t child)
{
  char buf[1024];
  ssize_t n = 0, r;

  while ((r = read (fd, buf + n, sizeof buf - 1 - (size_t) n)) > 0)
    n += r;
  buf[n] = '\0';
  if (n == 0) {
    int st;
    waitpid (child, &st, 0);
    fprintf (stderr, "mirrord: the daemon died during start-up\n");
    _exit (1);
  }
  if (buf[0] != '0')
    fprintf (stderr, "mirrord: %s\n", buf + 1);
  _exit (buf[0] - '0');
}

int
daemon_fork (void)
{
  int p[2], devnull;
  pid_t pid;

  if (pipe2 (p, O_CLOEXEC) == -1)
    return error_set (errno, "pipe");
  pid = fork ();
  if (pid == -1)
    return error_set (errno, "fork");
  if (pid > 0) {
    close (p[1]);
    parent_wait (p[0], pid);
  }
  close (p[0]);
  if (setsid () == -1)
    return error_set (errno, "setsid");
  pid = fork ();                /* never reacquire a terminal */
  if (pid == -1)
    return error_set (errno, "fork");
  if (pid > 0)
    _exit (0);
  if (chdir ("/") == -1)
    return error_set (errno, "chdir /");
  devnull = open ("/dev/null", O_RDWR);
  if (devnull >= 0) {
    dup2 (devnull, 0);
    dup2 (devnull, 1);
    dup2 (devnull, 2);
    if (devnull > 2)
      close (devnull);
  }
  return p[1];
}

void
daemon_ready (int fd, int status, const char *msg)
{
  char buf[1024];
  int n;

  if (fd < 0)
    return;
  n = snprintf (buf, sizeof buf, "%d%s", status, msg ? msg : "");
  if (n > 0 && write (fd, buf, (size_t) n) < 0)
    buf[0] = '\0';              /* the parent is gone: nothing to do */
  close (fd);
}

int
daemon_mkdir_p (const char *dir, unsigned mode)
{
  char path[4096];
  size_t len = strlen (dir);

  if (len == 0 || len >= sizeof path)
    return error_set (ENAMETOOLONG, "directory '%s'", dir);
  memcpy (path, dir, len + 1);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir (path, 0755) == -1 && errno != EEXIST)
      return error_set (errno, "mkdir %s", path);
    *p = '/';
  }
  if (mkdir (path, (mode_t) mode) == -1 && errno != EEXIST)
    return error_set (errno, "mkdir %s", path);
  return 0;
}

int
daemon_mkdir_parent (const char *path)
{
  char dir[4096];
  const char *slash = strrchr (path, '/');

  if (slash == NULL || slash == path)
    return 0;
  if ((size_t) (slash - path) >= sizeof dir)
    return error_set (ENAMETOOLONG, "%s", path);
  memcpy (dir, path, (size_t) (slash - path));
  dir[slash - path] = '\0';
  return daemon_mkdir_p (dir, 0755);
}

int
daemon_write_pid (const char *path)
{
  FILE *fp = fopen (path, "w");

  if (fp == NULL)
    return error_set (errno, "%s", path);
  fprintf (fp, "%ld\n", (long) getpid ());
  if (fclose (fp) == EOF)
    return error_set (errno, "%s", path);
  return 0;
}
