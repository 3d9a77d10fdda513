/* The seccomp filter chat-fcgi loads (src/sandbox.c): each case forks, the
 * child loads the filter and tries one thing, the parent reads how the child
 * ended. Allowed things end in exit 0, forbidden ones in SIGSYS. */
#define _GNU_SOURCE /* pipe2, mmap flags */

#include "sandbox.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

/* Exit codes of a child that survived; SIGSYS means the filter killed it. */
#define CHILD_OK          0
#define CHILD_NO_SANDBOX  90
#define CHILD_CALL_FAILED 91

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

static int run_execve(void)
{
	char *argv[] = {"/bin/true", NULL};
	char *envp[] = {NULL};
	execve(argv[0], argv, envp);
	return -1;
}

static int run_fork(void)
{
	pid_t pid = fork();
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

static int run_mmap_exec(void)
{
	mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return -1;
}

static int run_inet_socket(void)
{
	socket(AF_INET, SOCK_STREAM, 0);
	return -1;
}

static int run_connect(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0); /* allowed, for listener_refuse */
	if (fd < 0)
		return -1;
	struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = "/nonexistent"};
	connect(fd, (const struct sockaddr *)&addr, sizeof addr);
	return -1;
}

static int run_kill(void)
{
	kill(getppid(), 0);
	return -1;
}

static int run_tgkill_other(void)
{
	/* The parent's main thread: its tid is its pid. */
	syscall(SYS_tgkill, getppid(), getppid(), 0);
	return -1;
}

static int run_raise(void)
{
	/* A signal to itself is allowed (abort() needs it); SIGURG is
	 * ignored by default, so the child lives on. */
	return raise(SIGURG);
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
	return run_connect() == -1 ? 0 : -1;
}

enum { FREE = 0, SANDBOXED = 1, SANDBOXED_CONNECT_OUT = 2 };

/* Runs fn in a child, sandboxed (with connect_out or not) or not; returns
 * the wait status. */
static int in_child(int (*fn)(void), int mode)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char err[256];
		if (mode != FREE &&
		    sandbox_enter_with(mode == SANDBOXED_CONNECT_OUT, err, sizeof err) != 0) {
			fprintf(stderr, "%s\n", err);
			_exit(CHILD_NO_SANDBOX);
		}
		_exit(fn() == 0 ? CHILD_OK : CHILD_CALL_FAILED);
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

static bool exited_ok(int status)
{
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK;
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

	ok(exited_ok(in_child(serve_like, true)),
	   "sandboxed: memory, pipes, time, files, threads still work");
	ok(exited_ok(in_child(run_raise, true)), "sandboxed: a signal to itself is allowed");

	static const struct {
		int (*fn)(void);
		const char *what;
	} forbidden[] = {
	    {run_execve, "execve"},
	    {run_fork, "fork (a clone without CLONE_THREAD)"},
	    {run_mprotect_exec, "mprotect to PROT_EXEC"},
	    {run_mmap_exec, "mmap with PROT_EXEC"},
	    {run_inet_socket, "an AF_INET socket"},
	    {run_connect, "connect"},
	    {run_kill, "kill"},
	    {run_tgkill_other, "tgkill to another process"},
	};
	for (size_t i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++) {
		/* The same call without the filter must not die: then the death
		 * below is the filter's doing. */
		int free_status = in_child(forbidden[i].fn, false);
		ok(!killed_by_sigsys(free_status), "unconfined: %s does not die",
		   forbidden[i].what);
		int status = in_child(forbidden[i].fn, true);
		if (!ok(killed_by_sigsys(status), "sandboxed: %s kills the process with SIGSYS",
			forbidden[i].what))
			diag("wait status %#x", (unsigned)status);
	}
	ok(exited_ok(in_child(run_connect_out, SANDBOXED_CONNECT_OUT)),
	   "sandboxed for a PostgreSQL store: TCP and unix sockets may connect");
	ok(killed_by_sigsys(in_child(run_execve, SANDBOXED_CONNECT_OUT)),
	   "... and execve still kills the process");
	ok(killed_by_sigsys(in_child(run_fork, SANDBOXED_CONNECT_OUT)), "... and so does fork");
	return done_testing();
}
