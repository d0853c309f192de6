/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_NBD_CONN_H
#define MIRRORD_NBD_CONN_H

/* One NBD connection (internal to nbd/).
 *
 * Input.  Bytes are received into a fixed buffer (conn->in) and parsed
 * there: option headers and data during negotiation, request headers
 * during transmission.  A WRITE's payload goes into the request's own
 * pooled buffer, straight from the socket once the buffered bytes are
 * used up.  A payload that must be refused (too big, read-only, out of
 * range) is read and thrown away, so the stream stays in step and the
 * connection keeps working.  Garbage (a bad magic) cannot be resynced:
 * the connection is closed.
 *
 * Output.  Replies are queued as messages (a small inline header plus
 * an optional pointer to data) and sent with one writev per loop
 * iteration, so the replies to a burst of requests share a syscall.
 *
 * Bounds.  A connection has at most MAX_IN_FLIGHT requests and
 * MAX_IN_FLIGHT_BYTES of buffers alive (from header received to reply
 * sent), refused ones included; beyond that it stops reading its
 * socket until replies go out.
 * Option data is capped at MAX_OPTION_LEN (longer is discarded and
 * refused with ERR_TOO_BIG).  So a client's memory is bounded whatever
 * it sends.
 *
 * TLS.  After STARTTLS every byte goes through a gnutls session
 * (tls.h); plaintext connections never touch it.  A TCP connection
 * to a server with keys must start TLS before anything else
 * (FORCEDTLS); a unix-socket one may.
 *
 * Lifetime.  A connection is freed only when it is closed and its
 * last request has completed: an in-flight image request always finds
 * its connection alive, even after the client hung up.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/list.h"
#include "common/loop.h"
#include "backend.h"
#include "image/block.h"
#include "protocol.h"

#define CONN_INBUF (128u << 10)
#define MAX_OPTION_LEN (64u << 10)
#define MAX_OPTIONS 4096
#define MAX_IN_FLIGHT 256
#define MAX_IN_FLIGHT_BYTES (96u << 20)

enum conn_phase {
  PHASE_CLIENT_FLAGS,
  PHASE_OPTION_HDR,
  PHASE_OPTION_DATA,
  PHASE_OPTION_DISCARD,         /* too-long option being skipped */
  PHASE_TLS_HANDSHAKE,          /* STARTTLS acknowledged: handshaking */
  PHASE_REQUEST_HDR,
  PHASE_WRITE_PAYLOAD,
  PHASE_DISCARD_PAYLOAD,
  PHASE_CLOSING,                /* no more input: finish and close */
};

/* Meta contexts the client selected: base:allocation, and bit 1 + K
 * for the server's meta-context provider K (server_meta()). */
#define META_BASE_ALLOCATION 1u
#define META_PROVIDER(k)     (2u << (k))

struct request;
struct admission_host;

/* A queued reply message. */
struct out_msg {
  struct list node;
  struct request *req;          /* released once sent, or NULL */
  void *owned;                  /* freed once sent, or NULL */
  size_t hdr_len, data_len, sent;
  const void *data;
  uint8_t hdr[48];
};

struct request {
  struct conn *conn;
  uint16_t flags, type;
  uint64_t cookie, offset;
  uint32_t count;
  void *buf;                    /* pooled, for READ and WRITE */
  size_t buf_size;
  size_t payload_got;
  unsigned refs;                /* the image I/O and each queued message */
  uint32_t meta_pending;        /* BLOCK_STATUS contexts still to answer */
  int err;                      /* first error, for BLOCK_STATUS */
  struct blk_req breq;          /* to the export's block stack */
  struct image_extents extents;
};

struct conn {
  int fd;
  struct loop_source *src;
  struct server_client client;  /* our face towards the backend */
  struct list node;             /* server's list */
  struct list flush_node;       /* server's list of conns with output */
  bool on_flush_list;
  char peer[64];
  bool is_unix;
  struct admission_host *host;  /* its TCP source's count, or NULL */
  enum conn_phase phase;
  unsigned refs;                /* 1 while open, +1 per live request */
  bool closed;                  /* socket gone, waiting for requests */
  bool want_close;              /* close once output and requests drain */
  bool draining;                /* shutting down: new requests get
                                   ESHUTDOWN, close once idle */
  bool input_idle;              /* the last receive found nothing */
  bool write_blocked;           /* EAGAIN on send: wait for EPOLLOUT */

  /* Input. */
  uint8_t *in;
  size_t in_start, in_end;
  uint64_t discard_left;        /* bytes to skip (OPTION/PAYLOAD_DISCARD) */
  struct request *payload_req;  /* WRITE whose payload is being read
                                   (or, refused, skipped) */

  /* Output. */
  struct list outq;

  /* Negotiation. */
  uint32_t client_flags;
  uint32_t option, option_len;
  unsigned nr_options;
  bool structured;
  char *meta_export;            /* export the contexts were set for */
  uint32_t meta;                /* META_* bits */
  uint64_t handshake_deadline_ns;

  /* TLS (tls.c). */
  bool tls_required;            /* TCP and the server has keys */
  bool tls_up;                  /* handshake done: I/O through c->tls */
  bool tls_read_wants_write;    /* gnutls must write before reading on */
  struct tls_session *tls;      /* from STARTTLS on */
  struct loop_deferred tls_later; /* input gnutls holds, unseen by epoll */

  /* Transmission. */
  struct server_export *exp;    /* the lookup's answer we serve */
  uint16_t eflags;              /* transmission flags sent */
  unsigned in_flight;
  uint64_t in_flight_bytes;
  uint64_t io_error_logged_ns;  /* disk errors: the last one logged */
  unsigned io_errors_unlogged;  /* and how many since went unlogged */
};

/* conn.c */
void conn_ref (struct conn *c);
void conn_unref (struct conn *c);
void conn_queue (struct conn *c, struct out_msg *m);
struct out_msg *conn_msg_new (struct request *req);
/* Frees M (unqueued, or at the head of its queue) and what it holds. */
void conn_msg_free (struct out_msg *m);
void conn_want_close (struct conn *c);
/* Server shutdown or export removal: finish what is in flight, answer
 * what the client still sends with ESHUTDOWN (the spec's way to ask it
 * to disconnect), close when nothing more arrives. */
void conn_drain (struct conn *c);
void conn_close (struct conn *c, const char *why);
void conn_update_events (struct conn *c);
/* A zeroed request, or NULL: conn_request_put() gives it back. */
struct request *conn_request_alloc (void);
void conn_request_put (struct request *req);
void conn_parse (struct conn *c);
/* N bytes from the head of the reply queue went out. */
void conn_consume (struct conn *c, size_t n);
/* The PSK username the client authenticated with, or NULL without
 * TLS.  The same string is in c->client.tls_username for the backend
 * (the HA layer accepts replication writes only from its peer). */
const char *conn_tls_username (const struct conn *c);
/* Still negotiating (options, or the TLS handshake)? */
static inline bool conn_negotiating (const struct conn *c)
{
  return c->phase < PHASE_REQUEST_HDR;
}

/* handshake.c: parse from c->in; returns false when more bytes are
 * needed or the connection is closing. */
bool handshake_step (struct conn *c);

/* transmission.c */
bool transmission_step (struct conn *c);
void transmission_payload_done (struct conn *c, struct request *req);
uint16_t transmission_flags (const struct conn *c, struct blk *b);
void transmission_error_reply (struct conn *c, struct request *req,
                               uint64_t cookie, int err);

/* block-status.c */
void block_status_start (struct request *req);
/* EXPORT as the client named it; X what the backend found for it. */
int block_status_list_contexts (struct conn *c, uint32_t option,
                                const char *export, struct server_export *x,
                                const uint8_t *queries, uint32_t nr_queries,
                                uint32_t len);

/* request.c: validation, pure. */
struct request_ctx {
  uint64_t size;
  bool writable;
  bool structured;
  bool meta_selected;
  uint16_t eflags;
};
/* Returns 0 when the request may proceed, else the errno to reply
 * with.  Sets *drain when a refused WRITE's payload must be skipped. */
int request_check (uint16_t type, uint16_t flags, uint64_t offset,
                   uint32_t count, const struct request_ctx *ctx);

/* Byte order helpers on unaligned buffers. */
#include <endian.h>
#include <string.h>
static inline uint16_t get16 (const uint8_t *p) { uint16_t v; memcpy (&v, p, 2); return be16toh (v); }
static inline uint32_t get32 (const uint8_t *p) { uint32_t v; memcpy (&v, p, 4); return be32toh (v); }
static inline uint64_t get64 (const uint8_t *p) { uint64_t v; memcpy (&v, p, 8); return be64toh (v); }
static inline uint8_t *put16 (uint8_t *p, uint16_t v) { v = htobe16 (v); memcpy (p, &v, 2); return p + 2; }
static inline uint8_t *put32 (uint8_t *p, uint32_t v) { v = htobe32 (v); memcpy (p, &v, 4); return p + 4; }
static inline uint8_t *put64 (uint8_t *p, uint64_t v) { v = htobe64 (v); memcpy (p, &v, 8); return p + 8; }

#endif
