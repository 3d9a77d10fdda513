/*
 * The seccomp filter chat-fcgi confines itself with once its socket is open:
 * only the system calls a running server needs; any other call kills the
 * whole process (SIGSYS).
 */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

/* Whether this build can confine itself at all. Sanitizer builds cannot:
 * LeakSanitizer's exit check forks and ptraces the process. */
enum sandbox_support { SANDBOX_SUPPORTED, SANDBOX_UNSUPPORTED_SANITIZER };
enum sandbox_support sandbox_support(void);

/*
 * Loads the filter into the calling process: every thread, and every thread
 * started later. Irreversible. On failure returns -1 with a sentence in err.
 */
int sandbox_enter(char *err, size_t err_size);

/* The same, and with connect_out also new sockets (unix, IPv4, IPv6) and
 * connect: what a PostgreSQL store needs to reconnect. */
int sandbox_enter_with(bool connect_out, char *err, size_t err_size);

#endif
