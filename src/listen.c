#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Connections nginx may queue before they are accepted. A burst past it
 * (a fan-out of 2,000 event streams opens as many connections to the
 * backend at once) fails nginx's connect at once with EAGAIN: a 502
 * (bench/run --rooms, 2026-12-06). The kernel caps it at
 * net.core.somaxconn (4096 on current kernels). */
#define LISTEN_BACKLOG 4096

static void describe(int fd, char *out, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	char host[INET6_ADDRSTRLEN], port[8];

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
		snprintf(out, size, "fd %d", fd);
	} else if (ss.ss_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
		snprintf(out, size, "unix:%.*s", (int)sizeof un->sun_path, un->sun_path);
	} else if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, port, sizeof port,
			       NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
		snprintf(out, size, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
	} else {
		snprintf(out, size, "fd %d", fd);
	}
}

/* A whole decimal number with nothing around it, as systemd writes them. */
static int parse_decimal(const char *s, unsigned long long max, unsigned long long *out)
{
	unsigned long long v = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		unsigned digit = (unsigned)(*s - '0');
		if (v > (max - digit) / 10)
			return -1;
		v = v * 10 + digit;
	}
	*out = v;
	return 0;
}

int socket_activation_check(const char *listen_pid, const char *listen_fds, pid_t self, char *err,
			    size_t err_size)
{
	unsigned long long pid, fds;
	if (!listen_pid)
		return 0;
	/* The variables were meant for another process (a parent that did not
	 * unset them): the socket on fd 3, if any, is not ours. */
	if (parse_decimal(listen_pid, (unsigned long long)INT_MAX, &pid) != 0 || pid == 0 ||
	    pid != (unsigned long long)self)
		return 0;
	if (!listen_fds || parse_decimal(listen_fds, (unsigned long long)INT_MAX, &fds) != 0) {
		snprintf(err, err_size,
			 "LISTEN_FDS is %s%s%s: expected the number of sockets passed",
			 listen_fds ? "'" : "", listen_fds ? listen_fds : "not set",
			 listen_fds ? "'" : "");
		return -1;
	}
	if (fds != 1) {
		snprintf(err, err_size,
			 "systemd passed %llu sockets (LISTEN_FDS=%llu); chat-fcgi serves exactly "
			 "one: give its socket unit a single ListenStream=",
			 fds, fds);
		return -1;
	}
	return 1;
}

/* The sd_listen_fds(3) protocol, by hand: systemd's socket unit passes its
 * listening socket on fd 3. Returns 1 when it did, 0 when not, -1 on error. */
static int adopt_systemd_socket(struct listener *l, const char *spec, char *err, size_t err_size)
{
	int rc = socket_activation_check(getenv("LISTEN_PID"), getenv("LISTEN_FDS"), getpid(), err,
					 err_size);
	/* Nothing started from here may take the variables for its own. */
	if (unsetenv("LISTEN_PID") != 0 || unsetenv("LISTEN_FDS") != 0 ||
	    unsetenv("LISTEN_FDNAMES") != 0) {
		snprintf(err, err_size, "cannot unset LISTEN_PID: %s", strerror(errno));
		return -1;
	}
	if (rc <= 0)
		return rc;
	if (spec) {
		snprintf(err, err_size,
			 "systemd passed a socket (LISTEN_FDS), and --listen %s asks for another: "
			 "drop --listen, or start chat-fcgi without its socket unit",
			 spec);
		return -1;
	}
	int on = 0, type = 0;
	socklen_t len = sizeof on, type_len = sizeof type;
	if (getsockopt(SD_LISTEN_FD, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) != 0 || !on ||
	    getsockopt(SD_LISTEN_FD, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 ||
	    type != SOCK_STREAM) {
		snprintf(err, err_size,
			 "LISTEN_FDS=1, but fd %d is not a listening stream socket: "
			 "use ListenStream= in the socket unit",
			 SD_LISTEN_FD);
		return -1;
	}
	if (fcntl(SD_LISTEN_FD, F_SETFD, FD_CLOEXEC) != 0) {
		snprintf(err, err_size, "fd %d: %s", SD_LISTEN_FD, strerror(errno));
		return -1;
	}
	l->fd = SD_LISTEN_FD;
	char where[sizeof l->name - 32];
	describe(SD_LISTEN_FD, where, sizeof where);
	snprintf(l->name, sizeof l->name, "%s (fd %d from systemd)", where, SD_LISTEN_FD);
	return 1;
}

static int adopt_fd0(struct listener *l, char *err, size_t err_size)
{
	int on = 0;
	socklen_t len = sizeof on;
	if (getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) != 0 || !on) {
		snprintf(err, err_size,
			 "fd 0 is not a listening socket: run under spawn-fcgi, "
			 "or give --listen unix:PATH or --listen HOST:PORT");
		return -1;
	}
	/* spawn-fcgi listens with a backlog of 1024 unless told -b: raised
	 * here, as listen() on a listening socket only changes its backlog.
	 * systemd's Backlog= is left as the socket unit sets it (by default
	 * the kernel's maximum). */
	if (listen(0, LISTEN_BACKLOG) != 0) {
		snprintf(err, err_size, "cannot raise the backlog of fd 0: %s", strerror(errno));
		return -1;
	}
	l->fd = 0;
	char where[sizeof l->name - 16];
	describe(0, where, sizeof where);
	snprintf(l->name, sizeof l->name, "%s (fd 0)", where);
	return 0;
}

/* A socket file left by a server that died is replaced; one that still
 * answers belongs to a live server and is left alone. */
static int clear_unix_path(const struct sockaddr_un *addr, char *err, size_t err_size)
{
	struct stat st;
	if (lstat(addr->sun_path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, err_size, "cannot inspect %s: %s", addr->sun_path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, err_size, "%s exists and is not a socket; not replacing it",
			 addr->sun_path);
		return -1;
	}
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe < 0) {
		snprintf(err, err_size, "socket: %s", strerror(errno));
		return -1;
	}
	int live = connect(probe, (const struct sockaddr *)addr, sizeof *addr) == 0;
	int connect_errno = errno;
	close(probe);
	if (live) {
		snprintf(err, err_size, "%s is in use by a running server", addr->sun_path);
		return -1;
	}
	if (connect_errno != ECONNREFUSED) {
		snprintf(err, err_size, "cannot tell whether %s is in use: %s", addr->sun_path,
			 strerror(connect_errno));
		return -1;
	}
	if (unlink(addr->sun_path) != 0 && errno != ENOENT) {
		snprintf(err, err_size, "cannot remove the stale socket %s: %s", addr->sun_path,
			 strerror(errno));
		return -1;
	}
	return 0;
}

static int open_unix(struct listener *l, const char *path, mode_t mode, char *err, size_t err_size)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof addr.sun_path) {
		snprintf(err, err_size, "the socket path must be 1 to %zu bytes long",
			 sizeof addr.sun_path - 1);
		return -1;
	}
	memcpy(addr.sun_path, path, n + 1);
	if (clear_unix_path(&addr, err, err_size) != 0)
		return -1;

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, err_size, "socket: %s", strerror(errno));
		return -1;
	}
	/* Nobody may connect between bind and chmod: start with no access.
	 * umask is per process, and no other thread runs yet. */
	mode_t old = umask(0777);
	int rc = bind(fd, (const struct sockaddr *)&addr, sizeof addr);
	int bind_errno = errno;
	umask(old);
	if (rc != 0) {
		snprintf(err, err_size, "cannot bind %s: %s", path, strerror(bind_errno));
		close(fd);
		return -1;
	}
	struct stat st;
	if (chmod(path, mode) != 0 || stat(path, &st) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
		snprintf(err, err_size, "cannot set up %s: %s", path, strerror(errno));
		unlink(path);
		close(fd);
		return -1;
	}
	l->unix_path = strdup(path);
	if (!l->unix_path) {
		snprintf(err, err_size, "out of memory");
		unlink(path);
		close(fd);
		return -1;
	}
	l->fd = fd;
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	snprintf(l->name, sizeof l->name, "unix:%s", path);
	return 0;
}

static int open_tcp(struct listener *l, const char *spec, char *err, size_t err_size)
{
	/* HOST:PORT, with [v6-address]:PORT for IPv6. */
	const char *colon = strrchr(spec, ':');
	char host[256];
	size_t host_len = (size_t)(colon - spec);
	const char *h = spec;
	if (host_len >= 2 && spec[0] == '[' && spec[host_len - 1] == ']') {
		h++;
		host_len -= 2;
	}
	if (host_len == 0 || host_len >= sizeof host || !colon[1]) {
		snprintf(err, err_size, "--listen %s: expected HOST:PORT", spec);
		return -1;
	}
	memcpy(host, h, host_len);
	host[host_len] = '\0';

	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res;
	int gai = getaddrinfo(host, colon + 1, &hints, &res);
	if (gai != 0) {
		snprintf(err, err_size, "--listen %s: %s", spec, gai_strerror(gai));
		return -1;
	}
	int fd = -1, saved = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		int one = 1;
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
		    bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, err_size, "cannot listen on %s: %s", spec, strerror(saved));
		return -1;
	}
	l->fd = fd;
	describe(fd, l->name, sizeof l->name);
	return 0;
}

int listener_open(struct listener *l, const char *spec, mode_t mode, char *err, size_t err_size)
{
	memset(l, 0, sizeof *l);
	l->fd = -1;
	int rc = adopt_systemd_socket(l, spec, err, err_size);
	if (rc < 0)
		return -1;
	if (rc > 0)
		rc = 0;
	else if (!spec)
		rc = adopt_fd0(l, err, err_size);
	else if (strncmp(spec, "unix:", 5) == 0)
		rc = open_unix(l, spec + 5, mode, err, err_size);
	else
		rc = open_tcp(l, spec, err, err_size);
	if (rc != 0)
		return -1;

	/* Threads poll before they accept, so a connection another thread took
	 * first must not block them in accept(). */
	int flags = fcntl(l->fd, F_GETFL);
	if (flags < 0 || fcntl(l->fd, F_SETFL, flags | O_NONBLOCK) != 0) {
		snprintf(err, err_size, "cannot make the socket non-blocking: %s", strerror(errno));
		listener_close(l);
		return -1;
	}
	return 0;
}

/* Removes the socket file only if it is still the one this process made:
 * another server may have replaced it meanwhile. */
static void unlink_if_ours(const struct listener *l)
{
	struct stat st;
	if (stat(l->unix_path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
		unlink(l->unix_path);
}

void listener_refuse(struct listener *l)
{
	/* dup2 swaps an unbound socket in atomically: a thread about to accept
	 * gets EINVAL, and the descriptor number is never reused meanwhile. */
	int dummy = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (dummy < 0)
		return; /* the socket then closes at exit, a little later */
	if (dup2(dummy, l->fd) < 0) {
		close(dummy);
		return;
	}
	close(dummy);
	if (l->unix_path)
		unlink_if_ours(l);
}

void listener_close(struct listener *l)
{
	if (l->unix_path) {
		unlink_if_ours(l);
		free(l->unix_path);
		l->unix_path = NULL;
	}
	if (l->fd > 0)
		close(l->fd);
	l->fd = -1;
}
