/* The seccomp filter chat-fcgi loads (src/sandbox.c): each case forks, the
 * child loads the filter and tries one thing, the parent reads how the child
 * ended. Allowed things end in exit 0; the calls that mean an intruder in
 * SIGSYS; any other call fails with an error, which the child passes back
 * as its exit status, and the child lives on. */
#define _GNU_SOURCE /* pipe2, mmap flags, pkey_mprotect, process_vm_readv */

#include "sandbox.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

/* Exit codes of a child that survived, besides an errno; SIGSYS means the
 * filter killed it. */
#define CHILD_OK          0
#define CHILD_NO_SANDBOX  250
#define CHILD_CALL_FAILED 251
#define CHILD_SUCCEEDED   252

static void *thread_main(void *arg)
{
	return arg;
}

static int start_a_thread(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, thread_main, NULL) != 0)
		return -1;
	return pthread_join(t, NULL) == 0 ? 0 : -1;
}

static int serve_like(void)
{
	/* What a worker does: memory, a pipe, time, a file, randomness. */
	void *p = malloc(4 * 1024 * 1024);
	int fds[2];
	struct timespec ts;
	char buf[16];
	if (!p || pipe2(fds, O_CLOEXEC) != 0 || write(fds[1], "x", 1) != 1 ||
	    read(fds[0], buf, 1) != 1 || clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return -1;
	free(p);
	close(fds[0]);
	close(fds[1]);
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	close(fd);
	return start_a_thread();
}

static int run_raise(void)
{
	/* A signal to itself is allowed (abort() needs it); SIGURG is
	 * ignored by default, so the child lives on. */
	return raise(SIGURG);
}

/* The calls that mean an intruder: each returns only if it was not killed. */

static int run_execve(void)
{
	char *argv[] = {"/bin/true", NULL};
	char *envp[] = {NULL};
	execve(argv[0], argv, envp);
	return -1;
}

static int run_execveat(void)
{
	char *argv[] = {"/bin/true", NULL};
	char *envp[] = {NULL};
	syscall(SYS_execveat, AT_FDCWD, argv[0], argv, envp, 0);
	return -1;
}

static int run_fork(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	return -1;
}

static int run_vfork(void)
{
	/* glibc's vfork is the call itself, not a clone. */
	pid_t pid = vfork();
	if (pid == 0)
		_exit(0);
	return -1;
}

static int run_mprotect_exec(void)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p =
	    mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	mprotect(p, (size_t)page, PROT_READ | PROT_EXEC);
	return -1;
}

static int run_pkey_mprotect_exec(void)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p =
	    mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	syscall(SYS_pkey_mprotect, p, (size_t)page, PROT_READ | PROT_EXEC, -1);
	return -1;
}

static int run_mmap_exec(void)
{
	mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return -1;
}

static int run_ptrace(void)
{
	/* Unconfined this fails (the parent is not stopped for it). */
	ptrace(PTRACE_PEEKDATA, getppid(), NULL, NULL);
	return -1;
}

static int run_process_vm_readv(void)
{
	char buf[8];
	struct iovec local = {.iov_base = buf, .iov_len = sizeof buf};
	struct iovec remote = {.iov_base = buf, .iov_len = sizeof buf};
	process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	return -1;
}

#if defined(__x86_64__)
static int run_int80(void)
{
	/* getpid through the 32-bit entry, out of the 64-bit rules' reach. */
	long rc = 20;
	__asm__ volatile("int $0x80" : "+a"(rc) : : "memory");
	return -1;
}
#endif

/* The calls a library may make that fail with an errno: each returns the
 * errno it got, or CHILD_SUCCEEDED. */

static int failed_with(long rc)
{
	return rc == -1 ? errno : CHILD_SUCCEEDED;
}

static int try_inet_socket(void)
{
	return failed_with(socket(AF_INET, SOCK_STREAM, 0));
}

static int try_netlink_socket(void)
{
	return failed_with(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
}

static int try_packet_socket(void)
{
	return failed_with(socket(AF_PACKET, SOCK_RAW, 0));
}

/* Families in the gaps between the allowed ones, and past them. */
static int try_other_families(void)
{
	static const int families[] = {AF_UNSPEC, AF_AX25, AF_IPX,  AF_X25,   AF_KEY,
				       AF_LLC,    AF_CAN,  AF_TIPC, AF_VSOCK, AF_XDP};
	int want = failed_with(socket(families[0], SOCK_STREAM, 0));
	for (size_t i = 1; i < sizeof families / sizeof families[0]; i++)
		if (failed_with(socket(families[i], SOCK_STREAM, 0)) != want)
			return CHILD_CALL_FAILED;
	return want;
}

static int try_netlink_audit(void)
{
	return failed_with(socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT));
}

static int try_connect(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* allowed, for listener_refuse */
	if (fd < 0)
		return CHILD_CALL_FAILED;
	struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = "/nonexistent"};
	return failed_with(connect(fd, (const struct sockaddr *)&addr, sizeof addr));
}

static int try_bind_unix(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return CHILD_CALL_FAILED;
	struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = "/tmp/chat-fcgi-bind-test"};
	return failed_with(bind(fd, (const struct sockaddr *)&addr, sizeof addr));
}

static int try_listen(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return CHILD_CALL_FAILED;
	return failed_with(listen(fd, 1));
}

static int try_kill(void)
{
	return failed_with(kill(getppid(), 0));
}

static int try_tgkill_other(void)
{
	/* The parent's main thread: its tid is its pid. */
	return failed_with(syscall(SYS_tgkill, getppid(), getppid(), 0));
}

static int try_prctl_other(void)
{
	return failed_with(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
}

/* What a PostgreSQL store does to reconnect: a TCP socket and connect
 * (refused here: nothing listens on port 1), and a unix one. */
static int run_connect_out(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(1)};
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int rc = connect(fd, (const struct sockaddr *)&in, sizeof in);
	close(fd);
	if (rc == 0 || errno != ECONNREFUSED)
		return -1;
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd >= 0)
		close(fd);
	else if (errno != EAFNOSUPPORT)
		return -1;
	return try_connect() == ENOENT ? 0 : -1;
}

/* What glibc's getaddrinfo does to sort addresses: a netlink routing
 * socket, bound, asked for the machine's addresses. */
static int run_netlink_route(void)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -1;
	struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
	socklen_t len = sizeof nl;
	int rc = bind(fd, (const struct sockaddr *)&nl, sizeof nl) == 0 &&
			 getsockname(fd, (struct sockaddr *)&nl, &len) == 0
		     ? 0
		     : -1;
	close(fd);
	return rc;
}

/* The families of getaddrinfo's answer for the loopback addresses (a
 * null host: ::1 and 127.0.0.1, sorted as for any name with both), as
 * letters in order; "" on failure. */
static void resolve_loopback(char *out, size_t size)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	out[0] = '\0';
	if (getaddrinfo(NULL, "5432", &hints, &res) != 0)
		return;
	size_t n = 0;
	for (struct addrinfo *a = res; a && n + 1 < size; a = a->ai_next)
		out[n++] = a->ai_family == AF_INET6 ? '6' : a->ai_family == AF_INET ? '4' : '?';
	out[n] = '\0';
	freeaddrinfo(res);
}

/* Resolves unconfined, then confined for a PostgreSQL store: the same
 * answer, in the same order. Loads the filter itself. */
static int run_resolve(void)
{
	char before[8], after[8], err[256], unknown[256];
	resolve_loopback(before, sizeof before);
	if (strlen(before) < 2)
		return CHILD_CALL_FAILED;
	if (sandbox_enter_with(true, unknown, sizeof unknown, err, sizeof err) != 0)
		return CHILD_NO_SANDBOX;
	resolve_loopback(after, sizeof after);
	return strcmp(before, after) == 0 ? 0 : -1;
}

/* Each name the filter reports unknown is one libseccomp cannot resolve. */
static int run_report_unknown(void)
{
	char err[256], unknown[256];
	if (sandbox_enter_with(true, unknown, sizeof unknown, err, sizeof err) != 0)
		return CHILD_NO_SANDBOX;
	for (char *name = strtok(unknown, " "); name; name = strtok(NULL, " "))
		if (strcmp(name, "...") != 0 &&
		    seccomp_syscall_resolve_name(name) != __NR_SCMP_ERROR)
			return -1;
	return 0;
}

enum { FREE = 0, SANDBOXED = 1, SANDBOXED_CONNECT_OUT = 2 };

/* Runs fn in a child, sandboxed (with connect_out or not) or not; returns
 * the wait status. fn's result is the exit status: 0 stays 0, -1 is
 * CHILD_CALL_FAILED, anything else (an errno) as is. */
static int in_child(int (*fn)(void), int mode)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char err[256], unknown[256];
		if (mode != FREE && sandbox_enter_with(mode == SANDBOXED_CONNECT_OUT, unknown,
						       sizeof unknown, err, sizeof err) != 0) {
			fprintf(stderr, "%s\n", err);
			_exit(CHILD_NO_SANDBOX);
		}
		int rc = fn();
		_exit(rc == -1 ? CHILD_CALL_FAILED : rc);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

static bool killed_by_sigsys(int status)
{
	return status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS;
}

static bool exited_with(int status, int code)
{
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code;
}

static void describe(int status)
{
	if (status == -1)
		diag("no child");
	else if (WIFSIGNALED(status))
		diag("killed by signal %d", WTERMSIG(status));
	else
		diag("exit %d", WEXITSTATUS(status));
}

int main(void)
{
	if (sandbox_support() != SANDBOX_SUPPORTED) {
		/* A sanitizer build runs unconfined (see sandbox.h); the normal
		 * build of the same run covers the filter. */
		char err[256];
		ok(sandbox_enter(err, sizeof err) != 0,
		   "a sanitizer build refuses to confine itself");
		return done_testing();
	}

	ok(exited_with(in_child(serve_like, SANDBOXED), CHILD_OK),
	   "sandboxed: memory, pipes, time, files, threads still work");
	ok(exited_with(in_child(run_raise, SANDBOXED), CHILD_OK),
	   "sandboxed: a signal to itself is allowed");

	static const struct {
		int (*fn)(void);
		const char *what;
	} fatal[] = {
		{run_execve, "execve"},
		{run_execveat, "execveat"},
		{run_fork, "fork (a clone without CLONE_THREAD)"},
		{run_vfork, "vfork"},
		{run_mprotect_exec, "mprotect to PROT_EXEC"},
		{run_pkey_mprotect_exec, "pkey_mprotect to PROT_EXEC"},
		{run_mmap_exec, "mmap with PROT_EXEC"},
		{run_ptrace, "ptrace"},
		{run_process_vm_readv, "process_vm_readv"},
#if defined(__x86_64__)
		{run_int80, "a call through the 32-bit entry (int 0x80)"},
#endif
	};
	for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
		/* The same call without the filter must not die: then the death
		 * below is the filter's doing. */
		int free_status = in_child(fatal[i].fn, FREE);
#if defined(__x86_64__)
		if (fatal[i].fn == run_int80 && free_status != -1 && WIFSIGNALED(free_status)) {
			/* A kernel without the 32-bit entry: nothing to filter. */
			diag("skipped %s: unconfined it dies of signal %d", fatal[i].what,
			     WTERMSIG(free_status));
			continue;
		}
#endif
		ok(!killed_by_sigsys(free_status), "unconfined: %s does not die", fatal[i].what);
		for (int mode = SANDBOXED; mode <= SANDBOXED_CONNECT_OUT; mode++) {
			int status = in_child(fatal[i].fn, mode);
			if (!ok(killed_by_sigsys(status),
				"sandboxed%s: %s kills the process (SIGSYS)",
				mode == SANDBOXED_CONNECT_OUT ? " for PostgreSQL" : "",
				fatal[i].what))
				describe(status);
		}
	}

	static const struct {
		int (*fn)(void);
		int mode;
		int want;
		const char *what;
	} refused[] = {
	    {try_inet_socket, SANDBOXED, EAFNOSUPPORT, "an AF_INET socket"},
	    {try_netlink_socket, SANDBOXED, EAFNOSUPPORT, "a netlink socket"},
	    {try_packet_socket, SANDBOXED, EAFNOSUPPORT, "an AF_PACKET socket"},
	    {try_packet_socket, SANDBOXED_CONNECT_OUT, EAFNOSUPPORT, "an AF_PACKET socket"},
	    {try_other_families, SANDBOXED, EAFNOSUPPORT, "sockets of ten other families"},
	    {try_other_families, SANDBOXED_CONNECT_OUT, EAFNOSUPPORT,
	     "sockets of ten other families"},
	    {try_netlink_audit, SANDBOXED_CONNECT_OUT, EPROTONOSUPPORT,
	     "a netlink socket other than NETLINK_ROUTE"},
	    {try_connect, SANDBOXED, ENOSYS, "connect"},
	    {try_bind_unix, SANDBOXED, ENOSYS, "bind"},
	    {try_bind_unix, SANDBOXED_CONNECT_OUT, ENOSYS, "bind to a unix path"},
	    {try_listen, SANDBOXED_CONNECT_OUT, ENOSYS, "listen"},
	    {try_kill, SANDBOXED, ENOSYS, "kill"},
	    {try_tgkill_other, SANDBOXED, ENOSYS, "tgkill to another process"},
	    {try_prctl_other, SANDBOXED, ENOSYS, "prctl(PR_SET_DUMPABLE)"},
	};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		int status = in_child(refused[i].fn, refused[i].mode);
		if (!ok(exited_with(status, refused[i].want),
			"sandboxed%s: %s fails with %s, and the process lives on",
			refused[i].mode == SANDBOXED_CONNECT_OUT ? " for PostgreSQL" : "",
			refused[i].what, strerrorname_np(refused[i].want)))
			describe(status);
	}

	ok(exited_with(in_child(run_connect_out, SANDBOXED_CONNECT_OUT), CHILD_OK),
	   "sandboxed for PostgreSQL: TCP and unix sockets may connect");
	ok(exited_with(in_child(run_netlink_route, SANDBOXED_CONNECT_OUT), CHILD_OK),
	   "... and a netlink routing socket may be bound and named (address sorting)");
	int status = in_child(run_resolve, FREE);
	if (!ok(exited_with(status, CHILD_OK),
		"... and getaddrinfo sorts ::1 and 127.0.0.1 as it does unconfined"))
		describe(status);

	char list[32];
	static const char *const names[] = {"read", "no_such_call", "clone3", "nor_this_one"};
	is_int((int)sandbox_unknown_names(names, 4, list, sizeof list), 2,
	       "names libseccomp does not know are found");
	is_str(list, "no_such_call nor_this_one", "... and listed");
	static const char *const many[] = {"no_such_call_a", "no_such_call_b", "no_such_call_c"};
	sandbox_unknown_names(many, 3, list, sizeof list);
	is_str(list, "no_such_call_a ...", "... a list too long for its buffer ends with ...");
	ok(exited_with(in_child(run_report_unknown, FREE), CHILD_OK),
	   "the filter reports only names libseccomp does not know");
	return done_testing();
}
