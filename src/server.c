/*
 * The thin libfcgi layer.
 *
 * Why not one thread per connection, as libfcgi's own examples do: nginx
 * keeps idle connections to the backend open (fastcgi_keep_conn, upstream
 * keepalive), and a thread parked on an idle connection cannot serve anyone
 * else. With more idle kept connections than threads, new requests wait
 * behind connections that have nothing to say (measured: a p99 of 40 ms
 * and stalls). Here no thread ever waits on one connection: every open
 * connection sits in one epoll set, edge-triggered, and all threads wait in
 * epoll_wait. A connection with a request to read wakes exactly one thread,
 * which reads it with libfcgi and answers. Idle
 * kept connections then cost a file descriptor and a slot, not a thread,
 * so keep-alive needs no tuning against --threads, whatever nginx's workers
 * times keepalive is. The same goes for long-polls: a held request waits in
 * a list, not in a thread, until its room changes or its time is up.
 *
 * Not every thread waits in epoll_wait, though. Waking a sleeping thread
 * costs far more than answering a small request (on the 2-core machine of
 * bench/RESULTS.md, a thread switch per request doubled the backend's CPU
 * per request), so only a few threads - "pollers", half the CPUs, one on
 * a small machine, with a standby for when they are held up (standby()) -
 * take events, and a poller answers what it took itself, going
 * straight back to epoll_wait, where under load the next request is already
 * waiting. The other threads are parked. A poller about to do something
 * that may wait or take long (the store, a large body, writing to an event
 * stream) first hands its place to a parked thread (server_may_block), so
 * a slow request never holds up the others; it parks itself afterwards if
 * enough pollers are about. A post to a store with a thread of its own
 * (SQLite) waits for no thread at all: see "posts stored by the store's
 * own thread" below.
 *
 * Connections live in a fixed table of slots. Every event carries the
 * slot's index and its generation, which goes up when the slot is freed,
 * so an event for a connection that has since been closed is dropped.
 *
 * Why edge-triggered and not one-shot: a one-shot connection must be armed
 * again (epoll_ctl) after every request, one system call in five of a
 * small request. An edge-triggered one is registered once, at accept. The
 * price is that an edge may come while a thread owns the connection (the
 * rest of a request still arriving, or nginx closing it). The thread that
 * takes such an event marks the connection "missed" instead of touching it,
 * and the owner, on letting the connection go (settle), peeks: if there is
 * something to read, it serves it itself. So no edge is lost, and the
 * extra system call is only paid on the rare request that overlaps an
 * event. An event that finds nothing to read (its bytes were read with the
 * request before) costs one peek.
 */
/* epoll, eventfd, timerfd and accept4: this layer is Linux-only. */
#define _GNU_SOURCE
#include "server.h"

#include "events.h"
#include "fcgi_feed.h"
#include "fcgi_head.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <fastcgi.h>
#include <fcgiapp.h>
#include <malloc.h> /* mallopt */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Worker stacks: the parsers recurse at most CHAT_JSON_MAX_DEPTH deep, so a
 * small stack is plenty and keeps many threads cheap. */
#define WORKER_STACK ((size_t)256 * 1024)
/* A rejected body is read and thrown away so that a kept connection stays
 * in step; past this much the connection is closed instead. */
#define DRAIN_LIMIT ((size_t)1024 * 1024)
/* A read or write that stalls this long mid-request ends the connection:
 * nginx sends a whole buffered request at once, so only a broken or
 * hostile peer is ever cut off. Idle connections are never read, so this
 * does not limit keep-alive. */
#define IO_TIMEOUT_S 10
/* How often held requests look for posts made by other processes. */
#define STORE_POLL_MS 100
/* Bodies larger than this are read and parsed off the pollers' place. */
#define BIG_BODY ((size_t)8 * 1024)
/* How long the pollers may take no event, while one waits, before the
 * standby thread takes it. */
#define STANDBY_MS 1
/* How often an idle standby looks anyway. */
#define STANDBY_IDLE_MS 100
/* Events a poller takes from epoll at once. Under load several wait, and
 * one call for them all saves most of an epoll_wait per request (about 3
 * events a call at 32 connections on the 2-core machine). The poller
 * serves its batch in order; what is left when it gives its place up goes
 * to the next poller, and the standby takes it from a poller put off the
 * CPU, so a few are enough. */
#define BATCH_MAX 8
/* Connections accepted per wake-up before others get a turn. */
#define ACCEPT_BATCH 32
/* Upper bound on the slot table, whatever RLIMIT_NOFILE allows. */
#define MAX_SLOTS 65536u

/* The Prometheus text exposition format, version 0.0.4. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Tags of the epoll entries that are not connections. */
#define TAG_LISTEN UINT64_MAX
#define TAG_STOP   (UINT64_MAX - 1)
#define TAG_TIMER  (UINT64_MAX - 2)
#define TAG_POSTS  (UINT64_MAX - 3)
#define TAG_NUDGE  (UINT64_MAX - 5)
/* An empty place in a batch. */
#define TAG_NONE (UINT64_MAX - 4)
/* Posts queued for the store at once. Past this, a request's own thread
 * waits for its post, which bounds the memory the queue holds (a post
 * keeps a copy of its text) when the store stalls. */
#define POSTS_QUEUED_MAX 256u

enum conn_state {
	CONN_FREE, /* an empty slot */
	CONN_IDLE, /* open, watched, waiting for its next request */
	CONN_BUSY, /* owned by one thread */
	CONN_HELD  /* a request waits for its room; watched to notice a close */
};
/* Added to CONN_BUSY by a thread that took an event for a connection
 * another thread owns: the owner looks again when it lets go (settle). */
#define ST_MISSED     0x100u
#define ST_STATE_MASK 0xffu

struct conn {
	FCGX_Request req;
	/* The state (and ST_MISSED) in the low 32 bits, the slot's generation
	 * in the high ones: one word, so the common step (an idle connection's
	 * event taken by one thread) is a compare-and-swap, not a lock. */
	_Atomic uint64_t st;
	uint32_t index;
	struct conn *next;  /* free list, held list, or a list being answered */
	struct conn *prev;  /* held list */
	struct conn *again; /* tl_next_conns */
	/* While a request is held: */
	uint64_t deadline_ms; /* CLOCK_MONOTONIC */
	uint64_t seen_change; /* srv->changes when its answer was computed */
	bool was_held;
	/* Held because its request has not fully arrived: looked at again by
	 * the timer, after partial_wait_ms, until partial_since + IO_TIMEOUT. */
	bool partial;
	/* The whole request, body included, was taken: reading it cannot
	 * block. */
	bool whole;
	/* The start of a request still arriving, taken from the socket and
	 * not yet given to libfcgi (see head_ready). */
	unsigned char *in;
	size_t in_len, in_cap;
	uint64_t partial_since_ms;
	unsigned partial_wait_ms;
	/* An open event stream: its head is sent, it counts in nstreams, and
	 * stream_after is the last sequence number it got. */
	bool streaming;
	int64_t stream_after;
	/* A streamed reply still being paced out: the events not yet sent. */
	char *pending;
	size_t pending_len, pending_at;
	unsigned pace_ms;
	enum route_id route;
	char room[CHAT_ROOM_MAX + 1];
	char *body;
	size_t body_len;
	struct timespec t0;
	/* A post being stored: the store's thread hands c back through
	 * srv->stored once it is committed. */
	struct chat_post *post;
	struct server *srv;
};

struct server {
	struct server_config cfg;
	int ep;
	int stop_fd;  /* eventfd, readable for good once stopping */
	int timer_fd; /* held deadlines and the store check */
	atomic_bool stopping;
	atomic_ulong served;
	atomic_uint connections;
	/* Bumped whenever entries may have been added to some room: a request
	 * whose answer was computed before the last bump is not held but looked
	 * at again, so no post between its query and its hold is missed. */
	_Atomic uint64_t changes;

	pthread_mutex_t lock; /* everything below, and the state of held conns */
	pthread_cond_t done;
	unsigned running;
	struct conn *slots;
	uint32_t nslots;
	struct conn *free_slots;
	/* Slots [0, used) have been handed out at least once; the rest are
	 * never touched, so an idle backend keeps only the pages it used. */
	uint32_t used;
	bool listen_paused; /* every slot taken: the listening socket waits */
	struct conn *held;  /* doubly linked */
	unsigned nheld;     /* long-polls among them (not partial requests) */
	unsigned nstreams;  /* open event streams, held or being written */
	uint64_t store_version;
	uint64_t timer_due_ms; /* 0: not set */
	/* Posts queued for the store, and those stored but not yet answered
	 * (linked by next, each still holding its post), which posts_fd tells
	 * the pollers of. */
	unsigned posting;
	struct conn *stored, **stored_tail;
	int posts_fd; /* eventfd */

	/* The pollers' places (see the top of the file). */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_free;
	unsigned pollers, max_pollers;
	unsigned parked; /* threads waiting in gate_enter */

	/* Each worker's batch of events (see worker()), and the events a
	 * poller left when it gave its place up (server_may_block), which the
	 * next poller takes before new ones. orphans is guarded by gate_lock;
	 * nudge_fd (an eventfd) wakes a poller for them when no parked thread
	 * is there to take the place. */
	struct batch *batches;
	atomic_uint nbatches;
	uint64_t *orphans;
	unsigned norphans, orphans_cap;
	atomic_uint orphans_waiting;
	int nudge_fd;

	/* The standby (see standby()): events taken so far, by anyone, and
	 * whether it sleeps until the next one. */
	_Atomic uint64_t taken;
	atomic_bool standby_idle;
	pthread_mutex_t standby_lock;
	pthread_cond_t standby_wake;
};

/* The events a worker took in one epoll_wait, each place emptied by
 * whoever takes its event: the worker, in order, or the standby. */
struct batch {
	_Atomic uint64_t tag[BATCH_MAX];
};

/* The server a worker thread serves, whether it holds a poller's place, and
 * its batch. */
static _Thread_local struct server *tl_server;
static _Thread_local bool tl_poller;
static _Thread_local struct batch *tl_batch;

/* Takes place i of b unless another thread did. */
static bool batch_take(struct batch *b, unsigned i, uint64_t *tag)
{
	*tag = atomic_exchange(&b->tag[i], TAG_NONE);
	return *tag != TAG_NONE;
}

/* Takes a poller's place, waiting (parked) until one is free. */
static void gate_enter(struct server *srv)
{
	pthread_mutex_lock(&srv->gate_lock);
	srv->parked++;
	while (srv->pollers >= srv->max_pollers && !atomic_load(&srv->stopping))
		pthread_cond_wait(&srv->gate_free, &srv->gate_lock);
	srv->parked--;
	srv->pollers++;
	pthread_mutex_unlock(&srv->gate_lock);
	tl_poller = true;
}

/* Gives the calling thread's place to a parked thread: it is about to do
 * something that may wait. A no-op for a thread that holds none. */
static void server_may_block(void)
{
	struct server *srv = tl_server;
	if (!tl_poller || !srv)
		return;
	tl_poller = false;
	pthread_mutex_lock(&srv->gate_lock);
	/* The rest of this thread's batch goes with the place: left to the
	 * standby, it could be taken by a thread beyond --threads. */
	uint64_t tag;
	bool left = false;
	for (unsigned i = 0; i < BATCH_MAX && srv->norphans < srv->orphans_cap; i++) {
		if (batch_take(tl_batch, i, &tag)) {
			srv->orphans[srv->norphans++] = tag;
			left = true;
		}
	}
	atomic_store(&srv->orphans_waiting, srv->norphans);
	srv->pollers--;
	/* A parked thread signalled here comes for them; with none, another
	 * poller may be asleep in epoll_wait; with no poller at all, every
	 * thread is busy and they wait for one, as --threads says. */
	bool nudge = left && srv->parked == 0 && srv->pollers > 0;
	pthread_cond_signal(&srv->gate_free);
	pthread_mutex_unlock(&srv->gate_lock);
	if (nudge && eventfd_write(srv->nudge_fd, 1) != 0)
		log_msg(LOG_ERROR, "cannot wake a poller: %s", strerror(errno));
}

/* nudge_fd fired: the orphans are taken at the top of the poller's loop. */
static void nudge_event(struct server *srv)
{
	eventfd_t n;
	if (eventfd_read(srv->nudge_fd, &n) != 0 && errno != EAGAIN)
		log_msg(LOG_ERROR, "eventfd read: %s", strerror(errno));
}

/* Takes up to max events left by pollers that gave their place up, oldest
 * first; returns how many. */
static unsigned orphans_take(struct server *srv, uint64_t *tags, unsigned max)
{
	if (atomic_load(&srv->orphans_waiting) == 0)
		return 0;
	pthread_mutex_lock(&srv->gate_lock);
	unsigned n = srv->norphans < max ? srv->norphans : max;
	memcpy(tags, srv->orphans, n * sizeof *tags);
	memmove(srv->orphans, srv->orphans + n, (srv->norphans - n) * sizeof *tags);
	srv->norphans -= n;
	atomic_store(&srv->orphans_waiting, srv->norphans);
	pthread_mutex_unlock(&srv->gate_lock);
	return n;
}

/* The time on clk ms from now, for a timed wait. */
static struct timespec clock_after(clockid_t clk, unsigned ms)
{
	struct timespec t;
	clock_gettime(clk, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

/* Reads and discards what is left of the body; false if the connection must
 * be closed because the client sent too much. */
static bool drain_body(FCGX_Stream *in)
{
	char scratch[8192];
	size_t total = 0;
	int n;
	while ((n = FCGX_GetStr(scratch, sizeof scratch, in)) > 0) {
		total += (size_t)n;
		if (total > DRAIN_LIMIT)
			return false;
	}
	return true;
}

/*
 * Reads the body into a buffer of at most max_body + 1 bytes: the one byte
 * more than allowed tells a body over the limit (or longer than announced)
 * apart from one at it. Sets *gone when the client went away mid-body and
 * *oom when memory ran out; both return NULL.
 */
static char *read_body(FCGX_Stream *in, size_t announced, size_t max_body, size_t *len, bool *gone,
		       bool *oom)
{
	size_t limit = max_body + 1;
	size_t cap = announced ? announced + 1 : (limit < 1024 ? limit : 1024);
	size_t used = 0;
	char *buf = malloc(cap);

	*len = 0;
	if (!buf) {
		*oom = true;
		return NULL;
	}
	for (;;) {
		if (used == cap) {
			if (cap == limit)
				break; /* over the limit: chat_respond answers 413 */
			size_t next = cap > limit / 2 ? limit : cap * 2;
			char *grown = realloc(buf, next);
			if (!grown) {
				free(buf);
				*oom = true;
				return NULL;
			}
			buf = grown;
			cap = next;
		}
		/* cap is at most OPTIONS_MAX_BODY_LIMIT + 1, far below INT_MAX. */
		int n = FCGX_GetStr(buf + used, (int)(cap - used), in);
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	if (FCGX_GetError(in) != 0) {
		free(buf);
		*gone = true;
		return NULL;
	}
	*len = used;
	return buf;
}

static char *put_text(char *at, const char *text, size_t len)
{
	memcpy(at, text, len);
	return at + len;
}

#define PUT_LITERAL(at, lit) put_text((at), (lit), sizeof(lit) - 1)

static char *put_decimal(char *at, size_t v)
{
	char digits[24];
	size_t n = 0;
	do
		digits[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n)
		*at++ = digits[--n];
	return at;
}

/* Reply bodies longer than this skip libfcgi's 8 KiB stream buffer, which
 * costs a write (and a copy) per 8 KiB: they go in records of their own,
 * with the head, by one writev. */
#define DIRECT_BODY ((size_t)8 * 1024)
/* The content of one such record: the most FastCGI allows, kept a multiple
 * of 8 as the specification recommends. */
#define RECORD_MAX     ((size_t)FCGI_MAX_LENGTH & ~(size_t)7)
#define DIRECT_RECORDS 8

/* Writes all of iov (cnt entries, changed as they are written); -1 on an
 * error or the socket's send timeout. */
static int writev_all(int fd, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		ssize_t n = writev(fd, iov, cnt);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		size_t done = (size_t)n;
		while (cnt > 0 && done >= iov->iov_len) {
			done -= iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + done;
			iov->iov_len -= done;
		}
	}
	return 0;
}

static void record_header(unsigned char h[FCGI_HEADER_LEN], int request_id, size_t len)
{
	h[0] = FCGI_VERSION_1;
	h[1] = FCGI_STDOUT;
	h[2] = (unsigned char)((unsigned)request_id >> 8 & 0xff);
	h[3] = (unsigned char)((unsigned)request_id & 0xff);
	h[4] = (unsigned char)(len >> 8 & 0xff);
	h[5] = (unsigned char)(len & 0xff);
	h[6] = 0; /* no padding */
	h[7] = 0;
}

/* The head (at most RECORD_MAX bytes) and the body as FCGI_STDOUT records
 * of the request, straight to its socket, head and a large body by one
 * writev; libfcgi's stream must hold nothing (it ends the stream later). */
static int write_records(FCGX_Request *req, const char *head, size_t head_len, const char *body,
			 size_t len)
{
	unsigned char hdr[DIRECT_RECORDS][FCGI_HEADER_LEN];
	struct iovec iov[2 * DIRECT_RECORDS];
	int n = 0;
	record_header(hdr[n], req->requestId, head_len);
	iov[2 * n] = (struct iovec){.iov_base = hdr[n], .iov_len = FCGI_HEADER_LEN};
	iov[2 * n + 1] = (struct iovec){.iov_base = (void *)head, .iov_len = head_len};
	n++;
	for (;;) {
		for (; n < DIRECT_RECORDS && len > 0; n++) {
			size_t part = len < RECORD_MAX ? len : RECORD_MAX;
			record_header(hdr[n], req->requestId, part);
			iov[2 * n] = (struct iovec){.iov_base = hdr[n], .iov_len = FCGI_HEADER_LEN};
			iov[2 * n + 1] = (struct iovec){.iov_base = (void *)body, .iov_len = part};
			body += part;
			len -= part;
		}
		if (writev_all(req->ipcFd, iov, 2 * n) != 0)
			return -1;
		if (len == 0)
			return 0;
		n = 0;
	}
}

/* The head is put together by hand: snprintf was a measurable part of a
 * small request's CPU. */
static int write_response(FCGX_Request *req, const struct chat_response *res)
{
	FCGX_Stream *out = req->out;
	char head[256];
	const char *type = res->content_type ? res->content_type : CHAT_CONTENT_TYPE;
	const char *text = status_text(res->status);
	size_t type_len = strlen(type), text_len = strlen(text);
	size_t allow_len = res->allow ? strlen(res->allow) : 0;
	/* The fixed parts, a status, a length of at most 20 digits and a
	 * Retry-After of at most 10. */
	if (type_len + text_len + allow_len + 160 > sizeof head || res->status < 100 ||
	    res->status > 999)
		return -1;
	char *at = PUT_LITERAL(head, "Status: ");
	at = put_decimal(at, (size_t)res->status);
	*at++ = ' ';
	at = put_text(at, text, text_len);
	at = PUT_LITERAL(at, "\r\nContent-Type: ");
	at = put_text(at, type, type_len);
	at = PUT_LITERAL(at, "\r\nContent-Length: ");
	at = put_decimal(at, res->body_len);
	at = PUT_LITERAL(at, "\r\nCache-Control: no-store\r\n");
	if (res->allow) {
		at = PUT_LITERAL(at, "Allow: ");
		at = put_text(at, res->allow, allow_len);
		at = PUT_LITERAL(at, "\r\n");
	}
	if (res->retry_after) {
		at = PUT_LITERAL(at, "Retry-After: ");
		at = put_decimal(at, res->retry_after);
		at = PUT_LITERAL(at, "\r\n");
	}
	at = PUT_LITERAL(at, "\r\n");
	int n = (int)(at - head);
	if (res->body_len > DIRECT_BODY)
		return write_records(req, head, (size_t)n, res->body, res->body_len);
	if (FCGX_PutStr(head, n, out) != n)
		return -1;
	/* Bodies are at most a few times max_body, far below INT_MAX. */
	if (FCGX_PutStr(res->body, (int)res->body_len, out) != (int)res->body_len)
		return -1;
	return 0;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void log_request(FCGX_Request *req, const struct chat_response *res,
			const struct timespec *t0)
{
	enum log_level level = res->status == 200 ? LOG_DEBUG : LOG_NOTICE;
	if (!log_enabled(level))
		return;
	char method[16], uri[256], id[40];
	log_clean(method, sizeof method, FCGX_GetParam("REQUEST_METHOD", req->envp));
	log_clean(uri, sizeof uri, FCGX_GetParam("REQUEST_URI", req->envp));
	log_clean(id, sizeof id, FCGX_GetParam("REQUEST_ID", req->envp));
	/* The id is nginx's $request_id, in its access log too. */
	log_msg(level, "%d %s %s %.2f ms id=%s%s%s", res->status, method, uri, ms_since(t0),
		id[0] ? id : "-", res->reason ? ": " : "", res->reason ? res->reason : "");
}

static uint64_t st_make(uint32_t gen, enum conn_state state)
{
	return (uint64_t)gen << 32 | (uint32_t)state;
}

static uint32_t st_gen(uint64_t st)
{
	return (uint32_t)(st >> 32);
}

static enum conn_state st_state(uint64_t st)
{
	return (enum conn_state)((uint32_t)st & ST_STATE_MASK);
}

/* Only the thread that owns c (or holds the lock, for held ones) calls it. */
static void set_state(struct conn *c, enum conn_state state)
{
	atomic_store(&c->st, st_make(st_gen(atomic_load(&c->st)), state));
}

/* --- slots and watching -------------------------------------------------- */

/* Registers c, just accepted, as idle: once, for as long as it is open. */
static int watch_conn(struct server *srv, struct conn *c)
{
	uint32_t gen = st_gen(atomic_load(&c->st));
	atomic_store(&c->st, st_make(gen, CONN_IDLE));
	struct epoll_event ev = {
	    .events = EPOLLIN | EPOLLRDHUP | EPOLLET,
	    .data.u64 = (uint64_t)gen << 32 | c->index,
	};
	return epoll_ctl(srv->ep, EPOLL_CTL_ADD, c->req.ipcFd, &ev);
}

/* Something (a request, or the end of the stream) waits on fd. */
static bool has_input(int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/*
 * The owner of c lets it go into state (idle, or held with the lock
 * taken). Returns false, with c still the caller's and still marked
 * missed, when an event came meanwhile and there is something to read:
 * no edge will report it again. Handing it back to epoll instead
 * (EPOLL_CTL_MOD) would race with a close: once c is let go, its
 * descriptor may be closed and reused by another connection.
 */
static bool settle(struct conn *c, enum conn_state state)
{
	uint64_t cur = atomic_load(&c->st);
	for (;;) {
		if (cur & ST_MISSED) {
			if (has_input(c->req.ipcFd))
				return false;
			/* Its bytes were read with the request. */
			if (atomic_compare_exchange_weak(&c->st, &cur, cur & ~(uint64_t)ST_MISSED))
				cur &= ~(uint64_t)ST_MISSED;
			continue;
		}
		if (atomic_compare_exchange_weak(&c->st, &cur, st_make(st_gen(cur), state)))
			return true;
	}
}

/* settle() said no: the caller takes what came, so the mark is done with. */
static void missed_taken(struct conn *c)
{
	atomic_fetch_and(&c->st, ~(uint64_t)ST_MISSED);
}

/* Connections a thread found a request on while letting them go, to be
 * served from its event loop rather than by recursion. */
static _Thread_local struct conn *tl_next_conns;

static void arm_listener(struct server *srv)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = TAG_LISTEN};
	/* After listener_refuse() the descriptor is another, unregistered
	 * socket: ENOENT then just means "stopped accepting". */
	if (epoll_ctl(srv->ep, EPOLL_CTL_MOD, srv->cfg.listen_fd, &ev) != 0 && errno != ENOENT &&
	    errno != EBADF)
		log_msg(LOG_ERROR, "cannot watch the listening socket: %s", strerror(errno));
}

/* Callers hold srv->lock. */
static void release_slot(struct server *srv, struct conn *c)
{
	/* Whatever event is still in flight for it is stale now. */
	atomic_store(&c->st, st_make(st_gen(atomic_load(&c->st)) + 1, CONN_FREE));
	atomic_fetch_sub(&srv->connections, 1);
	c->next = srv->free_slots;
	srv->free_slots = c;
	if (srv->listen_paused && !atomic_load(&srv->stopping)) {
		srv->listen_paused = false;
		arm_listener(srv);
	}
}

/* A held long-poll, as --max-waits counts them: not a request still
 * arriving, nor a stream (which --max-streams counts). */
static bool is_wait(const struct conn *c)
{
	return !c->partial && !c->streaming && !c->pending;
}

static void held_insert(struct server *srv, struct conn *c)
{
	c->prev = NULL;
	c->next = srv->held;
	if (srv->held)
		srv->held->prev = c;
	srv->held = c;
	if (is_wait(c))
		srv->nheld++;
}

static void held_remove(struct server *srv, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->held = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	if (is_wait(c))
		srv->nheld--;
}

/* Makes the timer fire by due_ms at the latest. */
static void timer_by(struct server *srv, uint64_t due_ms)
{
	if (srv->timer_due_ms != 0 && srv->timer_due_ms <= due_ms)
		return;
	uint64_t now = now_ms();
	uint64_t in = due_ms > now ? due_ms - now : 1;
	struct itimerspec its = {
	    .it_value = {.tv_sec = (time_t)(in / 1000), .tv_nsec = (long)(in % 1000) * 1000000L}};
	if (timerfd_settime(srv->timer_fd, 0, &its, NULL) != 0) {
		log_msg(LOG_ERROR, "timerfd_settime: %s", strerror(errno));
		return;
	}
	srv->timer_due_ms = due_ms;
}

/* --- one connection, owned by the calling thread (state CONN_BUSY) ----- */

/* c no longer holds a stream or a paced reply. */
static void stream_forget(struct server *srv, struct conn *c)
{
	free(c->pending);
	c->pending = NULL;
	if (c->streaming) {
		pthread_mutex_lock(&srv->lock);
		srv->nstreams--;
		pthread_mutex_unlock(&srv->lock);
		c->streaming = false;
	}
}

static void conn_close(struct server *srv, struct conn *c)
{
	stream_forget(srv, c);
	/* detached: close at once, without libfcgi's drain of up to 2 s
	 * (which also uses select() and so cannot take descriptors past
	 * FD_SETSIZE). Everything has been read by then anyway. */
	c->req.detached = 1;
	FCGX_Free(&c->req, 1);
	free(c->body);
	c->body = NULL;
	free(c->in);
	c->in = NULL;
	c->in_len = c->in_cap = 0;
	c->partial = false;
	pthread_mutex_lock(&srv->lock);
	release_slot(srv, c);
	pthread_mutex_unlock(&srv->lock);
}

static void take_and_serve(struct server *srv, struct conn *c);
static void serve(struct server *srv, struct conn *c);
static void given_up(struct server *srv, struct conn *c);

/* Ends the request on c and makes the connection wait for the next one. */
static void conn_finish(struct server *srv, struct conn *c)
{
	stream_forget(srv, c);
	free(c->body);
	c->body = NULL;
	c->was_held = false;
	if (atomic_load(&srv->stopping))
		c->req.keepConnection = 0;
	c->req.detached = 1;
	FCGX_Finish_r(&c->req);
	if (c->req.ipcFd < 0) {
		pthread_mutex_lock(&srv->lock);
		release_slot(srv, c);
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	if (atomic_load(&srv->stopping)) {
		conn_close(srv, c);
		return;
	}
	if (settle(c, CONN_IDLE))
		return;
	/* The next request came before c was let go. */
	missed_taken(c);
	if (!tl_server) {
		/* Not a worker (server_stop): at most once per connection. */
		take_and_serve(srv, c);
		return;
	}
	c->again = tl_next_conns;
	tl_next_conns = c;
}

/* The parameters a request is made of. */
enum param {
	P_URI,
	P_METHOD,
	P_QUERY,
	P_CONTENT_TYPE,
	P_CONTENT_LENGTH,
	P_ORIGIN,
	P_SEC_FETCH_SITE,
	P_HOST,
	P_SCHEME,
	P_ACCEPT,
	P_LAST_EVENT_ID,
	P_COUNT
};

#define NAME(s)                                                                                    \
	{                                                                                          \
		s, sizeof(s) - 1                                                                   \
	}
static const struct {
	const char *name;
	size_t len;
} param_names[P_COUNT] = {
    [P_URI] = NAME("REQUEST_URI"),
    [P_METHOD] = NAME("REQUEST_METHOD"),
    [P_QUERY] = NAME("QUERY_STRING"),
    [P_CONTENT_TYPE] = NAME("CONTENT_TYPE"),
    [P_CONTENT_LENGTH] = NAME("CONTENT_LENGTH"),
    [P_ORIGIN] = NAME("HTTP_ORIGIN"),
    [P_SEC_FETCH_SITE] = NAME("HTTP_SEC_FETCH_SITE"),
    [P_HOST] = NAME("HTTP_HOST"),
    [P_SCHEME] = NAME("REQUEST_SCHEME"),
    [P_ACCEPT] = NAME("HTTP_ACCEPT"),
    [P_LAST_EVENT_ID] = NAME("HTTP_LAST_EVENT_ID"),
};
#undef NAME
/* Every name above is shorter than this. */
#define PARAM_NAME_MAX 32

/* Bit i of param_by_len[n]: param_names[i] is n bytes long. Filled by
 * server_start, before any thread reads it. */
static uint32_t param_by_len[PARAM_NAME_MAX];

static void param_by_len_make(void)
{
	memset(param_by_len, 0, sizeof param_by_len);
	for (unsigned i = 0; i < P_COUNT; i++)
		param_by_len[param_names[i].len] |= 1u << i;
}

/* Finds them all in one pass over envp: FCGX_GetParam scans every
 * parameter nginx sends for each name, which was a measurable part of a
 * small request's CPU. A parameter is looked up by the length of its name,
 * which few of ours share, so most are passed over after one strchr. The
 * first of a name wins, as with FCGX_GetParam. */
static void find_params(char **envp, const char *found[P_COUNT])
{
	_Static_assert(P_COUNT <= 32, "param_by_len holds a bit per name");
	for (size_t i = 0; i < P_COUNT; i++)
		found[i] = NULL;
	for (char **e = envp; e && *e; e++) {
		const char *p = *e;
		const char *eq = strchr(p, '=');
		size_t n = eq ? (size_t)(eq - p) : 0;
		if (n >= PARAM_NAME_MAX)
			continue;
		for (uint32_t m = param_by_len[n]; m; m &= m - 1) {
			unsigned i = (unsigned)__builtin_ctz(m);
			if (!found[i] && memcmp(p, param_names[i].name, n) == 0) {
				found[i] = eq + 1;
				break;
			}
		}
	}
}

/* The request as chat_respond sees it; path_buf holds the path. */
static void build_request(struct conn *c, struct chat_request *creq, char *path_buf,
			  size_t path_size)
{
	const char *p[P_COUNT];
	find_params(c->req.envp, p);
	/* The path is REQUEST_URI without its query: nginx may have rewritten
	 * DOCUMENT_URI to the index file. */
	const char *uri = p[P_URI];
	const char *path = NULL;
	if (uri) {
		size_t n = strcspn(uri, "?");
		if (n < path_size) {
			memcpy(path_buf, uri, n);
			path_buf[n] = '\0';
			path = path_buf;
		} else {
			path = ""; /* longer than any path served here */
		}
	}
	*creq = (struct chat_request){
	    .method = p[P_METHOD],
	    .path = path,
	    .query = p[P_QUERY],
	    .content_type = p[P_CONTENT_TYPE],
	    .content_length = p[P_CONTENT_LENGTH],
	    .origin = p[P_ORIGIN],
	    .sec_fetch_site = p[P_SEC_FETCH_SITE],
	    .host = p[P_HOST],
	    .scheme = p[P_SCHEME],
	    .accept = p[P_ACCEPT],
	    .last_event_id = p[P_LAST_EVENT_ID],
	    .body = c->body,
	    .body_len = c->body_len,
	};
}

static void wake_room(struct server *srv, const char *room);

static void answer(struct server *srv, struct conn *c, struct chat_request *creq,
		   struct chat_response *res);

/* --- streamed answers ------------------------------------------------------
 * An event stream or a paced reply is written in parts, each flushed to
 * nginx at once (X-Accel-Buffering: no turns nginx's buffering off for the
 * response). Between parts the request waits in the held list like a
 * long-poll: no thread is tied to it. */

static int write_stream_head(FCGX_Stream *out, const char *content_type)
{
	char head[256];
	int n = snprintf(head, sizeof head,
			 "Status: 200 OK\r\n"
			 "Content-Type: %s\r\n"
			 "Cache-Control: no-store\r\n"
			 "X-Accel-Buffering: no\r\n"
			 "\r\n",
			 content_type);
	if (n < 0 || (size_t)n >= sizeof head || FCGX_PutStr(head, n, out) != n)
		return -1;
	return 0;
}

static int write_part(FCGX_Stream *out, const char *part, size_t len)
{
	/* nginx reads an event stream only as fast as its browser does. */
	server_may_block();
	/* Parts are at most a few times max_body, far below INT_MAX. */
	if (len && FCGX_PutStr(part, (int)len, out) != (int)len)
		return -1;
	return FCGX_FFlush(out);
}

/* A streamed answer ended: log and count it, and ready the connection for
 * the next request. */
static void stream_done(struct server *srv, struct conn *c, const char *reason)
{
	struct chat_response res = {.status = 200, .reason = reason};
	log_request(&c->req, &res, &c->t0);
	metrics_request_done(c->route, 200, (uint64_t)(ms_since(&c->t0) * 1000.0));
	atomic_fetch_add(&srv->served, 1);
	conn_finish(srv, c);
}

/* Puts c in the held list until due_ms (or a change of its room); the lock
 * is held. False if nginx sent something meanwhile (it gave up on the
 * request): c is then the caller's, to answer now. */
static bool hold_locked(struct server *srv, struct conn *c, uint64_t now)
{
	if (!settle(c, CONN_HELD))
		return false;
	held_insert(srv, c);
	uint64_t due = c->deadline_ms;
	if (srv->cfg.store_version && !c->pending && now + STORE_POLL_MS < due)
		due = now + STORE_POLL_MS;
	timer_by(srv, due);
	return true;
}

/*
 * Sends the parts of the event stream on c: res is the first (or the
 * next) one. Between parts the stream is held; a change of its room, a
 * post seen through the store, or its heartbeat deadline asks for more.
 * Takes over res.
 */
static void stream_send(struct server *srv, struct conn *c, struct chat_request *creq,
			struct chat_response *res)
{
	for (;;) {
		if (!c->streaming) {
			pthread_mutex_lock(&srv->lock);
			bool room =
			    srv->nstreams < srv->cfg.max_streams && !atomic_load(&srv->stopping);
			if (room) {
				srv->nstreams++;
				c->streaming = true;
			}
			pthread_mutex_unlock(&srv->lock);
			if (!room) {
				/* Full: answered at once, so the page polls instead. */
				chat_response_free(res);
				creq->hold_mode = CHAT_HOLD_FULL;
				chat_respond(creq, &srv->cfg.limits, res);
				if (res->kind == CHAT_STREAM) {
					chat_response_free(res);
					chat_out_of_memory(
					    res, "a stream did not take no for an answer");
				}
				answer(srv, c, creq, res);
				return;
			}
			log_msg(LOG_DEBUG, "an event stream opened");
			if (write_stream_head(c->req.out, res->content_type) != 0) {
				chat_response_free(res);
				conn_close(srv, c);
				return;
			}
		}
		bool sent = res->body_len > 0;
		if (write_part(c->req.out, res->body, res->body_len) != 0) {
			log_msg(LOG_DEBUG, "an event stream's reader is gone");
			chat_response_free(res);
			conn_close(srv, c);
			return;
		}
		if (res->store_error)
			metrics_store_error();
		bool more = res->kind == CHAT_STREAM;
		const char *reason = res->reason;
		unsigned hold_ms = res->hold.ms;
		c->stream_after = res->stream_next;
		memcpy(c->room, res->hold.room, sizeof c->room);
		c->room[sizeof c->room - 1] = '\0';
		chat_response_free(res);
		if (!more) {
			stream_done(srv, c, reason);
			return;
		}

		enum chat_hold_mode mode;
		pthread_mutex_lock(&srv->lock);
		uint64_t now = now_ms();
		/* Silence is measured from the last bytes sent. */
		if (sent)
			c->deadline_ms = now + hold_ms;
		if (atomic_load(&srv->stopping)) {
			pthread_mutex_unlock(&srv->lock);
			stream_done(srv, c, NULL);
			return;
		}
		if (c->seen_change != atomic_load(&srv->changes)) {
			mode = CHAT_HOLD_ALLOWED; /* a post came in during the query */
		} else if (now >= c->deadline_ms) {
			mode = CHAT_HOLD_OVER;
		} else {
			c->was_held = true;
			bool held = hold_locked(srv, c, now);
			pthread_mutex_unlock(&srv->lock);
			if (!held)
				given_up(srv, c);
			return;
		}
		c->seen_change = atomic_load(&srv->changes);
		pthread_mutex_unlock(&srv->lock);
		creq->hold_mode = mode;
		creq->stream_open = true;
		creq->stream_after = c->stream_after;
		chat_respond(creq, &srv->cfg.limits, res);
		if (res->status != 200) {
			/* Mid-stream there is no status to give: end it, and the
			 * browser reconnects. */
			const char *why = res->reason;
			chat_response_free(res);
			stream_done(srv, c, why ? why : "the stream failed");
			return;
		}
	}
}

/* Sends the next event of the paced reply on c when due, then holds it
 * until the one after; the last one ends the request. */
static void pace_next(struct server *srv, struct conn *c, bool due)
{
	bool stopping = atomic_load(&srv->stopping);
	if (due || stopping) {
		size_t left = c->pending_len - c->pending_at;
		const char *part = c->pending + c->pending_at;
		const char *end = stopping ? NULL : memmem(part, left, "\n\n", 2);
		size_t n = end ? (size_t)(end - part) + 2 : left;
		if (write_part(c->req.out, part, n) != 0) {
			log_msg(LOG_DEBUG, "a streamed reply's reader is gone");
			conn_close(srv, c);
			return;
		}
		c->pending_at += n;
		if (c->pending_at == c->pending_len) {
			stream_done(srv, c, NULL);
			return;
		}
		c->deadline_ms = now_ms() + c->pace_ms;
	}
	pthread_mutex_lock(&srv->lock);
	stopping = atomic_load(&srv->stopping);
	bool held = !stopping && hold_locked(srv, c, now_ms());
	pthread_mutex_unlock(&srv->lock);
	if (held)
		return;
	if (stopping)
		pace_next(srv, c, true);
	else
		given_up(srv, c);
}

/* A streamed reply with --stream-pace: its events go out pace_ms apart. */
static void pace_start(struct server *srv, struct conn *c, struct chat_response *res)
{
	if (write_stream_head(c->req.out, res->content_type) != 0) {
		chat_response_free(res);
		conn_close(srv, c);
		return;
	}
	if (res->body_owned) {
		c->pending = res->body;
		res->body_owned = false;
	} else {
		c->pending = malloc(res->body_len);
		if (c->pending)
			memcpy(c->pending, res->body, res->body_len);
	}
	if (!c->pending) {
		/* No copy: send it whole rather than not at all. */
		if (write_part(c->req.out, res->body, res->body_len) != 0) {
			chat_response_free(res);
			conn_close(srv, c);
			return;
		}
		chat_response_free(res);
		stream_done(srv, c, NULL);
		return;
	}
	c->pending_len = res->body_len;
	c->pending_at = 0;
	c->pace_ms = res->pace_ms;
	c->room[0] = '\0'; /* no room's change concerns it */
	chat_response_free(res);
	pace_next(srv, c, true);
}

/*
 * Sends res for the request on c, or holds the request when res asks for
 * it. Takes over res.
 */
static void answer(struct server *srv, struct conn *c, struct chat_request *creq,
		   struct chat_response *res)
{
	/* A request that wants to wait is held, or asked again with a mode
	 * that makes it answer now. A few rounds at most: it holds, or answers
	 * FULL/OVER, or sees a change that came in during its own query. */
	for (unsigned round = 0; res->kind == CHAT_HOLD; round++) {
		enum chat_hold_mode mode = CHAT_HOLD_OVER;
		pthread_mutex_lock(&srv->lock);
		uint64_t now = now_ms();
		if (!c->was_held)
			c->deadline_ms = now + res->hold.ms;
		else if (now + res->hold.ms < c->deadline_ms)
			c->deadline_ms = now + res->hold.ms;
		if (res->hold.ms == 0 || round > 100 || atomic_load(&srv->stopping) ||
		    now >= c->deadline_ms) {
			mode = CHAT_HOLD_OVER;
		} else if (c->seen_change != atomic_load(&srv->changes)) {
			mode = CHAT_HOLD_ALLOWED; /* something changed meanwhile */
		} else if (srv->nheld >= srv->cfg.max_held) {
			mode = CHAT_HOLD_FULL;
		} else {
			memcpy(c->room, res->hold.room, sizeof c->room);
			c->room[sizeof c->room - 1] = '\0';
			c->was_held = true;
			/* Still watched, so that nginx giving up on the request
			 * is seen; if it already has, the answer goes now. */
			if (!hold_locked(srv, c, now)) {
				mode = CHAT_HOLD_OVER;
			} else {
				pthread_mutex_unlock(&srv->lock);
				chat_response_free(res);
				return;
			}
		}
		c->seen_change = atomic_load(&srv->changes);
		pthread_mutex_unlock(&srv->lock);
		chat_response_free(res);
		creq->hold_mode = mode;
		chat_respond(creq, &srv->cfg.limits, res);
		if (res->kind == CHAT_HOLD && mode != CHAT_HOLD_ALLOWED) {
			chat_response_free(res);
			chat_out_of_memory(res, "the request logic held a request told to answer");
		}
	}

	if (res->kind == CHAT_STREAM || res->kind == CHAT_PACED) {
		/* The post's entries are stored: others hear of them now, not
		 * once its reply has been paced out. */
		char changed[sizeof res->changed_room];
		memcpy(changed, res->changed_room, sizeof changed);
		changed[sizeof changed - 1] = '\0';
		if (res->kind == CHAT_STREAM)
			stream_send(srv, c, creq, res);
		else
			pace_start(srv, c, res);
		if (changed[0])
			wake_room(srv, changed);
		return;
	}
	if (write_response(&c->req, res) != 0) {
		log_msg(LOG_DEBUG, "could not send the answer: the connection is gone");
		c->req.keepConnection = 0; /* a record may be cut short */
	}
	log_request(&c->req, res, &c->t0);
	if (res->store_error)
		metrics_store_error();
	metrics_request_done(c->route, res->status, (uint64_t)(ms_since(&c->t0) * 1000.0));
	char room[sizeof res->changed_room];
	memcpy(room, res->changed_room, sizeof room);
	room[sizeof room - 1] = '\0';
	chat_response_free(res);
	atomic_fetch_add(&srv->served, 1);
	conn_finish(srv, c);
	if (room[0])
		wake_room(srv, room);
}

/* An open stream's next part could not be made: end it. */
static void stream_send_failed(struct server *srv, struct conn *c, struct chat_response *res)
{
	const char *why = res->reason;
	chat_response_free(res);
	stream_done(srv, c, why ? why : "the stream failed");
}

/* Asks chat_respond again for each held request in list (linked by next). */
/* The last answer answer_again computed, to give every request that would
 * get the same one (a fan-out: many waiters on one room, at one cursor)
 * without asking the store again. */
struct shared_answer {
	bool valid;
	bool streaming;
	int64_t stream_after;
	enum chat_hold_mode mode;
	char *query;
	uint64_t seen_change; /* srv->changes before it was computed */
	struct chat_response res;
};

static void shared_clear(struct shared_answer *sh)
{
	if (sh->valid) {
		free(sh->query);
		chat_response_free(&sh->res);
	}
	sh->valid = false;
}

/* A copy of the shared answer for creq, if it is the same question. */
static bool shared_take(struct shared_answer *sh, const struct chat_request *creq,
			struct chat_response *res, uint64_t *seen_change)
{
	if (!sh->valid || sh->streaming != creq->stream_open ||
	    sh->stream_after != creq->stream_after || sh->mode != creq->hold_mode ||
	    strcmp(sh->query, creq->query ? creq->query : "") != 0)
		return false;
	*res = sh->res;
	if (sh->res.body_len) {
		res->body = malloc(sh->res.body_len);
		if (!res->body)
			return false;
		memcpy(res->body, sh->res.body, sh->res.body_len);
		res->body_owned = true;
	}
	*seen_change = sh->seen_change;
	return true;
}

/* Keeps res as the shared answer when others may get it too: a read's
 * answer, which depends on nothing but the question. */
static void shared_keep(struct shared_answer *sh, const struct chat_request *creq,
			const struct chat_response *res, uint64_t seen_change)
{
	shared_clear(sh);
	if ((res->status != 200 && res->kind != CHAT_HOLD) || res->store_error ||
	    res->changed_room[0] || res->kind == CHAT_PACED)
		return;
	sh->query = strdup(creq->query ? creq->query : "");
	if (!sh->query)
		return;
	sh->res = *res;
	sh->res.body_owned = false;
	sh->res.body = NULL;
	if (res->body_len) {
		sh->res.body = malloc(res->body_len);
		if (!sh->res.body) {
			free(sh->query);
			return;
		}
		memcpy(sh->res.body, res->body, res->body_len);
		sh->res.body_owned = true;
	}
	sh->streaming = creq->stream_open;
	sh->stream_after = creq->stream_after;
	sh->mode = creq->hold_mode;
	sh->seen_change = seen_change;
	sh->valid = true;
}

/* Asks chat_respond again for each held request in list (linked by next). */
static void answer_again(struct server *srv, struct conn *list, bool over)
{
	struct shared_answer shared = {.valid = false};
	while (list) {
		struct conn *c = list;
		list = c->next;
		c->next = NULL;
		if (c->pending) {
			pace_next(srv, c, over);
			continue;
		}
		if (c->streaming && atomic_load(&srv->stopping)) {
			/* A clean end: the browser reconnects, to another node or
			 * to this one once it is back. */
			stream_done(srv, c, NULL);
			continue;
		}
		char path[64];
		struct chat_request creq;
		struct chat_response res;
		build_request(c, &creq, path, sizeof path);
		creq.hold_mode = over ? CHAT_HOLD_OVER : CHAT_HOLD_ALLOWED;
		creq.stream_open = c->streaming;
		creq.stream_after = c->stream_after;
		if (!shared_take(&shared, &creq, &res, &c->seen_change)) {
			c->seen_change = atomic_load(&srv->changes);
			chat_respond(&creq, &srv->cfg.limits, &res);
			shared_keep(&shared, &creq, &res, c->seen_change);
		}
		if (c->streaming && res.status == 200)
			stream_send(srv, c, &creq, &res);
		else if (c->streaming)
			stream_send_failed(srv, c, &res);
		else
			answer(srv, c, &creq, &res);
	}
	shared_clear(&shared);
}

/* A post added entries to room: the requests held on it answer now. */
static void wake_room(struct server *srv, const char *room)
{
	struct conn *list = NULL;
	atomic_fetch_add(&srv->changes, 1);
	pthread_mutex_lock(&srv->lock);
	for (struct conn *c = srv->held, *next; c; c = next) {
		next = c->next;
		if (!c->partial && strcmp(c->room, room) == 0) {
			held_remove(srv, c);
			set_state(c, CONN_BUSY);
			c->next = list;
			list = c;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	answer_again(srv, list, false);
}

static void set_body(struct chat_response *res, int status, const char *body, const char *reason)
{
	*res = (struct chat_response){.status = status, .reason = reason};
	res->body = (char *)body;
	res->body_len = strlen(body);
}

/* GET /chat/health and GET /chat/metrics: about the server, not the chat. */
static void service_answer(struct server *srv, struct conn *c, const struct chat_request *creq,
			   struct chat_response *res)
{
	if (!chat_check_method(c->route, creq, res))
		return;
	if (c->route == ROUTE_HEALTH) {
		char why[256] = "";
		server_may_block();
		if (!srv->cfg.store_check ||
		    srv->cfg.store_check(srv->cfg.store_ctx, why, sizeof why) == 0) {
			set_body(res, 200, "{\"status\":\"ok\"}", NULL);
			return;
		}
		why[sizeof why - 1] = '\0';
		*res = (struct chat_response){.status = 0};
		chat_set_escaped(res, 503, "{\"status\":\"error\",\"error\":\"", why, "\"}",
				 "the store failed");
		return;
	}
	pthread_mutex_lock(&srv->lock);
	struct metrics_gauges g = {
	    .held = srv->nheld,
	    .streams = srv->nstreams,
	    .connections = atomic_load(&srv->connections),
	    .threads = srv->cfg.threads,
	    .posts_storing = srv->posting,
	};
	pthread_mutex_unlock(&srv->lock);
	size_t len;
	char *text = metrics_render(&g, &len);
	if (!text) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	*res = (struct chat_response){.status = 200, .body = text, .body_len = len};
	res->body_owned = true;
	res->content_type = METRICS_CONTENT_TYPE;
}

/* --- posts stored by the store's own thread ------------------------------
 * A post is queued, and its connection stays busy with no thread on it
 * until the store has committed it: the poller goes straight back to
 * epoll_wait. The store's thread then puts the connection on srv->stored,
 * and the poller that takes the list answers each. */

/* c's post is stored: answers it (its request's parameters are all still
 * there) as serve would have. */
static void post_answer(struct server *srv, struct conn *c)
{
	char path[64];
	struct chat_request creq;
	struct chat_response res;
	build_request(c, &creq, path, sizeof path);
	struct chat_post *post = c->post;
	c->post = NULL;
	chat_post_finish(&creq, &srv->cfg.limits, post, &res);
	answer(srv, c, &creq, &res);
}

/* Answers the stored posts in list (linked by next). */
static void posts_answer(struct server *srv, struct conn *list)
{
	while (list) {
		struct conn *c = list;
		list = c->next;
		c->next = NULL;
		post_answer(srv, c);
	}
}

/* Called on the store's thread: hands c to the pollers. */
static void post_stored(void *cookie)
{
	struct conn *c = cookie;
	struct server *srv = c->srv;
	c->next = NULL;
	pthread_mutex_lock(&srv->lock);
	/* Counted off now, not once answered: a thread waiting for its own
	 * post past POSTS_QUEUED_MAX may be the one that will answer. */
	srv->posting--;
	bool first = !srv->stored;
	*srv->stored_tail = c;
	srv->stored_tail = &c->next;
	/* server_stop answers them itself once the pollers are gone. */
	if (atomic_load(&srv->stopping))
		pthread_cond_broadcast(&srv->done);
	pthread_mutex_unlock(&srv->lock);
	/* One wake-up per list: whoever takes it takes all. */
	if (first) {
		uint64_t one = 1;
		ssize_t w;
		do
			w = write(srv->posts_fd, &one, sizeof one);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN)
			log_msg(LOG_ERROR, "cannot signal a stored post: %s", strerror(errno));
	}
}

/* Takes the stored posts; the caller holds srv->lock. */
static struct conn *stored_take(struct server *srv)
{
	struct conn *list = srv->stored;
	srv->stored = NULL;
	srv->stored_tail = &srv->stored;
	return list;
}

/* posts_fd fired: answers the posts stored since the last time. */
static void posts_event(struct server *srv)
{
	uint64_t n;
	if (read(srv->posts_fd, &n, sizeof n) < 0 && errno != EAGAIN)
		log_msg(LOG_ERROR, "eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&srv->lock);
	struct conn *list = stored_take(srv);
	pthread_mutex_unlock(&srv->lock);
	/* Armed again before answering, so that another poller takes the
	 * next list meanwhile. */
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = TAG_POSTS};
	if (epoll_ctl(srv->ep, EPOLL_CTL_MOD, srv->posts_fd, &ev) != 0)
		log_msg(LOG_ERROR, "cannot watch the stored posts: %s", strerror(errno));
	posts_answer(srv, list);
}

/* Stores c's post: queued, or, with too many queued already, in this
 * thread. */
static void post_start(struct server *srv, struct conn *c, struct chat_post *post)
{
	c->post = post;
	c->srv = srv;
	pthread_mutex_lock(&srv->lock);
	bool queue = srv->posting < POSTS_QUEUED_MAX;
	if (queue)
		srv->posting++;
	pthread_mutex_unlock(&srv->lock);
	if (queue) {
		chat_post_queue(&srv->cfg.limits, post, post_stored, c);
		return;
	}
	chat_post_store(&srv->cfg.limits, post);
	post_answer(srv, c);
}

/* Reads the request waiting on c and answers it. */
static void serve(struct server *srv, struct conn *c)
{
	c->req.detached = 1;
	if (FCGX_Accept_r(&c->req) < 0) {
		/* The peer closed, or broke the protocol: libfcgi has closed
		 * the connection (it has no listening socket to fall back on). */
		conn_close(srv, c);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &c->t0);
	c->was_held = false;
	c->seen_change = atomic_load(&srv->changes);

	char path[64];
	struct chat_request creq;
	struct chat_response res;
	size_t announced;
	build_request(c, &creq, path, sizeof path);
	metrics_request_started();
	c->route = route_of(creq.path);

	if (c->route == ROUTE_HEALTH || c->route == ROUTE_METRICS) {
		if (!drain_body(c->req.in))
			c->req.keepConnection = 0;
		service_answer(srv, c, &creq, &res);
		answer(srv, c, &creq, &res);
		return;
	}
	if (chat_check_head(&creq, &srv->cfg.limits, &res, &announced) == CHAT_HEAD_REJECTED) {
		if (!drain_body(c->req.in))
			c->req.keepConnection = 0;
		answer(srv, c, &creq, &res);
		return;
	}
	bool gone = false, oom = false;
	/* A body still on its way, or a large one, is read off the pollers'
	 * place. */
	if (announced > BIG_BODY || !c->whole)
		server_may_block();
	if (announced > FCGI_FEED_TAKE)
		fcgi_feed_ahead(c->req.ipcFd, announced);
	c->body =
	    read_body(c->req.in, announced, srv->cfg.limits.max_body, &c->body_len, &gone, &oom);
	if (gone) {
		char u[256];
		log_clean(u, sizeof u, FCGX_GetParam("REQUEST_URI", c->req.envp));
		log_msg(LOG_NOTICE, "client went away mid-body (%zu bytes announced) on %s",
			announced, u);
		metrics_request_done(c->route, 400, (uint64_t)(ms_since(&c->t0) * 1000.0));
		/* Finishing still ends the request in the protocol (END_REQUEST),
		 * then closes: the rest of the stream cannot be trusted. */
		c->req.keepConnection = 0;
		conn_finish(srv, c);
		return;
	}
	if (oom) {
		chat_out_of_memory(&res, "out of memory reading the body");
		c->req.keepConnection = 0; /* the rest of the body is unread */
		answer(srv, c, &creq, &res);
		return;
	}
	creq.body = c->body;
	creq.body_len = c->body_len;
	chat_respond(&creq, &srv->cfg.limits, &res);
	if (c->body_len > srv->cfg.limits.max_body && !drain_body(c->req.in))
		c->req.keepConnection = 0;
	if (res.kind == CHAT_POST) {
		struct chat_post *post = res.post;
		res.post = NULL;
		post_start(srv, c, post);
		return;
	}
	answer(srv, c, &creq, &res);
}

static void given_up(struct server *srv, struct conn *c)
{
	log_msg(LOG_DEBUG, "a held request was given up by nginx");
	conn_close(srv, c);
}

/* A held request's connection became readable: nginx gave up on it (the
 * client went away or a timeout passed), or sent something it should not. */
static void held_event(struct server *srv, struct conn *c)
{
	char b;
	ssize_t n = recv(c->req.ipcFd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		/* Nothing after all: look again, which holds it again (a wake
		 * without news keeps its deadline). */
		c->next = NULL;
		answer_again(srv, c, false);
		return;
	}
	given_up(srv, c);
}

/* Leaves c, whose request is still arriving, until more of it comes (an
 * edge) or the timer looks again. False if more came meanwhile: c is
 * still the caller's, to look at again. */
static bool park_partial(struct server *srv, struct conn *c)
{
	uint64_t now = now_ms();
	if (!c->partial) {
		c->partial = true;
		c->partial_since_ms = now;
		c->partial_wait_ms = 1;
	} else if (c->partial_wait_ms < 256) {
		c->partial_wait_ms *= 2;
	}
	if (now - c->partial_since_ms >= (uint64_t)IO_TIMEOUT_S * 1000) {
		log_msg(LOG_NOTICE,
			"a request did not arrive whole within %d s; "
			"connection closed",
			IO_TIMEOUT_S);
		conn_close(srv, c);
		return true;
	}
	pthread_mutex_lock(&srv->lock);
	if (atomic_load(&srv->stopping)) {
		pthread_mutex_unlock(&srv->lock);
		conn_close(srv, c);
		return true;
	}
	if (!settle(c, CONN_HELD)) {
		pthread_mutex_unlock(&srv->lock);
		missed_taken(c);
		return false;
	}
	c->deadline_ms = now + c->partial_wait_ms;
	held_insert(srv, c);
	timer_by(srv, c->deadline_ms);
	pthread_mutex_unlock(&srv->lock);
	return true;
}

/* Keeps n more bytes of a request still arriving in c->in; false when
 * memory ran out. fcgi_head_check refuses a head past FCGI_HEAD_PEEK_MAX,
 * which bounds it. */
static bool keep_taken(struct conn *c, const unsigned char *bytes, size_t n)
{
	if (c->in_cap - c->in_len < n) {
		size_t cap = c->in_cap ? c->in_cap : FCGI_FEED_TAKE;
		while (cap - c->in_len < n)
			cap *= 2;
		unsigned char *grown = realloc(c->in, cap);
		if (!grown)
			return false;
		c->in = grown;
		c->in_cap = cap;
	}
	memcpy(c->in + c->in_len, bytes, n);
	c->in_len += n;
	return true;
}

/*
 * Takes the request waiting on c (which the caller owns) and judges it:
 * true when libfcgi may read it, with what was taken set as the thread's
 * feed (fcgi_feed.h; the caller clears it once the request is read).
 * Otherwise c has been closed (broken or gone), parked (still arriving,
 * what came so far kept in c->in) or let go (nothing there after all).
 */
static bool head_ready(struct server *srv, struct conn *c)
{
	static _Thread_local unsigned char taken[FCGI_FEED_TAKE];
	int fd = c->req.ipcFd;
again:;
	ssize_t n = recv(fd, taken, sizeof taken, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		if (c->partial || c->in_len > 0) {
			if (park_partial(srv, c))
				return false;
			goto again;
		}
		/* An event whose bytes were read with the request before. */
		if (atomic_load(&srv->stopping)) {
			conn_close(srv, c);
			return false;
		}
		if (settle(c, CONN_IDLE))
			return false;
		missed_taken(c);
		goto again;
	}
	if (n < 0 || (n == 0 && c->in_len == 0)) {
		/* Closed by the peer with nothing said, or broken. */
		conn_close(srv, c);
		return false;
	}
	/* Bytes kept from before come first; these are added to them. */
	bool kept = c->in_len > 0;
	if (kept && n > 0 && !keep_taken(c, taken, (size_t)n))
		goto out_of_memory;
	const unsigned char *all = kept ? c->in : taken;
	size_t len = kept ? c->in_len : (size_t)n;
	enum fcgi_head v = fcgi_head_check(all, len);
	if (v == FCGI_HEAD_PARTIAL) {
		if (!kept && !keep_taken(c, taken, len))
			goto out_of_memory;
		/* A full take: more may be waiting already. */
		if ((size_t)n == sizeof taken)
			goto again;
		/* Cut short by the peer: it can never be whole. libfcgi may read
		 * what there is (management records get their answer) without
		 * blocking, since the end follows. */
		struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
		if (n == 0 ||
		    (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))))
			v = FCGI_HEAD_READY;
		all = c->in;
	}
	switch (v) {
	case FCGI_HEAD_READY:
		c->partial = false;
		c->whole = fcgi_request_whole(all, len);
		/* The feed owns c->in from here: the caller's clear frees it. */
		fcgi_feed_set(fd, all, len, c->in);
		c->in = NULL;
		c->in_len = c->in_cap = 0;
		return true;
	case FCGI_HEAD_PARTIAL:
		if (park_partial(srv, c))
			return false;
		goto again;
	case FCGI_HEAD_BAD:
		break;
	}
	log_msg(LOG_NOTICE,
		"a peer sent a request libfcgi cannot safely read "
		"(parameters broken or over %zu bytes); connection closed",
		FCGI_HEAD_MAX_PARAMS);
	conn_close(srv, c);
	return false;
out_of_memory:
	log_msg(LOG_ERROR, "out of memory for a request still arriving; connection closed");
	conn_close(srv, c);
	return false;
}

/* Takes, reads and answers the request waiting on c. */
static void take_and_serve(struct server *srv, struct conn *c)
{
	if (!head_ready(srv, c))
		return;
	serve(srv, c);
	/* Every read of the request is done: what libfcgi left is dropped. */
	fcgi_feed_clear();
}

static void conn_event(struct server *srv, uint64_t tag)
{
	uint32_t index = (uint32_t)tag;
	uint32_t gen = (uint32_t)(tag >> 32);
	if (index >= srv->nslots)
		return;
	struct conn *c = &srv->slots[index];
	uint64_t st = atomic_load(&c->st);
	for (;;) {
		if (st_gen(st) != gen)
			return; /* closed since: the event is stale */
		switch (st_state(st)) {
		case CONN_FREE:
			return;
		case CONN_IDLE:
			if (!atomic_compare_exchange_weak(&c->st, &st, st_make(gen, CONN_BUSY)))
				continue;
			take_and_serve(srv, c);
			return;
		case CONN_BUSY:
			/* Its owner looks again when it lets go. */
			if ((st & ST_MISSED) ||
			    atomic_compare_exchange_weak(&c->st, &st, st | ST_MISSED))
				return;
			continue;
		case CONN_HELD:
			break;
		}
		/* Held: the lock guards the list. */
		pthread_mutex_lock(&srv->lock);
		bool held = atomic_load(&c->st) == st_make(gen, CONN_HELD);
		if (held) {
			held_remove(srv, c);
			set_state(c, CONN_BUSY);
		}
		pthread_mutex_unlock(&srv->lock);
		if (!held) {
			st = atomic_load(&c->st);
			continue;
		}
		if (!c->partial)
			held_event(srv, c);
		else
			take_and_serve(srv, c); /* more of a request still arriving */
		return;
	}
}

/* Deadlines of held requests, and posts other processes made. */
static void timer_event(struct server *srv)
{
	uint64_t ticks;
	if (read(srv->timer_fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
		log_msg(LOG_ERROR, "timerfd read: %s", strerror(errno));

	bool changed = false;
	if (srv->cfg.store_version) {
		uint64_t v;
		/* Only the thread that got the one-shot timer event runs this. */
		if (srv->cfg.store_version(srv->cfg.store_ctx, &v) == 0) {
			pthread_mutex_lock(&srv->lock);
			changed = v != srv->store_version;
			srv->store_version = v;
			pthread_mutex_unlock(&srv->lock);
		}
	}

	struct conn *over = NULL, *woken = NULL;
	pthread_mutex_lock(&srv->lock);
	if (changed)
		atomic_fetch_add(&srv->changes, 1);
	uint64_t now = now_ms();
	uint64_t next = 0;
	struct conn *partial = NULL;
	for (struct conn *c = srv->held, *n; c; c = n) {
		n = c->next;
		if (c->partial) {
			if (c->deadline_ms <= now) {
				held_remove(srv, c);
				set_state(c, CONN_BUSY);
				c->next = partial;
				partial = c;
			} else if (next == 0 || c->deadline_ms < next) {
				next = c->deadline_ms;
			}
			continue;
		}
		if (c->deadline_ms <= now || changed) {
			held_remove(srv, c);
			set_state(c, CONN_BUSY);
			if (c->deadline_ms <= now) {
				c->next = over;
				over = c;
			} else {
				c->next = woken;
				woken = c;
			}
		} else if (next == 0 || c->deadline_ms < next) {
			next = c->deadline_ms;
		}
	}
	srv->timer_due_ms = 0;
	if (next != 0) {
		if (srv->cfg.store_version && now + STORE_POLL_MS < next)
			next = now + STORE_POLL_MS;
		timer_by(srv, next);
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = TAG_TIMER};
	if (epoll_ctl(srv->ep, EPOLL_CTL_MOD, srv->timer_fd, &ev) != 0)
		log_msg(LOG_ERROR, "cannot watch the timer: %s", strerror(errno));
	pthread_mutex_unlock(&srv->lock);

	answer_again(srv, over, true);
	answer_again(srv, woken, false);
	while (partial) {
		struct conn *c = partial;
		partial = c->next;
		c->next = NULL;
		take_and_serve(srv, c);
	}
}

static void set_timeouts(int fd)
{
	struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
		log_msg(LOG_DEBUG, "cannot set socket timeouts: %s", strerror(errno));
}

static void accept_event(struct server *srv)
{
	for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
		pthread_mutex_lock(&srv->lock);
		bool full = srv->free_slots == NULL && srv->used == srv->nslots;
		if (full)
			srv->listen_paused = true; /* release_slot arms it again */
		pthread_mutex_unlock(&srv->lock);
		if (full) {
			log_msg(LOG_NOTICE, "all %u connection slots are taken", srv->nslots);
			return;
		}
		int fd = accept4(srv->cfg.listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (atomic_load(&srv->stopping) || errno == EINVAL || errno == EBADF)
				return; /* the socket was taken away: stop accepting */
			log_msg(LOG_ERROR, "accept failed: %s", strerror(errno));
			/* Out of descriptors or memory: back off rather than spin. */
			struct timespec pause = {0, 100 * 1000 * 1000};
			nanosleep(&pause, NULL);
			break;
		}
		set_timeouts(fd);
		pthread_mutex_lock(&srv->lock);
		struct conn *c = srv->free_slots;
		if (c) {
			srv->free_slots = c->next;
		} else {
			c = &srv->slots[srv->used];
			c->index = srv->used++;
		}
		c->next = NULL;
		FCGX_InitRequest(&c->req, -1, 0);
		c->req.ipcFd = fd;
		/* FCGX_Accept_r first finishes the previous request; this keeps
		 * it from closing the connection it has just been handed. */
		c->req.keepConnection = 1;
		atomic_fetch_add(&srv->connections, 1);
		if (watch_conn(srv, c) != 0) {
			log_msg(LOG_ERROR, "cannot watch a connection: %s", strerror(errno));
			close(fd);
			c->req.ipcFd = -1;
			release_slot(srv, c);
		}
		pthread_mutex_unlock(&srv->lock);
	}
	if (!atomic_load(&srv->stopping))
		arm_listener(srv);
}

/* Handles one event (not TAG_STOP) a thread took. */
static void dispatch(struct server *srv, uint64_t tag)
{
	if (tag == TAG_LISTEN)
		accept_event(srv);
	else if (tag == TAG_TIMER)
		timer_event(srv);
	else if (tag == TAG_POSTS)
		posts_event(srv);
	else if (tag == TAG_NUDGE)
		nudge_event(srv);
	else
		conn_event(srv, tag);
	while (tl_next_conns) {
		struct conn *c = tl_next_conns;
		tl_next_conns = c->again;
		take_and_serve(srv, c);
	}
}

static void thread_done(struct server *srv)
{
	pthread_mutex_lock(&srv->lock);
	srv->running--;
	pthread_cond_signal(&srv->done);
	pthread_mutex_unlock(&srv->lock);
}

/* Counts an event taken, for the standby, and wakes it if it sleeps. */
static void note_taken(struct server *srv)
{
	atomic_fetch_add(&srv->taken, 1);
	if (atomic_load(&srv->standby_idle)) {
		pthread_mutex_lock(&srv->standby_lock);
		pthread_cond_signal(&srv->standby_wake);
		pthread_mutex_unlock(&srv->standby_lock);
	}
}

static void *worker(void *arg)
{
	struct server *srv = arg;
	tl_server = srv;
	tl_batch = &srv->batches[atomic_fetch_add(&srv->nbatches, 1)];
	bool stop = false;
	while (!stop) {
		if (!tl_poller)
			gate_enter(srv);
		uint64_t tags[BATCH_MAX];
		unsigned n = orphans_take(srv, tags, BATCH_MAX);
		if (n == 0) {
			struct epoll_event evs[BATCH_MAX];
			int got = epoll_wait(srv->ep, evs, BATCH_MAX, -1);
			if (got < 0) {
				if (errno == EINTR)
					continue;
				log_msg(LOG_ERROR, "epoll_wait: %s", strerror(errno));
				break;
			}
			for (int i = 0; i < got; i++) {
				if (evs[i].data.u64 == TAG_STOP)
					stop = true; /* after the rest of the batch */
				else
					tags[n++] = evs[i].data.u64;
			}
		}
		for (unsigned i = 0; i < n; i++)
			atomic_store(&tl_batch->tag[i], tags[i]);
		uint64_t tag;
		for (unsigned i = 0; i < n; i++) {
			if (!batch_take(tl_batch, i, &tag))
				continue; /* the standby took it */
			note_taken(srv);
			dispatch(srv, tag);
		}
	}
	server_may_block();
	thread_done(srv);
	return NULL;
}

/* The standby's part when the pollers are held up: an event a poller took
 * in its batch and has not served (it was put off the CPU). Not the
 * orphans: those wait for a poller, or the standby could read a request
 * that waits as a thread beyond --threads. False when there is none. */
static bool standby_take(struct server *srv, uint64_t *tag)
{
	unsigned nb = atomic_load(&srv->nbatches);
	for (unsigned b = 0; b < nb; b++)
		for (unsigned i = 0; i < BATCH_MAX; i++)
			if (batch_take(&srv->batches[b], i, tag))
				return true;
	return false;
}

/*
 * The standby: a thread that takes events only when the pollers have taken
 * none for STANDBY_MS while one is waiting, which is what a poller put off
 * the CPU by another process looks like. With it, one poller is enough on
 * a small machine: every further poller waiting in epoll_wait is a thread
 * woken per request when the load is below what the backend can do, and
 * that wake-up cost more than the request (bench/RESULTS.md, pollers).
 * Under load it wakes every STANDBY_MS to look, and an idle backend leaves
 * it asleep until the next event.
 */
static void *standby(void *arg)
{
	struct server *srv = arg;
	tl_server = srv;
	int err = pthread_setname_np(pthread_self(), "chat-standby");
	if (err != 0)
		log_msg(LOG_DEBUG, "cannot name the standby thread: %s", strerror(err));
	uint64_t seen = atomic_load(&srv->taken);
	bool look_now = false, took = false;
	while (!atomic_load(&srv->stopping)) {
		if (!look_now) {
			struct timespec pause = {0, STANDBY_MS * 1000000L};
			nanosleep(&pause, NULL);
		}
		look_now = false;
		uint64_t now = atomic_load(&srv->taken);
		if (now != seen) {
			seen = now;
			continue;
		}
		/* Every thread busy with a request that waits (no poller at
		 * all) is --threads reached, not a poller held up: the next
		 * request waits for a thread, as --threads says. */
		pthread_mutex_lock(&srv->gate_lock);
		bool polling = srv->pollers > 0;
		pthread_mutex_unlock(&srv->gate_lock);
		struct epoll_event ev;
		uint64_t tag = 0;
		int n = 0;
		if (polling && standby_take(srv, &tag)) {
			n = 1;
		} else if (polling) {
			n = epoll_wait(srv->ep, &ev, 1, 0);
			if (n == 1)
				tag = ev.data.u64;
		}
		if (n == 1) {
			if (tag == TAG_STOP)
				break;
			metrics_standby_took();
			dispatch(srv, tag);
			/* Still stuck: take the next one at once. */
			look_now = took = true;
			continue;
		}
		if (n < 0 && errno != EINTR) {
			log_msg(LOG_ERROR, "epoll_wait: %s", strerror(errno));
			break;
		}
		if (took) {
			/* The pollers may still be held up: look again. */
			took = false;
			continue;
		}
		/* Nothing waits: sleep until the pollers take an event, or for
		 * STANDBY_IDLE_MS, in case they were put off the CPU just as the
		 * load began. The flag is set before taken is read again, and a
		 * poller adds to taken before it reads the flag, so one of them
		 * sees the other. */
		struct timespec until = clock_after(CLOCK_MONOTONIC, STANDBY_IDLE_MS);
		pthread_mutex_lock(&srv->standby_lock);
		atomic_store(&srv->standby_idle, true);
		while (atomic_load(&srv->taken) == seen && !atomic_load(&srv->stopping) &&
		       pthread_cond_timedwait(&srv->standby_wake, &srv->standby_lock, &until) !=
			   ETIMEDOUT)
			;
		atomic_store(&srv->standby_idle, false);
		pthread_mutex_unlock(&srv->standby_lock);
		/* Woken or timed out, the pollers get STANDBY_MS more to take
		 * what waits before the standby does: a process stopped and
		 * continued wakes both at once, and a request taken here that
		 * waits would be one beyond --threads. */
		seen = atomic_load(&srv->taken);
	}
	thread_done(srv);
	return NULL;
}

/* As many connections as descriptors allow: idle kept connections cost a
 * slot and a descriptor each, never a thread. */
static uint32_t slot_count(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1000;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			rl = raised;
	}
	/* Room for the store, the log, epoll and friends. */
	rlim_t n = rl.rlim_cur > 96 ? rl.rlim_cur - 64 : 32;
	return n > MAX_SLOTS ? MAX_SLOTS : (uint32_t)n;
}

static int watch(int ep, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = {.events = events, .data.u64 = tag};
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void server_free(struct server *srv)
{
	if (srv->ep >= 0)
		close(srv->ep);
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	if (srv->timer_fd >= 0)
		close(srv->timer_fd);
	if (srv->posts_fd >= 0)
		close(srv->posts_fd);
	if (srv->nudge_fd >= 0)
		close(srv->nudge_fd);
	free(srv->batches);
	free(srv->orphans);
	for (uint32_t i = 0; srv->slots && i < srv->used; i++) {
		struct conn *c = &srv->slots[i];
		if (st_state(atomic_load(&c->st)) != CONN_FREE) {
			c->req.detached = 1;
			FCGX_Free(&c->req, 1);
			free(c->body);
			free(c->in);
		}
	}
	free(srv->slots);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->done);
	pthread_mutex_destroy(&srv->gate_lock);
	pthread_cond_destroy(&srv->gate_free);
	pthread_mutex_destroy(&srv->standby_lock);
	pthread_cond_destroy(&srv->standby_wake);
	free(srv);
}

struct server *server_start(const struct server_config *cfg)
{
	struct server *srv = calloc(1, sizeof *srv);
	if (!srv) {
		log_msg(LOG_ERROR, "out of memory");
		return NULL;
	}
	srv->cfg = *cfg;
	param_by_len_make();
	srv->ep = srv->stop_fd = srv->timer_fd = srv->posts_fd = srv->nudge_fd = -1;
	srv->stored_tail = &srv->stored;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->done, NULL);
	pthread_mutex_init(&srv->gate_lock, NULL);
	pthread_cond_init(&srv->gate_free, NULL);
	pthread_mutex_init(&srv->standby_lock, NULL);
	pthread_condattr_t monotonic;
	if (pthread_condattr_init(&monotonic) != 0 ||
	    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&srv->standby_wake, &monotonic) != 0) {
		log_msg(LOG_ERROR, "cannot set up the standby's condition variable");
		free(srv);
		return NULL;
	}
	pthread_condattr_destroy(&monotonic);
	srv->cfg.limits.may_block = server_may_block;
	srv->cfg.limits.defer_posts = true;
	/* Half the CPUs, as nginx's workers want the other half. A single
	 * poller put off the CPU by another process once stopped the service
	 * (measured: it served a third of what two did); the standby thread
	 * now takes over then. */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	srv->max_pollers = cfg->pollers ? cfg->pollers : cpus >= 4 ? (unsigned)(cpus / 2) : 1;
	if (srv->max_pollers > cfg->threads)
		srv->max_pollers = cfg->threads;

#ifdef M_ARENA_MAX
	/* glibc gives each thread that meets a locked arena a new one, up to
	 * 8 per CPU, and each keeps the memory its thread freed: with 64 KiB
	 * bodies that was a MiB of the backend's peak. As many arenas as
	 * pollers keep those from waiting on each other. */
	if (mallopt(M_ARENA_MAX, (int)(srv->max_pollers > 2 ? srv->max_pollers : 2)) != 1)
		log_msg(LOG_DEBUG, "mallopt(M_ARENA_MAX) refused");
#endif
#ifdef M_TRIM_THRESHOLD
	/* glibc gives memory back once 128 KiB at the top of a heap are free:
	 * with 64 KiB bodies that was a brk or madvise every few requests, each
	 * a TLB flush on every CPU, and page faults to get it again (measured:
	 * a tenth of a 64 KiB request's CPU). Kept up to this much per arena,
	 * which also fixes the mmap threshold at 128 KiB, above any reply of
	 * the default body limit. */
	if (mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024) != 1)
		log_msg(LOG_DEBUG, "mallopt(M_TRIM_THRESHOLD) refused");
#endif

	srv->batches = malloc(cfg->threads * sizeof *srv->batches);
	/* Each orphan was in a batch, and a poller takes orphans before new
	 * events: twice every batch is more than can ever wait. (Were it
	 * full, the rest would be served after the request that waits.) */
	srv->orphans_cap = cfg->threads * BATCH_MAX * 2;
	srv->orphans = malloc(srv->orphans_cap * sizeof *srv->orphans);
	if (!srv->batches || !srv->orphans) {
		log_msg(LOG_ERROR, "out of memory");
		server_free(srv);
		return NULL;
	}
	for (unsigned t = 0; t < cfg->threads; t++)
		for (unsigned i = 0; i < BATCH_MAX; i++)
			atomic_init(&srv->batches[t].tag[i], TAG_NONE);

	srv->nslots = slot_count();
	srv->slots = calloc(srv->nslots, sizeof *srv->slots);
	if (!srv->slots) {
		log_msg(LOG_ERROR, "out of memory for %u connection slots", srv->nslots);
		server_free(srv);
		return NULL;
	}
	if (cfg->store_version && cfg->store_version(cfg->store_ctx, &srv->store_version) != 0)
		srv->store_version = 0;

	srv->ep = epoll_create1(EPOLL_CLOEXEC);
	srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	srv->posts_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->nudge_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->ep < 0 || srv->stop_fd < 0 || srv->timer_fd < 0 || srv->posts_fd < 0 ||
	    srv->nudge_fd < 0 || watch(srv->ep, srv->nudge_fd, EPOLLIN, TAG_NUDGE) != 0 ||
	    watch(srv->ep, srv->stop_fd, EPOLLIN, TAG_STOP) != 0 ||
	    watch(srv->ep, srv->timer_fd, EPOLLIN | EPOLLONESHOT, TAG_TIMER) != 0 ||
	    watch(srv->ep, srv->posts_fd, EPOLLIN | EPOLLONESHOT, TAG_POSTS) != 0 ||
	    watch(srv->ep, cfg->listen_fd, EPOLLIN | EPOLLONESHOT, TAG_LISTEN) != 0) {
		log_msg(LOG_ERROR, "cannot set up epoll: %s", strerror(errno));
		server_free(srv);
		return NULL;
	}

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	/* The workers, then the standby. */
	for (unsigned i = 0; i <= cfg->threads; i++) {
		pthread_t t;
		pthread_mutex_lock(&srv->lock);
		srv->running++;
		pthread_mutex_unlock(&srv->lock);
		int err = pthread_create(&t, &attr, i < cfg->threads ? worker : standby, srv);
		if (err != 0) {
			pthread_mutex_lock(&srv->lock);
			srv->running--;
			pthread_mutex_unlock(&srv->lock);
			log_msg(LOG_ERROR, "cannot start thread %u of %u: %s", i + 1,
				cfg->threads + 1, strerror(err));
			pthread_attr_destroy(&attr);
			server_stop(srv, 1000);
			return NULL;
		}
	}
	pthread_attr_destroy(&attr);
	return srv;
}

unsigned long server_stop(struct server *srv, unsigned grace_ms)
{
	atomic_store(&srv->stopping, true);
	/* Parked threads come out to see the stop event and end. */
	pthread_mutex_lock(&srv->gate_lock);
	pthread_cond_broadcast(&srv->gate_free);
	pthread_mutex_unlock(&srv->gate_lock);
	pthread_mutex_lock(&srv->standby_lock);
	pthread_cond_broadcast(&srv->standby_wake);
	pthread_mutex_unlock(&srv->standby_lock);
	uint64_t one = 1;
	ssize_t w;
	do
		w = write(srv->stop_fd, &one, sizeof one);
	while (w < 0 && errno == EINTR);

	/* Long-polls answer now, with what they have; idle kept connections
	 * are closed, or served first if nginx has just sent on one. */
	struct conn *held = NULL, *idle = NULL, *partial = NULL;
	pthread_mutex_lock(&srv->lock);
	while (srv->held) {
		struct conn *c = srv->held;
		held_remove(srv, c);
		set_state(c, CONN_BUSY);
		if (c->partial) {
			c->next = partial;
			partial = c;
		} else {
			c->next = held;
			held = c;
		}
	}
	for (uint32_t i = 0; i < srv->used; i++) {
		struct conn *c = &srv->slots[i];
		uint64_t st = atomic_load(&c->st);
		if (st_state(st) == CONN_IDLE &&
		    atomic_compare_exchange_strong(&c->st, &st, st_make(st_gen(st), CONN_BUSY))) {
			c->next = idle;
			idle = c;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	answer_again(srv, held, true);
	while (partial) {
		struct conn *c = partial;
		partial = c->next;
		conn_close(srv, c);
	}
	while (idle) {
		struct conn *c = idle;
		idle = c->next;
		char b;
		/* head_ready closes or settles c itself when it says no. */
		if (recv(c->req.ipcFd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
			take_and_serve(srv, c);
		else
			conn_close(srv, c);
	}

	struct timespec deadline = clock_after(CLOCK_REALTIME, grace_ms);
	/* Posts still being stored are answered here once the pollers are
	 * gone: every one the store commits gets its answer. */
	pthread_mutex_lock(&srv->lock);
	while (srv->running > 0 || srv->posting > 0 || srv->stored) {
		if (srv->stored) {
			struct conn *list = stored_take(srv);
			pthread_mutex_unlock(&srv->lock);
			posts_answer(srv, list);
			pthread_mutex_lock(&srv->lock);
		} else if (pthread_cond_timedwait(&srv->done, &srv->lock, &deadline) == ETIMEDOUT) {
			break;
		}
	}
	unsigned left = srv->running + srv->posting;
	pthread_mutex_unlock(&srv->lock);

	unsigned long served = atomic_load(&srv->served);
	if (left > 0) {
		/* Still inside a request after the grace period: the process exits
		 * under them, so their state must stay allocated. */
		log_msg(LOG_NOTICE, "%u request(s) still in flight at exit", left);
		return served;
	}
	server_free(srv);
	return served;
}
