/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_NBD_BACKEND_H
#define MIRRORD_NBD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/list.h"
#include "image/block.h"

/* What the NBD server knows of the exports it serves: a backend that
 * its owner (the daemon; a memory disk in the fuzz harness) gives to
 * server_init().  The server includes nothing else above common/ and
 * the block interface.
 *
 * Lookup.  Every option that names an export (EXPORT_NAME, INFO, GO,
 * LIST_META_CONTEXT, SET_META_CONTEXT) asks lookup() with the name
 * exactly as the client sent it and the client's TLS-PSK identity.  The
 * backend decides what the name means — including names that are not
 * a plain export name, such as the HA peer's replication claims, which
 * the daemon's lookup hands to ha/ — and answers with the block stack
 * this client's requests go to, the export's own name and its
 * description.  An answer holds a reference on the backend's export
 * (release() gives it back): a connection keeps the one from GO or
 * EXPORT_NAME until it is freed, so its last request always finds its
 * stack.  The reference pins memory only: removing an export is its
 * owner's business (see attach()).
 *
 * Clients.  A connection entering transmission is attached to its
 * export, and detached when it closes; the owner may then ask it to
 * finish and disconnect (struct server_client's shutdown()).
 *
 * Meta contexts beyond base:allocation come from providers, each a
 * namespace the backend serves (qemu:dirty-bitmap:NAME, the daemon's
 * mirrord:peer-state): see struct server_meta_provider.
 */

/* A connection as the backend sees it. */
struct server_client {
  void (*shutdown) (struct server_client *c);  /* finish, then close */
  struct list node;             /* the backend's, while attached */
  const char *tls_username;     /* authenticated TLS-PSK identity, or
                                   NULL for a plaintext connection */
  bool closed_cleanly;          /* it said NBD_CMD_DISC, or we closed it:
                                   not a sign that its process died */
};

#define SERVER_DESCRIPTION_MAX 384

struct server_export {
  struct blk *blk;              /* where this client's requests go */
  void *handle;                 /* the backend's reference */
  char name[4096 + 1];          /* the export's own name (NBD_INFO_NAME) */
  char description[SERVER_DESCRIPTION_MAX];
};

/* lookup() results. */
enum {
  SERVER_LOOKUP_OK = 0,
  SERVER_LOOKUP_UNKNOWN,        /* no such export */
  SERVER_LOOKUP_REFUSED,        /* policy: WHY says why */
};

struct server_backend {
  /* NAME as sent; META: for the meta-context options (the client only
   * asks which contexts exist: a claim in the name is not judged). */
  int (*lookup) (const char *name, const char *tls_user, bool meta,
                 struct server_export *out, char *why, size_t len);
  void (*release) (void *handle);
  void (*attach) (void *handle, struct server_client *c);
  void (*detach) (void *handle, struct server_client *c);
  /* NBD_OPT_LIST: FN for each export name, in order. */
  void (*list) (void (*fn) (void *arg, const char *name), void *arg);
};

/* One meta-context namespace.  Its context for an export is named by
 * name(); match() says whether a query (LEN bytes, no NUL) asks for it
 * (NULL: the exact name, or with LIST a prefix ending in a colon). */
struct server_meta_provider {
  /* The context's name for HANDLE into BUF; -1: none for this export. */
  int (*name) (void *handle, const char *export, char *buf, size_t len);
  bool (*match) (const char *name, const uint8_t *q, uint32_t len, bool list);
  bool listed_by_default;       /* LIST with no query shows it */
  bool list_only;               /* information in its name only: never
                                   selected for BLOCK_STATUS */
  /* BLOCK_STATUS: extents over [OFFSET, OFFSET+COUNT), at once.  0, or
   * -1 on out of memory; a full list ends early. */
  int (*extents) (void *handle, uint64_t offset, uint64_t count,
                  struct image_extents *out);
};

#define SERVER_MAX_META_PROVIDERS 8

#endif
