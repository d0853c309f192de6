/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_CTL_CLIENT_H
#define MIRRORD_CTL_CLIENT_H

/* One connection to the mirrord control socket.  Framing is one JSON
 * object per line each way; a connection carries any number of
 * request/reply pairs, in order. */

#include <stdint.h>

#include <json-c/json.h>

struct client;

/* Connects to PATH.  Returns an enum ctl_exit code: CTL_OK with *OUT
 * set, or CTL_UNREACHABLE with error_set(). */
int client_connect (const char *path, struct client **out);
void client_close (struct client *c);

/* Sends REQ and reads one reply.  On CTL_OK, *REPLY is the parsed
 * reply object (the caller owns it).  Otherwise returns CTL_FAILED
 * (reply too large or unparseable), CTL_UNREACHABLE (connection lost
 * or closed without a reply) or CTL_TIMEOUT (DEADLINE_MS, a monotonic
 * time in ms, passed; 0 means no deadline), after error_set(). */
int client_call (struct client *c, json_object *req, int64_t deadline_ms,
                 json_object **reply);

#endif
