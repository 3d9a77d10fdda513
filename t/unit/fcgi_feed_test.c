/* The feed: libfcgi reads what the server took from a connection, then the
 * socket, and never the socket for bytes the feed holds. Real libfcgi over a
 * real socket pair. */
#include "fcgi_feed.h"
#include "tap.h"

#include <errno.h>
#include <fcgiapp.h>
#include <fcgios.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct buf {
	unsigned char *b;
	size_t n, cap;
};

static void put(struct buf *o, const void *bytes, size_t len)
{
	if (len == 0)
		return;
	if (o->n + len > o->cap) {
		o->cap = (o->n + len) * 2;
		o->b = realloc(o->b, o->cap);
		if (!o->b)
			abort();
	}
	memcpy(o->b + o->n, bytes, len);
	o->n += len;
}

static void record(struct buf *o, int type, const void *content, size_t len)
{
	unsigned char h[8] = {
	    1, (unsigned char)type, 0, 1, (unsigned char)(len >> 8), (unsigned char)len, 0, 0};
	put(o, h, 8);
	put(o, content, len);
}

static void pair(struct buf *p, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	unsigned char len[5] = {(unsigned char)nl};
	size_t n = 1;
	if (vl < 128) {
		len[n++] = (unsigned char)vl;
	} else {
		len[n++] = (unsigned char)(0x80 | vl >> 24);
		len[n++] = (unsigned char)(vl >> 16);
		len[n++] = (unsigned char)(vl >> 8);
		len[n++] = (unsigned char)vl;
	}
	put(p, len, n);
	put(p, name, nl);
	put(p, value, vl);
}

/* A request with REQUEST_URI=uri, a parameter BIG of big_len bytes (none
 * for 0) and body as its body. */
static struct buf request(const char *uri, size_t big_len, const char *body)
{
	static const unsigned char begin[8] = {0, 1, 1, 0, 0, 0, 0, 0}; /* responder, keep */
	struct buf o = {0}, p = {0};
	record(&o, 1, begin, 8);
	pair(&p, "REQUEST_URI", uri);
	if (big_len) {
		char *v = malloc(big_len + 1);
		if (!v)
			abort();
		memset(v, 'b', big_len);
		v[big_len] = 0;
		pair(&p, "BIG", v);
		free(v);
	}
	for (size_t at = 0; at < p.n; at += 65535)
		record(&o, 4, p.b + at, p.n - at < 65535 ? p.n - at : 65535);
	record(&o, 4, NULL, 0);
	if (*body)
		record(&o, 5, body, strlen(body));
	record(&o, 5, NULL, 0);
	free(p.b);
	return o;
}

static int sv[2];

static void socket_pair(void)
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		abort();
}

static void send_all(const unsigned char *b, size_t n)
{
	while (n > 0) {
		ssize_t w = write(sv[1], b, n);
		if (w <= 0)
			abort();
		b += w;
		n -= (size_t)w;
	}
}

/* Accepts the request on sv[0] with libfcgi as the server does, reads its
 * body, and says whether the parameters and body are as sent. */
static bool read_back(const char *uri, size_t big_len, const char *body, const char *what)
{
	FCGX_Request req;
	FCGX_InitRequest(&req, -1, 0);
	req.ipcFd = sv[0];
	req.keepConnection = 1;
	req.detached = 1;
	bool accepted = FCGX_Accept_r(&req) == 0;
	ok(accepted, "%s: libfcgi accepts the request", what);
	if (!accepted)
		return false;
	const char *u = FCGX_GetParam("REQUEST_URI", req.envp);
	const char *big = FCGX_GetParam("BIG", req.envp);
	bool params =
	    u && strcmp(u, uri) == 0 && (big_len ? big && strlen(big) == big_len : big == NULL);
	ok(params, "%s: its parameters", what);
	char got[256];
	int n = FCGX_GetStr(got, sizeof got, req.in);
	is_mem(got, n > 0 ? (size_t)n : 0, body, strlen(body), "%s: its body", what);
	ok(FCGX_GetStr(got, sizeof got, req.in) == 0 && FCGX_GetError(req.in) == 0,
	   "%s: then the end of the body", what);
	req.keepConnection = 1; /* the socket pair is closed by the test */
	FCGX_Finish_r(&req);
	return params;
}

static void on_signal(int sig)
{
	(void)sig;
}

/* Interrupts the main thread's read with a signal, then sends it a byte. */
static void *interrupt_then_send(void *main_thread)
{
	struct timespec pause = {0, 100 * 1000 * 1000};
	nanosleep(&pause, NULL);
	pthread_kill(*(pthread_t *)main_thread, SIGUSR2);
	nanosleep(&pause, NULL);
	if (write(sv[1], "!", 1) != 1)
		abort();
	return NULL;
}

static size_t take(unsigned char *into, size_t cap)
{
	ssize_t n = recv(sv[0], into, cap, MSG_DONTWAIT);
	return n > 0 ? (size_t)n : 0;
}

int main(void)
{
	if (FCGX_Init() != 0) {
		ok(0, "FCGX_Init");
		return done_testing();
	}
	ok(fcgi_feed_works(),
	   "libfcgi's reads come through the feed (the check chat-fcgi starts with)");

	/* A request taken whole: libfcgi reads the feed, not the socket. */
	socket_pair();
	struct buf r = request("/chat/", 0, "{\"message\":\"fed\"}");
	send_all(r.b, r.n);
	unsigned char taken[FCGI_FEED_TAKE];
	size_t n = take(taken, sizeof taken);
	is_int((long long)n, (long long)r.n, "the whole request is taken in one recv");
	send_all((const unsigned char *)"xyz", 3);
	fcgi_feed_set(sv[0], taken, n, NULL);
	read_back("/chat/", 0, "{\"message\":\"fed\"}", "taken whole");
	is_int((long long)fcgi_feed_left(), 0, "the feed is used up");
	char rest[8];
	ssize_t left = recv(sv[0], rest, sizeof rest, MSG_DONTWAIT);
	is_mem(rest, left > 0 ? (size_t)left : 0, "xyz", 3,
	       "what came on the socket after the take is still there: libfcgi did not read it");
	fcgi_feed_clear();
	free(r.b);

	/* Only the start taken: libfcgi reads the feed, then the socket. */
	r = request("/chat/split", 0, "{\"message\":\"split body\"}");
	size_t head = r.n - 20;
	send_all(r.b, head);
	n = take(taken, sizeof taken);
	is_int((long long)n, (long long)head, "the start of a request is taken");
	send_all(r.b + head, r.n - head);
	fcgi_feed_set(sv[0], taken, n, NULL);
	read_back("/chat/split", 0, "{\"message\":\"split body\"}", "the rest from the socket");
	fcgi_feed_clear();
	free(r.b);

	/* A feed longer than libfcgi's buffer, owned by the feed (freed by the
	 * clear: the sanitizer and valgrind runs see a leak otherwise). */
	r = request("/chat/big", 20000, "{\"message\":\"after big params\"}");
	unsigned char *owned = malloc(r.n);
	if (!owned)
		abort();
	memcpy(owned, r.b, r.n);
	ok(r.n > FCGI_FEED_TAKE, "a request of %zu bytes, more than one take", r.n);
	fcgi_feed_set(sv[0], owned, r.n, owned);
	read_back("/chat/big", 20000, "{\"message\":\"after big params\"}",
		  "a feed libfcgi reads in several pieces");
	is_int((long long)fcgi_feed_left(), 0, "that feed is used up too");
	fcgi_feed_clear();
	free(r.b);

	/* A feed for another descriptor is not read. */
	r = request("/chat/other", 0, "{\"message\":\"socket\"}");
	send_all(r.b, r.n);
	fcgi_feed_set(sv[0] + 100, (const unsigned char *)"not this", 8, NULL);
	read_back("/chat/other", 0, "{\"message\":\"socket\"}", "another descriptor's feed");
	is_int((long long)fcgi_feed_left(), 8, "... which stays unread");
	fcgi_feed_clear();
	is_int((long long)fcgi_feed_left(), 0, "a cleared feed holds nothing");
	free(r.b);

	/* Reading ahead: once the head's take is used up, libfcgi's next read
	 * of a large body takes the rest of it off the socket at once. */
	size_t big = 60000;
	char *text = malloc(big + 1);
	char *back = malloc(big + 1);
	if (!text || !back)
		abort();
	for (size_t i = 0; i < big; i++)
		text[i] = (char)('a' + i % 26);
	text[big] = 0;
	r = request("/chat/ahead", 0, text);
	send_all(r.b, r.n);
	n = take(taken, sizeof taken);
	fcgi_feed_set(sv[0], taken, n, NULL);
	fcgi_feed_ahead(sv[0], big);
	FCGX_Request req;
	FCGX_InitRequest(&req, -1, 0);
	req.ipcFd = sv[0];
	req.keepConnection = 1;
	req.detached = 1;
	ok(FCGX_Accept_r(&req) == 0, "reading ahead: libfcgi accepts the request");
	int part = FCGX_GetStr(back, 10000, req.in);
	size_t ahead = fcgi_feed_left();
	ok(ahead > 40000 && recv(sv[0], rest, sizeof rest, MSG_DONTWAIT) < 0,
	   "one read past the take took the rest of the body (%zu bytes in the feed)", ahead);
	int more = part > 0 ? FCGX_GetStr(back + part, (int)(big + 1 - (size_t)part), req.in) : -1;
	is_mem(back, part > 0 && more >= 0 ? (size_t)(part + more) : 0, text, big,
	       "libfcgi reads the whole body from there, in order");
	FCGX_Finish_r(&req);
	fcgi_feed_clear();
	free(r.b);

	/* At once, never more than the announced body and its records. */
	r = request("/chat/ahead", 0, text);
	send_all(r.b, r.n);
	n = take(taken, sizeof taken);
	fcgi_feed_set(sv[0], taken, n, NULL);
	fcgi_feed_ahead(sv[0], 20000);
	FCGX_InitRequest(&req, -1, 0);
	req.ipcFd = sv[0];
	req.keepConnection = 1;
	req.detached = 1;
	ok(FCGX_Accept_r(&req) == 0 && FCGX_GetStr(back, 10000, req.in) == 10000,
	   "a body announced shorter: accepted, read");
	ahead = fcgi_feed_left();
	ok(ahead > 10000 && ahead <= 20000 + 4 * 16,
	   "one read took no more than 20000 bytes and record headers (%zu)", ahead);
	FCGX_Finish_r(&req);
	fcgi_feed_clear();
	while (take(taken, sizeof taken) > 0)
		;
	free(r.b);

	/* A small body, and after a clear: reads as libfcgi asks. */
	send_all((const unsigned char *)text, 100);
	fcgi_feed_ahead(sv[0], 1000);
	is_int(OS_Read(sv[0], back, FCGI_FEED_TAKE), 100,
	       "a body smaller than libfcgi's buffer: one read into that buffer");
	is_int((long long)fcgi_feed_left(), 0, "... nothing taken ahead");
	send_all((const unsigned char *)text, 100);
	fcgi_feed_ahead(sv[0], big);
	fcgi_feed_clear();
	char small[10];
	is_int(OS_Read(sv[0], small, sizeof small), 10, "after a clear: a read of what is asked");
	is_int((long long)take(taken, sizeof taken), 90, "... the rest is still on the socket");
	free(text);
	free(back);

	/* A read interrupted by a signal is made again, not taken by libfcgi
	 * for a broken connection (a socket with a receive timeout, as the
	 * server's have, is not restarted by the kernel). */
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART */
	sigaction(SIGUSR2, &sa, NULL);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	pthread_t self = pthread_self(), helper;
	if (pthread_create(&helper, NULL, interrupt_then_send, &self) != 0)
		abort();
	char one[4];
	errno = 0;
	int got = OS_Read(sv[0], one, sizeof one);
	ok(got == 1 && one[0] == '!',
	   "a read interrupted by a signal goes on to the byte that comes (%d, %s)", got,
	   got < 0 ? strerror(errno) : "no error");
	pthread_join(helper, NULL);

	close(sv[0]);
	close(sv[1]);
	return done_testing();
}
