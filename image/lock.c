/* SPDX-License-Identifier: MIT */
/* QEMU-compatible image locks (lock.h has the design). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/log.h"
#include "lock.h"

#define PERM_BYTE 100           /* + P: somebody holds P */
#define SHARED_BYTE 200         /* + P: somebody does not share P */
#define NR_PERMS 4

static struct list own = LIST_INIT (own);

static const char *const perm_names[NR_PERMS] = {
  "consistent read", "write", "write unchanged", "resize",
};

void
image_lock_perms (bool readonly, bool grows, unsigned *perm,
                  unsigned *unshared)
{
  *perm = IMAGE_PERM_CONSISTENT_READ;
  if (!readonly)
    *perm |= IMAGE_PERM_WRITE | (grows ? IMAGE_PERM_RESIZE : 0u);
  /* Another writer's data would bypass the dirty bitmap and the
   * mirror; the size (and the bitmap's) is fixed at open. */
  *unshared = IMAGE_PERM_WRITE | IMAGE_PERM_RESIZE;
}

static int
lock_byte (int fd, short type, off_t byte)
{
  struct flock fl = {
    .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1,
  };

  return fcntl (fd, F_OFD_SETLK, &fl);
}

/* 1 if another open file description locks BYTE, 0 if none, -1. */
static int
byte_taken (int fd, off_t byte)
{
  struct flock fl = {
    .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1,
  };

  if (fcntl (fd, F_OFD_GETLK, &fl) == -1)
    return -1;
  return fl.l_type != F_UNLCK;
}

static void
unlock_all (int fd)
{
  struct flock fl = {
    .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = PERM_BYTE,
    .l_len = SHARED_BYTE + NR_PERMS - PERM_BYTE,
  };

  fcntl (fd, F_OFD_SETLK, &fl);
}

static int
take (int fd, unsigned perm, unsigned unshared)
{
  for (int p = 0; p < NR_PERMS; p++) {
    if ((perm & (1u << p)) && lock_byte (fd, F_RDLCK, PERM_BYTE + p) == -1)
      return -1;
    if ((unshared & (1u << p)) && lock_byte (fd, F_RDLCK, SHARED_BYTE + p) == -1)
      return -1;
  }
  return 0;
}

/* Is one of BASE + P, for the P in MASK, locked by another open file
 * description?  1 (*P says which), 0 none, -1. */
static int
first_taken (int fd, unsigned mask, off_t base, int *p)
{
  for (*p = 0; *p < NR_PERMS; (*p)++) {
    int r = (mask & (1u << *p)) ? byte_taken (fd, base + *p) : 0;
    if (r != 0)
      return r;
  }
  return 0;
}

/* Does one of our own locks on the file conflict with PERM/UNSHARED? */
static bool
own_conflict (dev_t dev, ino_t ino, unsigned perm, unsigned unshared)
{
  struct list *pos, *tmp;

  list_for_each_safe (pos, tmp, &own) {
    struct image_lock *o = list_entry (pos, struct image_lock, node);
    if (o->dev == dev && o->ino == ino
        && ((o->unshared & perm) || (o->perm & unshared)))
      return true;
  }
  return false;
}

/* With EBUSY: "...: Device or resource busy". */
static int
conflict_error (const struct image_lock *l, const char *path, int p,
                bool held)
{
  if (own_conflict (l->dev, l->ino, l->perm, l->unshared))
    return error_set (EBUSY, "%s: image already in use by this mirrord "
                      "(another export, a backing file of one, or a removed "
                      "export still finishing its clients' requests)", path);
  return error_set (EBUSY, "%s: image locked by another process (QEMU or "
                    "another mirrord?), which %s \"%s\" access", path,
                    held ? "does not share" : "has", perm_names[p]);
}

/* A file system without byte-range locks: serve as before, with a
 * warning at each open. */
static bool
cannot_lock (int err, const char *path)
{
  if (err != EINVAL && err != ENOLCK && err != EOPNOTSUPP && err != ENOSYS)
    return false;
  log_warn ("%s: the file system cannot lock the image (%s); serving it "
            "without QEMU-compatible image locking", path, strerror (err));
  return true;
}

/* Locking failed with errno ERR (not a conflict we tested for). */
static int
lock_failed (struct image_lock *l, const char *path, int err)
{
  unlock_all (l->fd);
  if (err == EAGAIN || err == EACCES)   /* somebody's write lock */
    return error_set (EBUSY, "%s: image locked by another process", path);
  if (cannot_lock (err, path))
    return 0;
  return error_set (err, "%s: locking the image", path);
}

int
image_lock_acquire (struct image_lock *l, int fd, const char *path,
                    unsigned perm, unsigned unshared)
{
  struct stat st;
  bool held = true;
  int p, r;

  memset (l, 0, sizeof *l);
  if (fstat (fd, &st) == -1)
    return error_set (errno, "%s: fstat", path);
  l->fd = fd;
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  l->perm = perm & IMAGE_PERM_ALL;
  l->unshared = unshared & IMAGE_PERM_ALL;
  /* Take first, then test (lock.h): QEMU's order of tests. */
  if (take (fd, l->perm, l->unshared) == -1)
    return lock_failed (l, path, errno);
  r = first_taken (fd, l->perm, SHARED_BYTE, &p);
  if (r == 0) {
    held = false;
    r = first_taken (fd, l->unshared, PERM_BYTE, &p);
  }
  if (r == -1)
    return lock_failed (l, path, errno);
  if (r == 1) {
    unlock_all (fd);
    return conflict_error (l, path, p, held);
  }
  l->held = true;
  list_add_tail (&own, &l->node);
  return 0;
}

void
image_lock_release (struct image_lock *l)
{
  if (!l->held)
    return;
  unlock_all (l->fd);
  list_del (&l->node);
  l->held = false;
}
