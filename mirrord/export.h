/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_EXPORT_H
#define MIRRORD_EXPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmap/store.h"
#include "common/list.h"
#include "image/image.h"

/* Exports: the named disks mirrord serves, and the one layer every
 * guest I/O passes through on its way to the image.
 *
 * An export is created from a struct export_spec (a config section, an
 * --export option or a control-API call) and lives in a registry keyed
 * by name.  NBD connections hold a reference; removing an export takes
 * it out of the registry at once (no new clients), asks its clients to
 * finish their in-flight requests and disconnect, and frees it when the
 * last reference goes.
 *
 * export_submit() is where policy sits between clients and the image:
 * writability (read-only, role), and, in later layers, write-intent
 * dirty tracking and mirroring.  Dirty bits are marked here and
 * nowhere else.
 */

enum export_role { ROLE_PRIMARY, ROLE_SECONDARY };
enum mirror_mode { MODE_SYNC, MODE_ASYNC };

/* What configures an export; every field is validated by
 * export_spec_validate(). */
struct export_spec {
  char *name;
  char *path;
  enum image_format format;
  enum export_role role;
  char *peer;                   /* NBD URI or NULL */
  enum mirror_mode mode;
  uint64_t granularity;         /* dirty-bitmap granularity, bytes */
  uint64_t bandwidth;           /* mirror bandwidth limit, bytes/s; 0 = none */
  bool readonly;
  enum image_cache cache;       /* none (O_DIRECT) or writeback */
  bool bitmap_strict;           /* refuse a corrupt bitmap file */
  uint64_t bitmap_extent;       /* bytes a new on-disk mark covers */
  bool no_bitmap;               /* bitmap=false: no dirty tracking */
  uint64_t max_lag;             /* async mirror: dirty bytes allowed
                                   before writes block (0: default) */
  char *fence_peer;             /* HA: hook run before promoting alone */
  char *peer_user;              /* HA: the TLS-PSK username the peer
                                   replicates as (NULL: the one this
                                   side uses to reach the peer) */
  unsigned peer_timeout_ms;     /* HA: a silent peer is down after it */
};

#define EXPORT_DEFAULT_GRANULARITY (64u << 10)
#define EXPORT_MIN_GRANULARITY (4u << 10)
#define EXPORT_MAX_GRANULARITY (64u << 20)
/* A write that needs new on-disk dirty bits marks its aligned extent of
 * this size (bitmap/store.h); at or below the granularity: exact.  Not
 * given: the default for an export without a peer, exact for an HA
 * pair, whose resync after a crash copies what the file marks. */
#define EXPORT_DEFAULT_BITMAP_EXTENT (64u << 20)
#define EXPORT_BITMAP_EXTENT_AUTO UINT64_MAX
#define EXPORT_MAX_BITMAP_EXTENT (1u << 30)

void export_spec_init (struct export_spec *s);
void export_spec_clear (struct export_spec *s);
int export_spec_copy (struct export_spec *dst, const struct export_spec *src);
bool export_spec_equal (const struct export_spec *a, const struct export_spec *b);
/* Sets KEY (one of those export_spec_key() lists) from VALUE.  -1 with
 * error_set() on a bad key or value. */
int export_spec_set (struct export_spec *s, const char *key, const char *value);
/* The I-th key export_spec_set() knows, what it takes and a line of
 * help; false past the last (mirrord --help prints them all). */
bool export_spec_key (size_t i, const char **key, const char **value,
                      const char **help);
/* Parses "NAME=PATH[,key=value|readonly]..." (mirrord --export). */
int export_spec_parse (struct export_spec *s, const char *str);
int export_spec_validate (const struct export_spec *s);
const char *export_role_name (enum export_role r);
const char *mirror_mode_name (enum mirror_mode m);

struct export_client;           /* an NBD connection, seen from here */
struct export_client_ops {
  /* Finish in-flight requests, then disconnect. */
  void (*shutdown) (struct export_client *c);
};
struct export_client {
  const struct export_client_ops *ops;
  struct list node;
  bool peer;                    /* replication from the HA peer */
  bool closed_cleanly;          /* it said NBD_CMD_DISC, or we closed it:
                                   not a sign that its process died */
  const char *tls_username;     /* authenticated TLS-PSK identity, or
                                   NULL for a plaintext connection */
};

struct mirror;
struct ha;

#define EXPORT_INSTANCE_BYTES 16

struct export {
  struct export_spec spec;
  struct image *img;
  char instance[2 * EXPORT_INSTANCE_BYTES + 1];  /* export-identity.c */
  struct mirror *mirror;        /* the mirror job, or NULL */
  struct ha *ha;                /* the HA pair, with peer=; or NULL */
  char *state_prefix;           /* STATE_DIR/NAME: its files' prefix */
  bool cut_over;                /* after a cut-over: writes refused */
  unsigned writes_in_flight;
  struct list held;             /* writes held during a cut-over */
  struct bitmap_store *bitmap;  /* persistent write-intent dirty bitmap,
                                   NULL with bitmap=false */
  unsigned refs;
  bool removed;
  bool from_config;             /* SIGHUP reload may remove it */
  struct list clients;
  unsigned nr_clients;
  unsigned nr_guests;           /* of them, not the HA peer's */
  struct list node;
  /* Statistics for status. */
  uint64_t bytes_read, bytes_written;
  uint64_t requests;
};

/* A request to an export: an image request plus what the export layer
 * needs while it is in flight.  The caller fills IO as for
 * image_submit(); IO's done() gets the request back unchanged. */
struct export_io {
  struct image_io io;
  /* Private to export.c. */
  struct export *exp;
  image_done_fn done;
  void *opaque;
  struct bitmap_intent intent;
  struct list held_node;
  int err;
  bool from_peer;               /* set by the caller: replication */
  bool parallel;                /* sync mirror: local and target at once */
  unsigned pending;             /* of the two */
  int forwarded;                /* 0 once the mirror's target has it */
};

/* The registry.  EXPORT_NAME "" finds the only export, if there is
 * exactly one (as qemu-nbd and nbdkit serve a default export). */
/* Bitmaps live in STATE_DIR/NAME.bitmap. */
int export_registry_init (struct ioq *ioq, const char *state_dir);
/* --insecure: HA peers may replicate over plaintext connections. */
void export_registry_allow_plaintext_peers (bool allow);
struct export *export_add (const struct export_spec *spec, bool from_config);
int export_remove (const char *name);
struct export *export_find (const char *name);
/* NAME may carry the HA peer's replication claim (ha.h). */
struct export *export_lookup_for_client (const char *name);
/* For a connection entering transmission on E with export name NAME,
 * authenticated as TLS-PSK user TLS_USER (NULL over plaintext): 0 an
 * ordinary client, 1 the HA peer replicating (its writes are accepted
 * on a secondary), -1 a refused claim (WHY says why). */
int export_accept_peer (struct export *e, const char *name,
                        const char *tls_user, char *why, size_t len);
/* The export's HA state for the peer (the mirrord:peer-state meta
 * context); -1 if it has no peer. */
int export_peer_state (struct export *e, char *buf, size_t len);
void export_remove_all (void);
/* Removed exports whose clients are still finishing (their images
 * still open).  FN (NULL: none) is called each time one of them is
 * freed, from inside export_unref(): it should only defer its work. */
unsigned export_draining (void);
void export_on_drained (void (*fn) (void));

/* Identity (export-identity.c).  One file, one export: -1 with
 * error_set() when SPEC's file is already exported. */
int export_check_file (const struct export_spec *spec);
/* A new random instance id for E. */
void export_identity_init (struct export *e);
/* E's NBD description, with its instance id (fits in
 * EXPORT_DESCRIPTION_MAX with any valid name). */
#define EXPORT_DESCRIPTION_MAX 384
void export_describe (const struct export *e, char *buf, size_t len);
/* Does DESC, a target's NBD description, carry E's instance id? */
bool export_is_described (const struct export *e, const char *desc);
/* Iteration in creation order. */
struct export *export_first (void);
struct export *export_next (struct export *e);
unsigned export_count (void);

void export_ref (struct export *e);
void export_unref (struct export *e);
void export_attach (struct export *e, struct export_client *c);
void export_detach (struct export *e, struct export_client *c);

/* May ordinary clients write?  (not read-only, role primary) */
bool export_writable (const struct export *e);
/* Writable for this client (the HA peer may write to a secondary). */
bool export_writable_by (const struct export *e,
                         const struct export_client *c);
/* What the NBD flags advertise: writable, or in a live migration's
 * incoming window (ha.h), writable-looking while writes are refused. */
bool export_looks_writable_by (const struct export *e,
                               const struct export_client *c);
uint64_t export_size (const struct export *e);

/* The data path: like image_submit(), with the export's policy.
 * Writes, trims and zeroes are recorded in the dirty bitmap: on disk
 * before they are submitted, in the live bitmap when they complete. */
void export_submit (struct export *e, struct export_io *x);

/* The live dirty bitmap over [OFFSET, OFFSET+COUNT) as extents with
 * flag 1 = dirty (qemu:dirty-bitmap).  -1 on out of memory. */
int export_dirty_extents (struct export *e, uint64_t offset, uint64_t count,
                          struct image_extents *out);
/* Clears the dirty bits of a range whose data is safe elsewhere
 * (LENGTH 0: to the end). */
void export_bitmap_clear (struct export *e, uint64_t offset, uint64_t length);
uint64_t export_dirty_bytes (const struct export *e);

/* For the mirror: the state files' prefix; refuse writes from now on;
 * let held writes go (refused after a cut-over, submitted otherwise). */
const char *export_state_prefix (const struct export *e);
void export_cut_over (struct export *e);
/* The peer= of an export with an HA pair turned out to be a plain NBD
 * server (no HA state): mirror to it as issue 4's peer= did. */
void export_mirror_plain_peer (struct export *e);
void export_release_held (struct export *e);
/* Starts a mirror of E (replacing a finished one).  -1 with
 * error_set().  STARTED (may be NULL) as in mirror_opts. */
int export_mirror_start (struct export *e, const char *uri, const char *label,
                         unsigned timeout_ms, bool async,
                         uint64_t bandwidth, bool resume,
                         void (*started) (void *opaque, int err), void *opaque);
/* Stops every mirror, keeping their jobs for the next start; true once
 * all are idle. */
bool export_stop_mirrors (void);

#endif
