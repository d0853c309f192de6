/* SPDX-License-Identifier: MIT */
/* Connection budgets: per transport and per TCP source address (the
 * design is in admission.h). */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/resource.h>

#include "common/error.h"
#include "common/log.h"
#include "admission.h"

#define HOST_BUCKETS 1024

struct admission_host {
  struct admission_host *next;  /* in its bucket */
  sa_family_t family;
  uint8_t addr[16];             /* IPv4 in the first 4 bytes */
  unsigned count;
};

static struct {
  struct server_limits limits;
  unsigned nr_unix, nr_tcp;
  struct admission_host *buckets[HOST_BUCKETS];
} adm;

/* At most half the descriptors go to TCP clients; the rest stay for
 * unix-socket clients, images, mirror targets and the control socket. */
static unsigned
cap_by_descriptors (unsigned max_tcp)
{
  struct rlimit rl;
  rlim_t half;

  if (getrlimit (RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY)
    return max_tcp;
  half = rl.rlim_cur / 2;
  if (half < 1)
    half = 1;
  if (max_tcp != 0 && max_tcp <= half)
    return max_tcp;
  log_info ("TCP connections limited to %llu, half the descriptor limit "
            "(ulimit -n %llu), so unix-socket clients always find one",
            (unsigned long long) half, (unsigned long long) rl.rlim_cur);
  return (unsigned) half;
}

void
admission_init (const struct server_limits *limits)
{
  adm.limits = *limits;
  adm.limits.max_tcp = cap_by_descriptors (limits->max_tcp);
}

unsigned
admission_max_tcp (void)
{
  return adm.limits.max_tcp;
}

/* The address of SA as a key; false if it is neither IPv4 nor IPv6. */
static bool
host_key (const struct sockaddr *sa, sa_family_t *family, uint8_t addr[16])
{
  memset (addr, 0, 16);
  *family = sa->sa_family;
  if (sa->sa_family == AF_INET) {
    memcpy (addr, &((const struct sockaddr_in *) sa)->sin_addr, 4);
    return true;
  }
  if (sa->sa_family == AF_INET6) {
    memcpy (addr, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16);
    return true;
  }
  return false;
}

static unsigned
bucket_of (sa_family_t family, const uint8_t addr[16])
{
  uint32_t h = 2166136261u ^ family;  /* FNV-1a */

  for (int i = 0; i < 16; i++)
    h = (h ^ addr[i]) * 16777619u;
  return h % HOST_BUCKETS;
}

/* The entry of an address, created with a count of 0 if new. */
static struct admission_host *
host_get (sa_family_t family, const uint8_t addr[16])
{
  unsigned b = bucket_of (family, addr);
  struct admission_host *h;

  for (h = adm.buckets[b]; h; h = h->next)
    if (h->family == family && memcmp (h->addr, addr, 16) == 0)
      return h;
  h = calloc (1, sizeof *h);
  if (h == NULL) {
    error_set (ENOMEM, "allocating a connection count");
    return NULL;
  }
  h->family = family;
  memcpy (h->addr, addr, 16);
  h->next = adm.buckets[b];
  adm.buckets[b] = h;
  return h;
}

static void
host_put (struct admission_host *h)
{
  struct admission_host **pp = &adm.buckets[bucket_of (h->family, h->addr)];

  if (--h->count > 0)
    return;
  while (*pp != h)
    pp = &(*pp)->next;
  *pp = h->next;
  free (h);
}

static int
take_tcp (const struct sockaddr *sa, struct admission_host **host)
{
  const struct server_limits *l = &adm.limits;
  char name[INET6_ADDRSTRLEN] = "?";
  struct admission_host *h;
  sa_family_t family;
  uint8_t addr[16];

  if (l->max_tcp && adm.nr_tcp >= l->max_tcp)
    return error_set (0, "%u TCP connections already (max-connections-tcp)",
                      adm.nr_tcp);
  if (sa && host_key (sa, &family, addr)) {
    if ((h = host_get (family, addr)) == NULL)
      return -1;
    if (l->max_per_host && h->count >= l->max_per_host) {
      inet_ntop (family, addr, name, sizeof name);
      return error_set (0, "%u connections from %s already "
                        "(max-connections-per-host)", h->count, name);
    }
    h->count++;
    *host = h;
  }
  adm.nr_tcp++;
  return 0;
}

int
admission_take (bool is_unix, const struct sockaddr *sa,
                struct admission_host **host)
{
  *host = NULL;
  if (!is_unix)
    return take_tcp (sa, host);
  if (adm.limits.max_unix && adm.nr_unix >= adm.limits.max_unix)
    return error_set (0, "%u unix-socket connections already "
                      "(max-connections-unix)", adm.nr_unix);
  adm.nr_unix++;
  return 0;
}

void
admission_release (bool is_unix, struct admission_host *host)
{
  if (is_unix) {
    adm.nr_unix--;
    return;
  }
  adm.nr_tcp--;
  if (host)
    host_put (host);
}
