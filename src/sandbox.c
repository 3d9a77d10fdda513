/* CLONE_THREAD */
#define _GNU_SOURCE

#include "sandbox.h"

#include <errno.h>
#include <seccomp.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* LeakSanitizer's exit check clones a tracer and ptraces every thread; a
 * filter strict enough to matter would kill it. Sanitizer builds are for
 * tests only, so they run unconfined. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANDBOX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define SANDBOX_SANITIZED 1
#endif
#endif

/*
 * Calls allowed with any arguments. Generous on purpose: what the server
 * does now and what it is growing into (an epoll loop, held requests, a
 * SQLite store in WAL mode). Missing from it, so fatal: execve, fork,
 * ptrace, connect (unless the store is PostgreSQL), bind, listen, kill, mount, chroot, setuid and
 * the rest of what an intruder would want next.
 */
static const char *const allowed[] = {
    /* reading and writing connections, pipes and files */
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "lseek",
    "close", "dup", "dup2", "dup3", "fcntl", "sendfile",
    /* sockets already open: the listening one and what it accepts */
    "accept", "accept4", "recvfrom", "sendto", "recvmsg", "sendmsg", "recvmmsg", "sendmmsg",
    "shutdown", "getsockopt", "setsockopt", "getsockname", "getpeername",
    /* waiting (libfcgi closes connections with select) */
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "pipe", "pipe2",
    "timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd4", "timer_create",
    "timer_settime", "timer_gettime", "timer_delete",
    /* noticing another process's writes to a shared store */
    "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    /* threads and memory (clone, mmap and mprotect are below, with conditions) */
    "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "munmap", "madvise",
    "mremap", "brk", "membarrier", "sched_yield", "sched_getaffinity", "gettid", "getpid",
    "getppid", "exit", "exit_group", "restart_syscall",
    /* signals */
    "rt_sigprocmask", "rt_sigtimedwait", "rt_sigaction", "rt_sigreturn", "sigaltstack",
    /* time, randomness, small facts about the system */
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "getrandom", "uname", "sysinfo", "getuid", "geteuid", "getgid", "getegid", "getrlimit",
    /* files: a SQLite database with its -wal and -shm files */
    "open", "openat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "fsync",
    "fdatasync", "ftruncate", "fallocate", "flock", "unlink", "unlinkat", "rename", "renameat",
    "access", "faccessat", "faccessat2", "getcwd", "readlink", "readlinkat", "fchown", "fchmod",
    "umask"};

/* Adds one rule; -1 (with err filled) if libseccomp refused it. */
static int add(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n_args,
	       const struct scmp_arg_cmp *args, char *err, size_t err_size)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0; /* not a call of this architecture (stat on arm64) */
	int rc = seccomp_rule_add_array(ctx, action, nr, n_args, args);
	if (rc != 0) {
		snprintf(err, err_size, "sandbox: cannot allow %s: %s", name, strerror(-rc));
		return -1;
	}
	return 0;
}

static int add_rules(scmp_filter_ctx ctx, bool connect_out, char *err, size_t err_size)
{
	for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
		if (add(ctx, SCMP_ACT_ALLOW, allowed[i], 0, NULL, err, err_size) != 0)
			return -1;

	/* No new executable memory, so no code can be loaded or written at run
	 * time (the spirit of systemd's MemoryDenyWriteExecute). */
	const struct scmp_arg_cmp no_exec = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0);
	if (add(ctx, SCMP_ACT_ALLOW, "mmap", 1, &no_exec, err, err_size) != 0 ||
	    add(ctx, SCMP_ACT_ALLOW, "mprotect", 1, &no_exec, err, err_size) != 0)
		return -1;

	/* Threads, but no new process. clone3 passes its flags in memory, out
	 * of a filter's reach: it fails with ENOSYS, and the C library falls
	 * back to clone, whose flags are checked here. */
	const struct scmp_arg_cmp thread = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD);
	if (add(ctx, SCMP_ACT_ALLOW, "clone", 1, &thread, err, err_size) != 0 ||
	    add(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL, err, err_size) != 0)
		return -1;

	/* At shutdown an unbound unix socket replaces the listening one (see
	 * listener_refuse); with connect and bind forbidden it reaches nothing. */
	const struct scmp_arg_cmp local = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
	if (add(ctx, SCMP_ACT_ALLOW, "socket", 1, &local, err, err_size) != 0)
		return -1;

	/* A PostgreSQL store connects again after the server restarts, over
	 * TCP or a unix socket (and resolves the host's name). */
	if (connect_out) {
		static const int families[] = {AF_INET, AF_INET6};
		for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
			const struct scmp_arg_cmp fam = SCMP_A0(SCMP_CMP_EQ, families[i]);
			if (add(ctx, SCMP_ACT_ALLOW, "socket", 1, &fam, err, err_size) != 0)
				return -1;
		}
		if (add(ctx, SCMP_ACT_ALLOW, "connect", 0, NULL, err, err_size) != 0)
			return -1;
	}

	/* Signals to its own threads only (abort, pthread_kill), never to
	 * another process. */
	const struct scmp_arg_cmp own = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid());
	if (add(ctx, SCMP_ACT_ALLOW, "tgkill", 1, &own, err, err_size) != 0)
		return -1;

	/* Naming a thread (for top -H and gdb); no other prctl. */
	static const int prctls[] = {PR_SET_NAME, PR_GET_NAME};
	for (size_t i = 0; i < sizeof prctls / sizeof prctls[0]; i++) {
		const struct scmp_arg_cmp op = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)prctls[i]);
		if (add(ctx, SCMP_ACT_ALLOW, "prctl", 1, &op, err, err_size) != 0)
			return -1;
	}

	/* Reading limits, not raising them. */
	const struct scmp_arg_cmp no_new_limit = SCMP_A2(SCMP_CMP_EQ, 0);
	if (add(ctx, SCMP_ACT_ALLOW, "prlimit64", 1, &no_new_limit, err, err_size) != 0)
		return -1;

	/* The C library asks whether stderr is a terminal, and how much a
	 * socket holds; no other ioctl. */
	static const unsigned long ioctls[] = {TCGETS, FIONREAD, FIONBIO};
	for (size_t i = 0; i < sizeof ioctls / sizeof ioctls[0]; i++) {
		const struct scmp_arg_cmp req = SCMP_A1(SCMP_CMP_EQ, ioctls[i]);
		if (add(ctx, SCMP_ACT_ALLOW, "ioctl", 1, &req, err, err_size) != 0)
			return -1;
	}
	return 0;
}

enum sandbox_support sandbox_support(void)
{
#ifdef SANDBOX_SANITIZED
	return SANDBOX_UNSUPPORTED_SANITIZER;
#else
	return SANDBOX_SUPPORTED;
#endif
}

int sandbox_enter(char *err, size_t err_size)
{
	return sandbox_enter_with(false, err, err_size);
}

int sandbox_enter_with(bool connect_out, char *err, size_t err_size)
{
	if (sandbox_support() != SANDBOX_SUPPORTED) {
		snprintf(err, err_size, "sandbox: a sanitizer build cannot be confined");
		return -1;
	}
	/* Anything not allowed kills the whole process, not just the thread
	 * that tried: a half-dead server would be worse. */
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx) {
		snprintf(err, err_size,
			 "sandbox: seccomp filters are not available here (under valgrind, or a "
			 "kernel without them)");
		return -1;
	}
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc != 0) {
		snprintf(err, err_size, "sandbox: cannot cover every thread: %s", strerror(-rc));
		seccomp_release(ctx);
		return -1;
	}
	if (add_rules(ctx, connect_out, err, err_size) != 0) {
		seccomp_release(ctx);
		return -1;
	}
	rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) {
		snprintf(err, err_size, "sandbox: the kernel refused the seccomp filter: %s",
			 strerror(-rc));
		return -1;
	}
	return 0;
}
