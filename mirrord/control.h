/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_CONTROL_H
#define MIRRORD_CONTROL_H

#include "common/loop.h"

/* The control API: newline-delimited JSON requests over a unix socket
 * (mode 0600), one JSON reply per request.  docs/control-api.md is its
 * reference.  Commands run on the loop thread and never block. */

int control_init (struct loop *loop, const char *path);
/* Stops listening and closes every control connection. */
void control_stop (void);

#endif
