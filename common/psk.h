/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_PSK_H
#define MIRRORD_COMMON_PSK_H

#include <stddef.h>
#include <stdint.h>

/* TLS pre-shared keys, from the file format gnutls' psktool writes and
 * libnbd, qemu-nbd and nbdkit read: one "USERNAME:HEXKEY" per line.
 * Empty lines and lines starting with '#' are skipped; anything else
 * that is not USERNAME:HEXKEY is an error naming the file and line.
 *
 * The decoded keys live in one page-aligned region, locked in memory
 * (mlock, where the limit allows; never in a core dump) and zeroed
 * when freed.  Usernames are not secret and live on the heap.
 */

#define PSK_MAX_USERNAME 128     /* gnutls' limit for a PSK identity */
#define PSK_MAX_KEY 512          /* bytes, decoded */
#define PSK_MAX_FILE (1u << 20)

struct psk_key {
  char *username;
  const uint8_t *key;           /* into the locked region */
  size_t len;
};

struct psk_keys {
  char *file;
  struct psk_key *keys;
  size_t nr;
  uint8_t *region;              /* mmap'd, locked if possible */
  size_t region_len;
};

/* Reads FILE.  Returns NULL with error_set() ("FILE:LINE: why") if it
 * is missing, unreadable, empty or has a malformed line. */
struct psk_keys *psk_load (const char *file);
/* Parses TEXT (LEN bytes) as if read from FILE, which only names it in
 * errors.  TEXT is not kept. */
struct psk_keys *psk_parse (const char *file, const char *text, size_t len);
/* The key for USERNAME, or NULL. */
const struct psk_key *psk_lookup (const struct psk_keys *k,
                                  const char *username);
/* The first username in the file: the identity mirrord presents as a
 * client when the target URI names none. */
const char *psk_first_username (const struct psk_keys *k);
/* Locks the keys in memory again: a child of fork() (daemon mode)
 * does not inherit memory locks.  Best effort, like the first. */
void psk_lock (const struct psk_keys *k);
/* Zeroes the keys and frees everything.  NULL is fine. */
void psk_free (struct psk_keys *k);

#endif
