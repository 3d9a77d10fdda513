/* CLONE_THREAD */
#define _GNU_SOURCE

#include "sandbox.h"

#include <errno.h>
#include <linux/netlink.h>
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
 * What a call the filter does not allow gets. A library may try such a call
 * on a normal path (a newer C library trying a newer call, a resolver
 * sorting addresses), so the answer is an error, never death: ENOSYS, as
 * from a kernel without the call, because that is the error the C library
 * takes its fallbacks on (clone3 to clone, faccessat2 to faccessat, statx to
 * fstatat). The same answer covers calls this libseccomp does not know.
 */
#define REFUSED SCMP_ACT_ERRNO(ENOSYS)

/*
 * What the calls that only an intruder makes get: the whole process ends
 * with SIGSYS, not just the thread that tried (a half-dead server would be
 * worse), and the supervisor starts a fresh one. Nothing on the server's
 * paths makes them, and each is how a memory bug becomes a takeover:
 * running a program (execve, execveat), a new process (fork, vfork, clone
 * without CLONE_THREAD), reading or steering another process (ptrace,
 * process_vm_readv, process_vm_writev), and new executable memory
 * (mmap, mprotect or pkey_mprotect with PROT_EXEC), which is how injected
 * code is made to run. Everything the server runs is loaded before the
 * filter (libpq when its store opens), so no library maps code later.
 */
#define FATAL SCMP_ACT_KILL_PROCESS

static const char *const fatal[] = {
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev"};

/*
 * Calls allowed with any arguments. Generous on purpose: what the server
 * does now and what it is growing into (an epoll loop, held requests, a
 * SQLite store in WAL mode).
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
    /* threads and memory (clone, mmap and mprotect are below, with
     * conditions); a C library built for shadow stacks maps one for each
     * new thread */
    "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "munmap", "madvise",
    "mremap", "brk", "membarrier", "sched_yield", "sched_getaffinity", "gettid", "getpid",
    "getppid", "exit", "exit_group", "restart_syscall", "map_shadow_stack",
    /* signals */
    "rt_sigprocmask", "rt_sigtimedwait", "rt_sigaction", "rt_sigreturn", "sigaltstack",
    /* time, randomness, small facts about the system */
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "getrandom", "uname", "sysinfo", "getuid", "geteuid", "getgid", "getegid", "getrlimit",
    /* files: a SQLite database with its -wal and -shm files; for a
     * PostgreSQL store, the resolver's /etc/hosts, resolv.conf, gai.conf and
     * nsswitch.conf */
    "open", "openat", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "fsync",
    "fdatasync", "ftruncate", "fallocate", "flock", "unlink", "unlinkat", "rename", "renameat",
    "access", "faccessat", "faccessat2", "getcwd", "readlink", "readlinkat", "fchown", "fchmod",
    "umask"};

/* A space-separated list of names in a caller's buffer; names that do not
 * fit are left out, and it ends with "..." then. */
struct names {
	char *buf;
	size_t size;
	size_t len;
	bool cut;
};

static bool names_has(const struct names *l, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = l->buf; l->len > 0 && (p = strstr(p, name)) != NULL; p += n)
		if ((p == l->buf || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return true;
	return false;
}

static void names_add(struct names *l, const char *name)
{
	static const char more[] = " ...";
	if (l->cut || l->size == 0 || names_has(l, name))
		return;
	size_t need = (l->len > 0) + strlen(name);
	if (l->len + need + sizeof more <= l->size) {
		snprintf(l->buf + l->len, l->size - l->len, "%s%s", l->len > 0 ? " " : "", name);
		l->len += need;
		return;
	}
	l->cut = true;
	const char *tail = l->len > 0 ? more : more + 1;
	if (l->len + strlen(tail) < l->size) {
		snprintf(l->buf + l->len, l->size - l->len, "%s", tail);
		l->len += strlen(tail);
	}
}

static struct names names_in(char *buf, size_t size)
{
	if (size > 0)
		buf[0] = '\0';
	return (struct names){.buf = buf, .size = size, .len = 0, .cut = false};
}

size_t sandbox_unknown_names(const char *const *names, size_t n, char *list, size_t size)
{
	struct names l = names_in(list, size);
	size_t unknown = 0;
	for (size_t i = 0; i < n; i++) {
		if (seccomp_syscall_resolve_name(names[i]) != __NR_SCMP_ERROR)
			continue;
		unknown++;
		names_add(&l, names[i]);
	}
	return unknown;
}

/* The filter being built, and the names this libseccomp did not know. */
struct build {
	scmp_filter_ctx ctx;
	struct names unknown;
	char *err;
	size_t err_size;
};

/* Adds one rule; -1 (with err filled) if libseccomp refused it. */
static int add(struct build *b, uint32_t action, const char *name, unsigned n_args,
	       const struct scmp_arg_cmp *args)
{
	/* A name this libseccomp does not know is left to the default, and
	 * reported. A name it knows resolves even where this architecture
	 * lacks the call (stat on arm64): libseccomp then adds what the
	 * architecture has for it, or nothing. */
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR) {
		names_add(&b->unknown, name);
		return 0;
	}
	int rc = seccomp_rule_add_array(b->ctx, action, nr, n_args, args);
	if (rc != 0) {
		snprintf(b->err, b->err_size, "sandbox: cannot add a rule for %s: %s", name,
			 strerror(-rc));
		return -1;
	}
	return 0;
}

/*
 * Adds action for every value of argument arg of call name outside values[]
 * (sorted, ascending). libseccomp merges rules of one call that overlap, so
 * the rules for the values outside must not overlap those for the values
 * inside; and a rule compares an argument once, so each gap between two
 * values inside is covered by aligned blocks of values (a mask each).
 */
static int add_outside(struct build *b, uint32_t action, const char *name, unsigned arg,
		       const scmp_datum_t *values, size_t n)
{
	if (values[0] > 0) {
		const struct scmp_arg_cmp below = SCMP_CMP(arg, SCMP_CMP_LT, values[0]);
		if (add(b, action, name, 1, &below) != 0)
			return -1;
	}
	for (size_t i = 0; i + 1 < n; i++) {
		scmp_datum_t lo = values[i] + 1, hi = values[i + 1] - 1;
		while (lo <= hi) {
			scmp_datum_t size = 1;
			while (lo % (size * 2) == 0 && lo + size * 2 - 1 <= hi)
				size *= 2;
			const struct scmp_arg_cmp block =
			    SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, ~(size - 1), lo);
			if (add(b, action, name, 1, &block) != 0)
				return -1;
			lo += size;
		}
	}
	const struct scmp_arg_cmp above = SCMP_CMP(arg, SCMP_CMP_GT, values[n - 1]);
	return add(b, action, name, 1, &above);
}

/*
 * Sockets. The listening socket is open before the filter; at shutdown an
 * unbound unix socket replaces it (see listener_refuse). A PostgreSQL store
 * connects again after the database restarts, over TCP or a unix socket,
 * and resolves its host's name each time: the C library tries nscd over a
 * unix socket, reads /etc/hosts (or asks DNS over UDP), and sorts two or
 * more addresses (RFC 6724, in glibc's getaddrinfo). To sort, it reads the
 * machine's addresses over a NETLINK_ROUTE socket (socket, bind to the
 * kernel's address of it, getsockname, sendto, recvmsg) and connects a UDP
 * socket to each address found, to learn its source. Reading addresses
 * needs no privilege; changing them needs CAP_NET_ADMIN, which the service
 * has not (CapabilityBoundingSet= in its unit). Any other family fails with
 * EAFNOSUPPORT, as on a kernel without it, and other netlink protocols with
 * EPROTONOSUPPORT; glibc sorts without the machine's addresses then.
 */
static int add_sockets(struct build *b, bool connect_out)
{
	static const scmp_datum_t local[] = {AF_UNIX};
	static const scmp_datum_t network[] = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK};
	const scmp_datum_t *families = connect_out ? network : local;
	size_t n = connect_out ? sizeof network / sizeof network[0] : 1;
	for (size_t i = 0; i < n; i++) {
		if (families[i] == AF_NETLINK) {
			const struct scmp_arg_cmp route[] = {SCMP_A0(SCMP_CMP_EQ, AF_NETLINK),
							     SCMP_A2(SCMP_CMP_EQ, NETLINK_ROUTE)};
			const struct scmp_arg_cmp other[] = {SCMP_A0(SCMP_CMP_EQ, AF_NETLINK),
							     SCMP_A2(SCMP_CMP_NE, NETLINK_ROUTE)};
			if (add(b, SCMP_ACT_ALLOW, "socket", 2, route) != 0 ||
			    add(b, SCMP_ACT_ERRNO(EPROTONOSUPPORT), "socket", 2, other) != 0)
				return -1;
			continue;
		}
		const struct scmp_arg_cmp fam = SCMP_A0(SCMP_CMP_EQ, families[i]);
		if (add(b, SCMP_ACT_ALLOW, "socket", 1, &fam) != 0)
			return -1;
	}
	if (add_outside(b, SCMP_ACT_ERRNO(EAFNOSUPPORT), "socket", 0, families, n) != 0)
		return -1;
	if (!connect_out)
		return 0;
	/* bind is for the netlink socket only: no other address has the size
	 * of a sockaddr_nl (an IPv4 or IPv6 one is refused as too short, a unix
	 * one leaves room for 9 bytes of name), and listen stays refused. */
	const scmp_datum_t nl_len = sizeof(struct sockaddr_nl);
	const struct scmp_arg_cmp nl_size = SCMP_A2(SCMP_CMP_EQ, nl_len);
	if (add(b, SCMP_ACT_ALLOW, "bind", 1, &nl_size) != 0 ||
	    add(b, SCMP_ACT_ALLOW, "connect", 0, NULL) != 0)
		return -1;
	return 0;
}

static int add_rules(struct build *b, bool connect_out)
{
	for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
		if (add(b, SCMP_ACT_ALLOW, allowed[i], 0, NULL) != 0)
			return -1;
	for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
		if (add(b, FATAL, fatal[i], 0, NULL) != 0)
			return -1;

	/* No new executable memory, so no code can be loaded or written at run
	 * time (the spirit of systemd's MemoryDenyWriteExecute). */
	const struct scmp_arg_cmp no_exec = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0);
	const struct scmp_arg_cmp exec = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC);
	if (add(b, SCMP_ACT_ALLOW, "mmap", 1, &no_exec) != 0 ||
	    add(b, FATAL, "mmap", 1, &exec) != 0 ||
	    add(b, SCMP_ACT_ALLOW, "mprotect", 1, &no_exec) != 0 ||
	    add(b, FATAL, "mprotect", 1, &exec) != 0 ||
	    add(b, FATAL, "pkey_mprotect", 1, &exec) != 0)
		return -1;

	/* Threads, but no new process. clone3 passes its flags in memory, out
	 * of a filter's reach: it is not allowed, so it fails with ENOSYS, and
	 * the C library falls back to clone, whose flags are checked here. */
	const struct scmp_arg_cmp thread = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD);
	const struct scmp_arg_cmp process = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0);
	if (add(b, SCMP_ACT_ALLOW, "clone", 1, &thread) != 0 ||
	    add(b, FATAL, "clone", 1, &process) != 0)
		return -1;

	if (add_sockets(b, connect_out) != 0)
		return -1;

	/* Signals to its own threads only (abort, pthread_kill), never to
	 * another process. */
	const struct scmp_arg_cmp own = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid());
	if (add(b, SCMP_ACT_ALLOW, "tgkill", 1, &own) != 0)
		return -1;

	/* Naming a thread (for top -H and gdb); no other prctl. */
	static const int prctls[] = {PR_SET_NAME, PR_GET_NAME};
	for (size_t i = 0; i < sizeof prctls / sizeof prctls[0]; i++) {
		const struct scmp_arg_cmp op = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)prctls[i]);
		if (add(b, SCMP_ACT_ALLOW, "prctl", 1, &op) != 0)
			return -1;
	}

	/* Reading limits, not raising them. */
	const struct scmp_arg_cmp no_new_limit = SCMP_A2(SCMP_CMP_EQ, 0);
	if (add(b, SCMP_ACT_ALLOW, "prlimit64", 1, &no_new_limit) != 0)
		return -1;

	/* The C library asks whether stderr is a terminal, and how much a
	 * socket holds; no other ioctl. */
	static const unsigned long ioctls[] = {TCGETS, FIONREAD, FIONBIO};
	for (size_t i = 0; i < sizeof ioctls / sizeof ioctls[0]; i++) {
		const struct scmp_arg_cmp req = SCMP_A1(SCMP_CMP_EQ, ioctls[i]);
		if (add(b, SCMP_ACT_ALLOW, "ioctl", 1, &req) != 0)
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
	char unknown[1];
	return sandbox_enter_with(false, unknown, sizeof unknown, err, err_size);
}

int sandbox_enter_with(bool connect_out, char *unknown, size_t unknown_size, char *err,
		       size_t err_size)
{
	struct build b = {
	    .unknown = names_in(unknown, unknown_size), .err = err, .err_size = err_size};
	if (sandbox_support() != SANDBOX_SUPPORTED) {
		snprintf(err, err_size, "sandbox: a sanitizer build cannot be confined");
		return -1;
	}
	scmp_filter_ctx ctx = seccomp_init(REFUSED);
	if (!ctx) {
		snprintf(err, err_size,
			 "sandbox: seccomp filters are not available here (under valgrind, or a "
			 "kernel without them)");
		return -1;
	}
	/* A call through another architecture's entry (int 0x80 from x86-64)
	 * bypasses every rule here: only an intruder makes one. */
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, FATAL);
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc != 0) {
		snprintf(err, err_size, "sandbox: cannot set up the filter: %s", strerror(-rc));
		seccomp_release(ctx);
		return -1;
	}
	b.ctx = ctx;
	if (add_rules(&b, connect_out) != 0) {
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
