/* SPDX-License-Identifier: MIT */
/* Keeps gnutls from waiting inside the event loop.
 *
 * libnbd (our client side: mirror targets, the HA peer link, verify)
 * creates its TLS sessions without GNUTLS_NONBLOCK, with gnutls' default
 * handshake timeout, 40 s.  gnutls then treats the socket as blocking:
 * gnutls_handshake() waits in poll() for the peer's next handshake
 * message instead of returning GNUTLS_E_AGAIN, though the socket is
 * non-blocking, and the whole daemon stops until the peer answers.  Two
 * mirrords that dial each other (heartbeats both ways) could each stop
 * in a handshake with the other: both stood still for exactly 40 s.
 * (Without a timeout it is worse: gnutls retries recv() in a busy loop.)
 *
 * The executable's definition comes first in symbol lookup, libnbd's
 * calls included: every session is created non-blocking, so a handshake
 * step returns GNUTLS_E_AGAIN and libnbd waits for the socket through
 * our loop like for everything else. */
#include <config.h>

#include <dlfcn.h>

#include <gnutls/gnutls.h>

int
gnutls_init (gnutls_session_t *session, unsigned int flags)
{
  static int (*real) (gnutls_session_t *, unsigned int);

  if (real == NULL)
    *(void **) &real = dlsym (RTLD_NEXT, "gnutls_init");
  if (real == NULL)
    return GNUTLS_E_INTERNAL_ERROR;
  return real (session, flags | GNUTLS_NONBLOCK);
}
