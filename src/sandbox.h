/*
 * The seccomp filter chat-fcgi confines itself with once its socket is open:
 * the system calls a running server needs are allowed; the few that only an
 * intruder makes (running a program, a new process, tracing, executable
 * memory) kill the whole process (SIGSYS); any other call fails with an
 * error (ENOSYS; EAFNOSUPPORT for a socket family), as a library may try one
 * on a normal path. src/sandbox.c lists them and says why.
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

/*
 * The same, and with connect_out also new sockets (unix, IPv4, IPv6),
 * connect and what resolving a host name needs (a netlink routing socket):
 * what a PostgreSQL store needs to reconnect. The calls the filter names
 * that this libseccomp does not know go into unknown, separated by spaces
 * ("" when there are none): they fail with ENOSYS like any call not allowed.
 */
int sandbox_enter_with(bool connect_out, char *unknown, size_t unknown_size, char *err,
		       size_t err_size);

/* Which of names[0..n) this libseccomp does not know, into list as above;
 * returns how many. */
size_t sandbox_unknown_names(const char *const *names, size_t n, char *list, size_t size);

#endif
