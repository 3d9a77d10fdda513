/*
 * The fan-out load of `bench/run --rooms`: N long-pollers held in one room
 * through nginx while one client posts to it, all on one epoll loop, so a
 * thousand sockets cost one process and no thread each.
 *
 *   fanout [--events] [--post-port P] PORT ROOM POLLERS SECONDS INTERVAL_MS [BACKEND_PID]
 *
 * With --post-port the posts go to another port: another node sharing the
 * store (bench/cross-node), so what is measured is delivery across nodes.
 *
 * With --events the "pollers" are event streams instead: each opens
 * GET /chat/events?room=ROOM&after=NEXT once and reads the entries' events
 * as they come, and "held" is the backend's count of open streams.
 *
 * Each poller keeps one HTTP/1.1 connection and asks
 * GET /chat/messages?room=ROOM&after=NEXT&wait=30 again as soon as it is
 * answered. Once the backend reports all POLLERS held (its metrics), the
 * resident memory of BACKEND_PID is read, then a post goes out every
 * INTERVAL_MS for SECONDS (on a kept connection of its own, the next one
 * as soon as the last is answered when it runs late). For every post and
 * poller it records when the poller's answer held the post's entries,
 * against the moment the post was answered. It prints one line:
 *
 *   FANOUT key=value ...   (latencies in microseconds)
 *
 * Exit status: 0 when every poller got every post exactly once with no
 * error, 1 otherwise, 2 for bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_S      30
#define HELD_WAIT_S 20 /* for all pollers to be held before posting */
#define DRAIN_S     10 /* for the last post to reach every poller */

struct client {
	int fd;
	int port;
	bool connected, reading;
	char *out;
	size_t out_len, out_off;
	char *in;
	size_t in_len, in_cap;
	int64_t after;
	/* --events: the stream's head is read; its chunked body taken apart. */
	bool head_done;
	size_t chunk_left; /* data bytes of the current chunk still to come */
	int chunk_state;   /* 0: size line, 1: data, 2: the CRLF after data */
	char *ev;          /* event text not yet split into events */
	size_t ev_len, ev_cap;
	unsigned sent_on_conn; /* requests sent on this connection */
	double sent_at;
	bool done;
};

static int port;
static bool events_mode;
static const char *room;
static int epfd;
static unsigned long errors, busy, reconnects, dupes;
static int errors_shown;

static double now(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
		perror("fanout: clock_gettime");
		exit(1);
	}
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		fputs("fanout: out of memory\n", stderr);
		exit(1);
	}
	return q;
}

static void error_seen(const char *what, const char *detail, size_t len)
{
	errors++;
	if (errors_shown++ < 5)
		fprintf(stderr, "fanout: %s: %.*s\n", what, (int)(len > 300 ? 300 : len),
			detail ? detail : "");
}

/*
 * Is the response in buf complete? Returns 1 with its status, body (dechunked
 * into *body, malloc'd) and whether the connection stays open; 0 when more
 * is needed; -1 when it cannot be parsed. At eof, a body without length ends.
 */
static int parse_response(const char *buf, size_t len, bool eof, int *status, char **body,
			  size_t *body_len, bool *keep)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	if (!end)
		return eof ? -1 : 0;
	size_t head_len = (size_t)(end - buf) + 4;
	if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
		return -1;
	*status = atoi(buf + 9);
	*keep = buf[7] == '1';
	long long clen = -1;
	bool chunked = false;
	for (const char *p = memchr(buf, '\n', head_len); p && p < end;
	     p = memchr(p, '\n', (size_t)(end - p))) {
		p++;
		if (strncasecmp(p, "Content-Length:", 15) == 0)
			clen = atoll(p + 15);
		else if (strncasecmp(p, "Transfer-Encoding:", 18) == 0)
			chunked = strncasecmp(p + 18 + strspn(p + 18, " "), "chunked", 7) == 0;
		else if (strncasecmp(p, "Connection:", 11) == 0)
			*keep = strncasecmp(p + 11 + strspn(p + 11, " "), "close", 5) != 0;
	}
	const char *b = buf + head_len;
	size_t blen = len - head_len;
	if (chunked) {
		char *out = NULL;
		size_t out_len = 0, i = 0;
		for (;;) {
			const char *nl = memmem(b + i, blen - i, "\r\n", 2);
			if (!nl) {
				free(out);
				return eof ? -1 : 0;
			}
			size_t n = strtoul(b + i, NULL, 16);
			size_t data = (size_t)(nl - b) + 2;
			if (blen < data + n + 2) {
				free(out);
				return eof ? -1 : 0;
			}
			if (n == 0)
				break;
			out = xrealloc(out, out_len + n + 1);
			memcpy(out + out_len, b + data, n);
			out_len += n;
			i = data + n + 2;
		}
		*body = out ? out : xrealloc(NULL, 1);
		(*body)[out_len] = '\0';
		*body_len = out_len;
		return 1;
	}
	if (clen >= 0) {
		if (blen < (size_t)clen)
			return eof ? -1 : 0;
		blen = (size_t)clen;
	} else if (!eof) {
		return 0;
	} else {
		*keep = false;
	}
	*body = xrealloc(NULL, blen + 1);
	memcpy(*body, b, blen);
	(*body)[blen] = '\0';
	*body_len = blen;
	return 1;
}

static int64_t json_int(const char *body, const char *key)
{
	const char *p = strstr(body, key);
	return p ? strtoll(p + strlen(key), NULL, 10) : -1;
}

static int connect_to(bool blocking, int to_port)
{
	int fd = socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK) | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("fanout: socket");
		exit(1);
	}
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		perror("fanout: TCP_NODELAY");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)to_port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
		perror("fanout: connect");
		close(fd);
		return -1;
	}
	return fd;
}

/* One blocking GET (before and outside the measurement). */
static char *get(const char *path, int *status)
{
	int fd = connect_to(true, port);
	if (fd < 0)
		return NULL;
	char req[512];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
	if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
		close(fd);
		return NULL;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (cap - len < 4096)
			buf = xrealloc(buf, cap = cap * 2 + 8192);
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	char *body = NULL;
	size_t body_len;
	bool keep;
	if (parse_response(buf ? buf : "", len, true, status, &body, &body_len, &keep) != 1)
		*status = 0;
	free(buf);
	return body;
}

static void watch(struct client *c, size_t id, uint32_t events, int op)
{
	struct epoll_event ev = {.events = events, .data.u64 = id};
	if (epoll_ctl(epfd, op, c->fd, &ev) != 0) {
		perror("fanout: epoll_ctl");
		exit(1);
	}
}

/* Sends c->out, on its kept connection or a new one. */
static void send_request(struct client *c, size_t id)
{
	c->out_off = 0;
	c->in_len = 0;
	c->reading = false;
	c->sent_at = now();
	if (c->fd < 0) {
		c->fd = connect_to(false, c->port);
		if (c->fd < 0) {
			error_seen("connect failed", NULL, 0);
			exit(1);
		}
		c->connected = false;
		c->sent_on_conn = 0;
		watch(c, id, EPOLLOUT, EPOLL_CTL_ADD);
		return;
	}
	watch(c, id, EPOLLOUT, EPOLL_CTL_MOD);
}

/* snprintf's length, or an exit if it did not fit (main checks the room). */
static size_t fitted(int n, size_t size)
{
	if (n < 0 || (size_t)n >= size) {
		fputs("fanout: a request did not fit its buffer\n", stderr);
		exit(1);
	}
	return (size_t)n;
}

static void poll_request(struct client *c, size_t id)
{
	c->out = xrealloc(c->out, 256);
	if (events_mode) {
		c->out_len = fitted(snprintf(c->out, 256,
					     "GET /chat/events?room=%s&after=%lld HTTP/1.1\r\n"
					     "Host: localhost\r\nAccept: text/event-stream\r\n\r\n",
					     room, (long long)c->after),
				    256);
		c->head_done = false;
		c->chunk_state = 0;
		c->ev_len = 0;
		send_request(c, id);
		return;
	}
	c->out_len = fitted(snprintf(c->out, 256,
				     "GET /chat/messages?room=%s&after=%lld&wait=%d HTTP/1.1\r\n"
				     "Host: localhost\r\n\r\n",
				     room, (long long)c->after, WAIT_S),
			    256);
	send_request(c, id);
}

static void post_request(struct client *c, size_t id, unsigned k)
{
	char body[256];
	size_t b = fitted(
	    snprintf(body, sizeof body,
		     "{\"message\":\"fanout %u\",\"room\":\"%s\",\"client_id\":\"fanout-%ld-%u\"}",
		     k, room, (long)getpid(), k),
	    sizeof body);
	c->out = xrealloc(c->out, 512);
	c->out_len =
	    fitted(snprintf(c->out, 512,
			    "POST /chat/ HTTP/1.1\r\nHost: localhost\r\n"
			    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
			    b, body),
		   512);
	send_request(c, id);
}

static void drop_conn(struct client *c)
{
	if (c->fd >= 0) {
		if (epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL) != 0)
			perror("fanout: epoll_ctl del");
		close(c->fd);
	}
	c->fd = -1;
}

/* Reads or writes what c is ready for. Returns 1 when a response is whole
 * (in status/body), 0 otherwise. */
static int step(struct client *c, size_t id, int *status, char **body, size_t *body_len)
{
	if (!c->connected) {
		int err = 0;
		socklen_t l = sizeof err;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0 || err) {
			error_seen("connect", strerror(err ? err : errno), strlen(strerror(err)));
			drop_conn(c);
			reconnects++;
			send_request(c, id);
			return 0;
		}
		c->connected = true;
	}
	if (!c->reading) {
		ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (w <= 0) {
			/* A kept connection nginx closed meanwhile: open another. */
			drop_conn(c);
			reconnects++;
			send_request(c, id);
			return 0;
		}
		c->out_off += (size_t)w;
		if (c->out_off == c->out_len) {
			c->reading = true;
			c->sent_on_conn++;
			watch(c, id, EPOLLIN, EPOLL_CTL_MOD);
		}
		return 0;
	}
	if (c->in_cap - c->in_len < 4096)
		c->in = xrealloc(c->in, c->in_cap = c->in_cap * 2 + 8192);
	ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	bool eof = r <= 0;
	if (!eof)
		c->in_len += (size_t)r;
	if (eof && c->in_len == 0 && c->sent_on_conn > 1) {
		/* Closed before answering a request on a reused connection (an
		 * idle close racing ours): HTTP lets the client send it again. */
		drop_conn(c);
		reconnects++;
		send_request(c, id);
		return 0;
	}
	bool keep;
	int done = parse_response(c->in, c->in_len, eof, status, body, body_len, &keep);
	if (done == 0)
		return 0;
	if (done < 0) {
		error_seen(eof ? "connection closed mid-answer" : "unparsable answer", c->in,
			   c->in_len);
		*status = 0;
		*body = NULL;
		*body_len = 0;
		keep = false;
	}
	if (!keep || eof)
		drop_conn(c);
	return 1;
}

/* Takes the chunked body bytes in c->in (after the head) apart into c->ev. */
static void dechunk(struct client *c, const char *p, size_t n)
{
	while (n > 0) {
		if (c->chunk_state == 1) {
			size_t take = n < c->chunk_left ? n : c->chunk_left;
			if (c->ev_cap - c->ev_len < take + 1)
				c->ev = xrealloc(c->ev, c->ev_cap = (c->ev_cap + take) * 2 + 1024);
			memcpy(c->ev + c->ev_len, p, take);
			c->ev_len += take;
			c->chunk_left -= take;
			p += take;
			n -= take;
			if (c->chunk_left == 0)
				c->chunk_state = 2;
			continue;
		}
		/* A size line or the CRLF after data: up to and including '\n'. */
		const char *nl = memchr(p, '\n', n);
		size_t line = nl ? (size_t)(nl - p) + 1 : n;
		if (c->chunk_state == 0) {
			/* Digits of the size, kept across reads in chunk_left. */
			for (size_t i = 0; i < line; i++) {
				char ch = p[i];
				int d = ch >= '0' && ch <= '9'   ? ch - '0'
					: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
					: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
								 : -1;
				if (d < 0)
					break;
				c->chunk_left = c->chunk_left * 16 + (size_t)d;
			}
			if (nl)
				c->chunk_state = c->chunk_left ? 1 : 3; /* 3: the end */
		} else if (c->chunk_state == 2 && nl) {
			c->chunk_state = 0;
			c->chunk_left = 0;
		}
		p += line;
		n -= line;
	}
}

/* --events: reads what came on stream c, records the user entries' ids in
 * heard (as the poll answers do), and counts errors and repeats. */
static void stream_step(struct client *c, size_t id, int64_t base, double *heard, size_t npoll,
			size_t maxposts)
{
	if (!c->connected || !c->reading) {
		int st;
		char *b;
		size_t bl;
		step(c, id, &st, &b, &bl); /* connects and sends the request */
		return;
	}
	char buf[65536];
	ssize_t r = read(c->fd, buf, sizeof buf);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		error_seen("a stream ended", NULL, 0);
		drop_conn(c);
		c->done = true;
		return;
	}
	const char *p = buf;
	size_t n = (size_t)r;
	if (!c->head_done) {
		if (c->in_cap - c->in_len < n + 1)
			c->in = xrealloc(c->in, c->in_cap = c->in_len + n + 4096);
		memcpy(c->in + c->in_len, buf, n);
		c->in_len += n;
		const char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
		if (!end)
			return;
		if (c->in_len < 12 || atoi(c->in + 9) != 200) {
			error_seen("a stream did not open", c->in, c->in_len);
			drop_conn(c);
			c->done = true;
			return;
		}
		c->head_done = true;
		size_t head = (size_t)(end - c->in) + 4;
		p = c->in + head;
		n = c->in_len - head;
	}
	double at = now();
	dechunk(c, p, n);
	/* Whole events only: up to the last blank line. */
	size_t used = 0;
	for (const char *e; (e = memmem(c->ev + used, c->ev_len - used, "\n\n", 2));) {
		const char *ev = c->ev + used;
		if (strncmp(ev, "id: ", 4) == 0) {
			int64_t seq = strtoll(ev + 4, NULL, 10);
			int64_t k = (seq - base - 1) / 2;
			if (seq <= c->after)
				dupes++;
			else
				c->after = seq;
			if (seq > base && (seq - base - 1) % 2 == 0 && (size_t)k < maxposts) {
				if (heard[(size_t)k * npoll + id] != 0)
					dupes++;
				else
					heard[(size_t)k * npoll + id] = at;
			}
		}
		used = (size_t)(e - c->ev) + 2;
	}
	memmove(c->ev, c->ev + used, c->ev_len - used);
	c->ev_len -= used;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(p / 100.0 * (double)n);
	return v[i >= n ? n - 1 : i];
}

static long vm_kib(long pid, const char *field)
{
	char path[64], line[256];
	fitted(snprintf(path, sizeof path, "/proc/%ld/status", pid), sizeof path);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long v = -1;
	size_t flen = strlen(field);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, field, flen) == 0 && line[flen] == ':')
			v = atol(line + flen + 1);
	fclose(f);
	return v;
}

static long held_waits(void)
{
	int status;
	char *m = get("/chat/metrics", &status);
	if (!m || status != 200) {
		free(m);
		return -1;
	}
	int64_t v = json_int(m, events_mode ? "\nchat_fcgi_streams " : "\nchat_fcgi_held_waits ");
	free(m);
	return (long)v;
}

int main(int argc, char **argv)
{
	int post_port = 0;
	for (;;) {
		if (argc > 1 && strcmp(argv[1], "--events") == 0) {
			events_mode = true;
			argv++;
			argc--;
		} else if (argc > 2 && strcmp(argv[1], "--post-port") == 0) {
			post_port = atoi(argv[2]);
			argv += 2;
			argc -= 2;
		} else {
			break;
		}
	}
	if (argc < 6 || argc > 7) {
		fputs("usage: fanout [--events] [--post-port P] PORT ROOM POLLERS SECONDS "
		      "INTERVAL_MS [BACKEND_PID]\n",
		      stderr);
		return 2;
	}
	port = atoi(argv[1]);
	room = argv[2];
	size_t npoll = strtoul(argv[3], NULL, 10);
	double seconds = atof(argv[4]);
	double interval = atof(argv[5]) / 1000.0;
	long pid = argc > 6 ? atol(argv[6]) : 0;
	size_t room_len = strspn(room, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789_-");
	if (room_len == 0 || room_len > 64 || room[room_len])
		return 2;
	if (port <= 0 || npoll == 0 || seconds <= 0 || interval <= 0)
		return 2;

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < npoll + 64) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < npoll + 64) {
			fprintf(stderr, "fanout: %zu pollers need more descriptors\n", npoll);
			return 1;
		}
	}

	int status;
	char path[256];
	fitted(snprintf(path, sizeof path, "/chat/messages?room=%s&limit=1", room), sizeof path);
	char *first = get(path, &status);
	if (!first || status != 200) {
		fprintf(stderr, "fanout: GET %s answered %d\n", path, status);
		return 1;
	}
	int64_t base = json_int(first, "\"next\":");
	free(first);

	size_t maxposts = (size_t)(seconds / interval) + 2;
	double *answered = calloc(maxposts, sizeof *answered); /* post k's answer time */
	/* When poller i heard post k: [k * npoll + i]; 0 for not yet. */
	double *heard = calloc(maxposts * npoll, sizeof *heard);
	double *post_lat = calloc(maxposts, sizeof *post_lat);
	struct client *cl = calloc(npoll + 1, sizeof *cl);
	struct epoll_event *evs = calloc(npoll + 1, sizeof *evs);
	if (!answered || !heard || !post_lat || !cl || !evs) {
		fputs("fanout: out of memory\n", stderr);
		return 1;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0) {
		perror("fanout: epoll_create1");
		return 1;
	}
	for (size_t i = 0; i <= npoll; i++) {
		cl[i].fd = -1;
		cl[i].port = port;
		cl[i].after = base;
	}
	if (post_port > 0)
		cl[npoll].port = post_port;
	for (size_t i = 0; i < npoll; i++)
		poll_request(&cl[i], i);

	struct client *poster = &cl[npoll];
	bool posting = false, poster_busy = false;
	unsigned posts = 0, post_errors = 0;
	int64_t last_seq = base;
	double next_post = 0, stop_posting = 0, deadline = now() + HELD_WAIT_S;
	double next_check = now() + 0.1;
	long held = 0, rss_held = -1, hwm_held = -1;

	for (;;) {
		double t = now();
		if (!posting && t >= next_check) {
			held = held_waits();
			if (held >= (long)npoll) {
				if (pid > 0) {
					rss_held = vm_kib(pid, "VmRSS");
					hwm_held = vm_kib(pid, "VmHWM");
				}
				posting = true;
				next_post = now();
				stop_posting = next_post + seconds;
				deadline = stop_posting + DRAIN_S;
			} else if (t > deadline) {
				fprintf(stderr, "fanout: only %ld of %zu polls held after %d s\n",
					held, npoll, HELD_WAIT_S);
				return 1;
			}
			next_check = t + 0.1;
		}
		t = now();
		if (posting && !poster_busy && posts < maxposts && t >= next_post &&
		    t < stop_posting) {
			post_request(poster, npoll, posts);
			poster_busy = true;
			next_post += interval;
		}
		if (posting && t >= stop_posting && !poster_busy) {
			bool all = true;
			for (size_t i = 0; i < npoll && all; i++)
				all = cl[i].after >= last_seq;
			if (all || t > deadline)
				break;
		}
		double until = posting ? (poster_busy ? 0.05 : next_post - t) : next_check - t;
		int timeout = until <= 0 ? 0 : (int)(until * 1000) + 1;
		if (timeout > 100)
			timeout = 100;
		int n = epoll_wait(epfd, evs, (int)npoll + 1, timeout);
		if (n < 0 && errno != EINTR) {
			perror("fanout: epoll_wait");
			return 1;
		}
		for (int e = 0; e < n; e++) {
			size_t id = evs[e].data.u64;
			struct client *c = &cl[id];
			if (events_mode && id < npoll) {
				stream_step(c, id, base, heard, npoll, maxposts);
				continue;
			}
			char *body = NULL;
			size_t body_len = 0;
			if (!step(c, id, &status, &body, &body_len))
				continue;
			double at = now();
			if (id == npoll) {
				poster_busy = false;
				int64_t seq = body ? json_int(body, "\"seq\":") : -1;
				int64_t want = base + 1 + 2 * (int64_t)posts;
				if (status != 200 || seq != want) {
					post_errors++;
					error_seen("post", body, body_len);
				} else {
					answered[posts] = at;
					post_lat[posts] = at - c->sent_at;
					last_seq = seq + 1;
					posts++;
				}
				free(body);
				continue;
			}
			if (status != 200 || !body) {
				error_seen("poll", body, body_len);
			} else if (strstr(body, "\"busy\":true")) {
				busy++;
			} else {
				for (const char *p = strstr(body, "\"seq\":"); p;
				     p = strstr(p + 6, "\"seq\":")) {
					int64_t seq = strtoll(p + 6, NULL, 10);
					int64_t k = (seq - base - 1) / 2;
					if (seq <= base || (seq - base - 1) % 2 ||
					    (size_t)k >= maxposts) {
						continue; /* the bot's entry of a post */
					}
					if (seq <= c->after)
						dupes++;
					else if (heard[(size_t)k * npoll + id] != 0)
						dupes++;
					else
						heard[(size_t)k * npoll + id] = at;
				}
				int64_t next = json_int(body, "\"next\":");
				if (next > c->after)
					c->after = next;
			}
			free(body);
			poll_request(c, id);
		}
	}

	/* Delivery latency of every (post, poller), and per post its slowest. */
	size_t nlat = 0, missing = 0;
	double *lat = malloc((posts * npoll + 1) * sizeof *lat);
	double *slowest = malloc((posts + 1) * sizeof *slowest);
	double *plat = malloc((posts + 1) * sizeof *plat);
	if (!lat || !slowest || !plat)
		return 1;
	for (size_t k = 0; k < posts; k++) {
		slowest[k] = -1e9;
		for (size_t i = 0; i < npoll; i++) {
			double r = heard[k * npoll + i];
			if (r == 0) {
				missing++;
				continue;
			}
			lat[nlat++] = r - answered[k];
			if (r - answered[k] > slowest[k])
				slowest[k] = r - answered[k];
		}
		plat[k] = post_lat[k];
	}
	qsort(lat, nlat, sizeof *lat, cmp_double);
	qsort(slowest, posts, sizeof *slowest, cmp_double);
	qsort(plat, posts, sizeof *plat, cmp_double);
	printf("FANOUT pollers=%zu held=%ld posts=%u post_errors=%u deliveries=%zu missing=%zu "
	       "dupes=%lu errors=%lu busy=%lu reconnects=%lu "
	       "lat_min_us=%.0f lat_p50_us=%.0f lat_p99_us=%.0f lat_max_us=%.0f "
	       "all_p50_us=%.0f all_max_us=%.0f post_p50_us=%.0f post_p99_us=%.0f "
	       "post_max_us=%.0f rss_held_kib=%ld hwm_held_kib=%ld\n",
	       npoll, held, posts, post_errors, nlat, missing, dupes, errors, busy, reconnects,
	       nlat ? lat[0] * 1e6 : 0, pct(lat, nlat, 50) * 1e6, pct(lat, nlat, 99) * 1e6,
	       nlat ? lat[nlat - 1] * 1e6 : 0, pct(slowest, posts, 50) * 1e6,
	       posts ? slowest[posts - 1] * 1e6 : 0, pct(plat, posts, 50) * 1e6,
	       pct(plat, posts, 99) * 1e6, posts ? plat[posts - 1] * 1e6 : 0, rss_held, hwm_held);
	for (size_t i = 0; i <= npoll; i++) {
		drop_conn(&cl[i]);
		free(cl[i].out);
		free(cl[i].in);
		free(cl[i].ev);
	}
	close(epfd);
	free(cl);
	free(evs);
	free(answered);
	free(heard);
	free(post_lat);
	free(lat);
	free(slowest);
	free(plat);
	return errors || post_errors || missing || dupes || busy || posts == 0 ? 1 : 0;
}
