/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_IMAGE_LOCK_H
#define MIRRORD_IMAGE_LOCK_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/list.h"

/* Image locking that QEMU understands: one image, one writer.
 *
 * QEMU's file driver (file-posix, "locking=auto") marks what an open
 * image may do with open file description (OFD) byte-range locks,
 * F_RDLCK on single bytes of the image file:
 *
 *   byte 100 + P   held by every user that holds permission P;
 *   byte 200 + P   held by every user that does not share P with others.
 *
 * P is 0 "consistent read", 1 "write", 2 "write unchanged", 3 "resize"
 * (QEMU's BLK_PERM_* bits).  Read locks never conflict with each
 * other, so several users can mark the same byte; a user that wants P
 * first takes its own bytes, then tests with F_OFD_GETLK whether any
 * other open file description holds byte 200 + P (somebody refuses to
 * share P), and, for each P it does not share, byte 100 + P (somebody
 * has P).  Either is a conflict: QEMU says 'Failed to get "write"
 * lock', we refuse the open with EBUSY.  Taking before testing closes
 * the race between two users opening at once: both see each other and
 * both give up.
 *
 * What mirrord takes (image_lock_perms()), the same bytes as a QEMU
 * guest disk (virtio-blk) on the same image:
 *
 *   writable raw      holds read+write,         shares neither write nor resize
 *   writable qcow2    holds read+write+resize   (the file grows), the same
 *   read-only, and    holds read,               shares neither write nor resize
 *   backing files
 *
 * So qemu-io, qemu-img and qemu-nbd cannot open an image mirrord
 * serves for writing; readers can (qcow2 readers need -U, "force
 * share", because QEMU's qcow2 driver does not share write itself);
 * and mirrord refuses an image QEMU or another mirrord writes.
 *
 * OFD locks, not POSIX ones: a POSIX lock belongs to the process and
 * goes away when the process closes any descriptor of the file (the
 * format probe, the qcow2 metadata descriptor); an OFD lock stays with
 * the descriptor that took it.  The flip side: two opens in one
 * process conflict like two processes, so this module remembers its
 * own locks to say "in use by this mirrord" rather than blame another
 * process.  Opens and closes run on the loop thread only.
 *
 * A file system that cannot lock (EINVAL, ENOLCK, EOPNOTSUPP) gets a
 * warning and the image is served unlocked, as before.
 */

enum image_perm {
  IMAGE_PERM_CONSISTENT_READ = 1u << 0,
  IMAGE_PERM_WRITE = 1u << 1,
  IMAGE_PERM_WRITE_UNCHANGED = 1u << 2,
  IMAGE_PERM_RESIZE = 1u << 3,
  IMAGE_PERM_ALL = (1u << 4) - 1,
};

struct image_lock {
  bool held;
  int fd;
  dev_t dev;
  ino_t ino;
  unsigned perm;                /* permissions held */
  unsigned unshared;            /* permissions others may not have */
  struct list node;             /* this process's locks */
};

/* The permissions an image opened READONLY (or not) holds and does not
 * share; GROWS: the file is extended as it is written (qcow2). */
void image_lock_perms (bool readonly, bool grows, unsigned *perm,
                       unsigned *unshared);

/* Locks FD, open on PATH, for holding PERM and not sharing UNSHARED.
 * Returns 0 (L holds the locks, or the file system cannot lock: L
 * holds nothing), or -1 with error_set() — EBUSY when another user's
 * locks conflict — and nothing left locked. */
int image_lock_acquire (struct image_lock *l, int fd, const char *path,
                        unsigned perm, unsigned unshared);
/* Drops L's locks; call before closing its descriptor.  Does nothing
 * when L holds none (zeroed, failed, or the file system cannot lock). */
void image_lock_release (struct image_lock *l);

#endif
