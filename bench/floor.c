/*
 * bench/floor: the least a FastCGI backend can do per request, measured by
 * bench/run beside chat-fcgi.
 *
 * nginx's own `return 200` is the ceiling for the whole server; this is the
 * floor for the backend alone: one thread, one epoll set, one read and one
 * write per request on a kept connection, the records walked and nothing
 * else - no libfcgi, no parameter looked at, no JSON, a reply made at start.
 * What it costs per request is what the kernel and the protocol cost on
 * this machine, below which no backend goes; a target it misses is out of
 * any backend's reach here.
 *
 *   floor LENGTH=FILE...
 *
 * It serves the socket on descriptor 0, as spawn-fcgi hands it over, and
 * answers a request whose body is LENGTH bytes with "200 OK" and FILE's
 * bytes as application/json, in the head chat-fcgi gives (the first FILE
 * for a length not named). It runs until killed. A benchmark tool only: no
 * limits, no timeouts, no error answers (a stream it does not follow is
 * closed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fastcgi.h> /* the protocol's constants only: no libfcgi code */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* A record's content is at most 65535 bytes: keep them 8-aligned. */
#define RECORD_MAX 65528u
#define EVENTS_MAX 64
#define READ_MIN   ((size_t)8192)

struct reply {
	size_t body_len;      /* the request body it answers */
	unsigned char *bytes; /* STDOUT records, an empty STDOUT, END_REQUEST */
	size_t len;
};

struct conn {
	int fd;
	unsigned char *buf; /* bytes read and not yet walked */
	size_t len, cap;
	unsigned id; /* the request's, from its begin record */
	int keep;
	size_t body_len; /* of the request so far */
};

static struct reply *replies;
static size_t nreplies;

static void die(const char *what)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static unsigned char *put_header(unsigned char *h, int type, size_t len)
{
	h[0] = FCGI_VERSION_1;
	h[1] = (unsigned char)type;
	h[2] = 0; /* the request id: set per answer */
	h[3] = 1;
	h[4] = (unsigned char)(len >> 8);
	h[5] = (unsigned char)len;
	h[6] = 0;
	h[7] = 0;
	return h + FCGI_HEADER_LEN;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die(path);
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	if (!b)
		die("malloc");
	for (;;) {
		n += fread(b + n, 1, cap - n, f);
		if (n < cap)
			break;
		cap *= 2;
		char *nb = realloc(b, cap);
		if (!nb)
			die("realloc");
		b = nb;
	}
	if (ferror(f) || fclose(f) != 0)
		die(path);
	*len = n;
	return b;
}

static void make_reply(struct reply *r, const char *body, size_t body_len)
{
	char head[256];
	int n = snprintf(head, sizeof head,
			 "Status: 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
			 "Content-Length: %zu\r\nCache-Control: no-store\r\n\r\n",
			 body_len);
	if (n < 0 || (size_t)n >= sizeof head)
		die("head");
	size_t out = (size_t)n + body_len;
	char *all = malloc(out);
	if (!all)
		die("malloc");
	memcpy(all, head, (size_t)n);
	memcpy(all + n, body, body_len);
	size_t records = (out + RECORD_MAX - 1) / RECORD_MAX;
	r->len = out + records * FCGI_HEADER_LEN + 2 * FCGI_HEADER_LEN + 8;
	r->bytes = malloc(r->len);
	if (!r->bytes)
		die("malloc");
	unsigned char *at = r->bytes;
	for (size_t done = 0; done < out;) {
		size_t part = out - done < RECORD_MAX ? out - done : RECORD_MAX;
		at = put_header(at, FCGI_STDOUT, part);
		memcpy(at, all + done, part);
		at += part;
		done += part;
	}
	at = put_header(at, FCGI_STDOUT, 0);
	at = put_header(at, FCGI_END_REQUEST, 8);
	memset(at, 0, 8); /* application status 0, FCGI_REQUEST_COMPLETE */
	free(all);
}

static const struct reply *reply_for(size_t body_len)
{
	for (size_t i = 0; i < nreplies; i++)
		if (replies[i].body_len == body_len)
			return &replies[i];
	return &replies[0];
}

static int answer(struct conn *c)
{
	const struct reply *r = reply_for(c->body_len);
	for (size_t at = 0; at < r->len; at += FCGI_HEADER_LEN) {
		r->bytes[at + 2] = (unsigned char)(c->id >> 8);
		r->bytes[at + 3] = (unsigned char)c->id;
		at += (size_t)r->bytes[at + 4] << 8 | r->bytes[at + 5];
	}
	for (size_t done = 0; done < r->len;) {
		ssize_t n = write(c->fd, r->bytes + done, r->len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/* Walks the whole records read and answers each request whose body ended.
 * Returns -1 to close the connection. */
static int walk(struct conn *c)
{
	size_t at = 0;
	while (c->len - at >= FCGI_HEADER_LEN) {
		const unsigned char *h = c->buf + at;
		size_t clen = (size_t)h[4] << 8 | h[5];
		size_t rec = FCGI_HEADER_LEN + clen + h[6];
		if (c->len - at < rec)
			break;
		if (h[1] == FCGI_BEGIN_REQUEST) {
			if (clen < 8)
				return -1;
			c->id = (unsigned)h[2] << 8 | h[3];
			c->keep = h[FCGI_HEADER_LEN + 2] & FCGI_KEEP_CONN;
			c->body_len = 0;
		} else if (h[1] == FCGI_STDIN && clen > 0) {
			c->body_len += clen;
		} else if (h[1] == FCGI_STDIN) {
			if (answer(c) != 0 || !c->keep)
				return -1;
		} else if (h[1] != FCGI_PARAMS) {
			return -1;
		}
		at += rec;
	}
	memmove(c->buf, c->buf + at, c->len - at);
	c->len -= at;
	return 0;
}

static void conn_close(struct conn *c)
{
	if (close(c->fd) != 0 && errno != EINTR)
		perror("floor: close");
	free(c->buf);
	free(c);
}

/* One read per readable event: the epoll set is level-triggered, so what is
 * left is seen again, and a kept connection costs one read a request. */
static void conn_read(struct conn *c)
{
	if (c->cap - c->len < READ_MIN) {
		size_t cap = c->cap ? c->cap * 2 : 2 * READ_MIN;
		unsigned char *b = realloc(c->buf, cap);
		if (!b) {
			conn_close(c);
			return;
		}
		c->buf = b;
		c->cap = cap;
	}
	ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	c->len += (size_t)n;
	if (walk(c) != 0)
		conn_close(c);
}

static void conn_accept(int ep)
{
	int fd = accept4(0, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return; /* another try at the next event */
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		conn_close(c);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: floor LENGTH=FILE... (serves the socket on fd 0)\n");
		return 2;
	}
	/* nginx closes the connections of requests a client gave up on: a write
	 * to one must fail, not kill the floor. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		die("signal");
	nreplies = (size_t)argc - 1;
	replies = calloc(nreplies, sizeof *replies);
	if (!replies)
		die("calloc");
	for (size_t i = 0; i < nreplies; i++) {
		char *end;
		errno = 0;
		unsigned long long len = strtoull(argv[i + 1], &end, 10);
		if (errno || end == argv[i + 1] || *end != '=') {
			fprintf(stderr, "floor: not LENGTH=FILE: %s\n", argv[i + 1]);
			return 2;
		}
		size_t body_len;
		char *body = slurp(end + 1, &body_len);
		replies[i].body_len = (size_t)len;
		make_reply(&replies[i], body, body_len);
		free(body);
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &lev) != 0)
		die("epoll_ctl");
	fprintf(stderr, "floor: listening on fd 0\n");
	for (;;) {
		struct epoll_event evs[EVENTS_MAX];
		int got = epoll_wait(ep, evs, EVENTS_MAX, -1);
		if (got < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < got; i++) {
			if (evs[i].data.ptr)
				conn_read(evs[i].data.ptr);
			else
				conn_accept(ep);
		}
	}
}
