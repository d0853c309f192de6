/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_ERROR_H
#define MIRRORD_COMMON_ERROR_H

/* The one error convention of mirrord.
 *
 * A function that fails returns -1 (or NULL) after calling error_set()
 * exactly once, at the place where the failure was detected and the
 * context is known.  errno is left set to the error number.  The code
 * that finally handles the failure reads error_get() and reports it
 * once (a log line, a control-socket reply, a usage message).
 *
 * The message is thread-local, so worker threads cannot clobber the
 * main loop's message.
 */

__attribute__ ((format (printf, 2, 3)))
int error_set (int errnum, const char *fmt, ...);

/* Like error_set(), but ERRNUM is only a code for the caller (the
 * control API's "errno", say) and its strerror() text is not appended:
 * for refusals whose reason the message already says ("export vm9 not
 * found", not "...: No such file or directory"). */
__attribute__ ((format (printf, 2, 3)))
int error_code (int errnum, const char *fmt, ...);

/* Prefix the current message with more context ("export vm1: ...").
 * Keeps errno. */
__attribute__ ((format (printf, 1, 2)))
int error_prefix (const char *fmt, ...);

/* The last message set on this thread, never NULL. */
const char *error_get (void);
/* The errno recorded with the last message, 0 when none. */
int error_errno (void);

#endif
