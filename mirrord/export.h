/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_EXPORT_H
#define MIRRORD_EXPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "bitmap/store.h"
#include "bitmap/tracker.h"
#include "common/list.h"
#include "ha/gate.h"
#include "image/block.h"
#include "image/image.h"
#include "mirrord/replicate.h"
#include "nbd/backend.h"

/* Exports: the named disks mirrord serves.
 *
 * An export is created from a struct export_spec (a config section, an
 * --export option or a control-API call) and lives in a registry keyed
 * by name.
 *
 * The export is a stack of block layers (image/block.h), built by
 * export_build_stack() (export-stack.c), each layer passed once on the
 * way down and once, in reverse, on the way up:
 *
 *     clients ──> gate ──> tracker ──> replicate ──> image
 *     HA peer ──> peer gate ─────────────────────────^
 *
 * gate (ha/gate.h): writability by role, the first-write hook, holding
 * writes during a cut-over; tracker (bitmap/tracker.h): write intent,
 * the only code that marks and clears dirty bits (without a bitmap,
 * bitmap=false, there is no tracker); replicate (replicate.h): the
 * mirror's write blocking and forwarding; image: the disk.  The HA
 * peer's replication writes into a secondary take the short way: the
 * primary tracks them in its own bitmap.
 *
 * Lifetimes.  The registry owns every export: only export_remove()
 * (and export_remove_all()) take one out of it — no new clients, its
 * clients are asked to finish and disconnect — and only the registry
 * frees it: at once in the removal when nothing uses it, else from the
 * loop (a deferred call) once the last user has let go.  Users — an NBD connection (through the backend's lookup
 * answer, export-nbd.c), a mirror job, a verify, a control request in
 * flight — hold a reference with export_ref(); export_unref() never
 * frees anything itself, so no connection's last unref tears an
 * export down under the caller.
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
  unsigned writes_in_flight;    /* admitted by the gate, not yet done */
  struct bitmap_store *bitmap;  /* persistent write-intent dirty bitmap,
                                   NULL with bitmap=false */
  /* The stack (export-stack.c), bottom up. */
  struct blk_image base;
  struct replicate rep;
  struct tracker trk;           /* only with a bitmap */
  struct gate gate;             /* clients' top */
  struct gate peer_gate;        /* the HA peer's top */
  struct gate_stats stats;      /* both gates count here */
  unsigned refs;                /* users, and the registry while listed */
  bool removed;
  bool from_config;             /* SIGHUP reload may remove it */
  struct list clients;          /* struct server_client, attached */
  unsigned nr_clients;
  unsigned nr_guests;           /* of them, not the HA peer's */
  struct list node;             /* the registry's (listed or draining) */
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
void export_remove_all (void);
/* Removed exports whose users are still finishing (their images still
 * open).  FN (NULL: none) is called each time the registry frees one of
 * them, from the loop. */
unsigned export_draining (void);
void export_on_drained (void (*fn) (void));
/* Frees at once every removed export nothing uses any more: for the
 * end of main(), when the loop no longer runs deferred calls. */
void export_registry_reap (void);

/* The NBD server's view of the registry (export-nbd.c): lookup by name
 * (an HA replication claim in the name goes to ha/, which accepts or
 * refuses it), the client lists, and the qemu:dirty-bitmap and
 * mirrord:peer-state meta contexts. */
extern const struct server_backend export_server_backend;
#define EXPORT_NR_META 2
extern const struct server_meta_provider *const export_meta_providers[EXPORT_NR_META];

/* Builds E's stack over its open image and bitmap (export-stack.c). */
void export_build_stack (struct export *e);
/* Opens E's HA pair (export-ha.c: ha/ sees the export and its mirror
 * through struct ha_host_ops).  PLAINTEXT_CLAIMS: --insecure.  -1 with
 * error_set(). */
int export_open_ha (struct export *e, bool plaintext_claims);

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
/* Drops a user's reference; a removed export nothing uses any more is
 * then freed by the registry, later, from the loop. */
void export_unref (struct export *e);
/* NBD clients in transmission (export-nbd.c). */
void export_attach (struct export *e, struct server_client *c, bool peer);
void export_detach (struct export *e, struct server_client *c, bool peer);

/* May ordinary clients write?  (not read-only, role primary) */
bool export_writable (const struct export *e);
/* May the HA peer replicate into it?  (a secondary, not read-only) */
bool export_writable_by_peer (const struct export *e);
uint64_t export_size (const struct export *e);
/* The stack's tops: for clients, and for the HA peer's replication. */
struct blk *export_blk (struct export *e);
struct blk *export_peer_blk (struct export *e);

/* Dirty bits, through the tracker (bitmap/tracker.h); with no bitmap
 * nothing is dirty.  LENGTH 0: to the end. */
struct tracker *export_tracker (struct export *e);
void export_bitmap_mark (struct export *e, uint64_t offset, uint64_t length);
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
