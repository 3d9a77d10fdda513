/*
 * params_parse (src/server/params.c): real libfcgi reads a request's
 * parameters from memory through the OS_Read defined there, and no write of
 * libfcgi's reaches a socket through its OS_Write. The parameters come from
 * the record reader, as the server hands them over.
 */
#include "params.h"
#include "records.h"
#include "tap.h"

#include <errno.h>
#include <fastcgi.h>
#include <fcgiapp.h>
#include <fcgios.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
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
	if (o->cap - o->n < len) {
		o->cap = (o->n + len) * 2;
		o->b = realloc(o->b, o->cap);
		if (!o->b)
			abort();
	}
	memcpy(o->b + o->n, bytes, len);
	o->n += len;
}

static void buf_free(struct buf *o)
{
	free(o->b);
	*o = (struct buf){0};
}

/* A pair's length (section 3.4): one byte below 128, else four. */
static void length(struct buf *p, size_t n)
{
	if (n < 128) {
		put(p, &(unsigned char){(unsigned char)n}, 1);
		return;
	}
	const unsigned char four[4] = {(unsigned char)(0x80 | n >> 24), (unsigned char)(n >> 16),
				       (unsigned char)(n >> 8), (unsigned char)n};
	put(p, four, sizeof four);
}

/* Parameters as names and values, and as the stream of their pairs. */
struct params {
	char *name[64];
	char *value[64];
	size_t count;
	struct buf stream;
};

static char *copy(const char *s, size_t len)
{
	char *c = malloc(len + 1);
	if (!c)
		abort();
	memcpy(c, s, len);
	c[len] = '\0';
	return c;
}

/* A value of len bytes: fill, with its length at the start so that two of
 * them differ. */
static char *filled(size_t len, char fill)
{
	char *v = malloc(len + 1);
	if (!v)
		abort();
	memset(v, fill, len);
	v[len] = '\0';
	char head[24];
	int n = snprintf(head, sizeof head, "%zu:", len);
	if (n > 0 && (size_t)n <= len)
		memcpy(v, head, (size_t)n);
	return v;
}

/* Adds a pair; the value is taken over. */
static void add(struct params *ps, const char *name, char *value)
{
	if (ps->count == sizeof ps->name / sizeof ps->name[0])
		abort();
	size_t nl = strlen(name), vl = strlen(value);
	ps->name[ps->count] = copy(name, nl);
	ps->value[ps->count] = value;
	ps->count++;
	length(&ps->stream, nl);
	length(&ps->stream, vl);
	put(&ps->stream, name, nl);
	put(&ps->stream, value, vl);
}

static void add_copy(struct params *ps, const char *name, const char *value)
{
	add(ps, name, copy(value, strlen(value)));
}

static void params_clear(struct params *ps)
{
	for (size_t i = 0; i < ps->count; i++) {
		free(ps->name[i]);
		free(ps->value[i]);
	}
	buf_free(&ps->stream);
	*ps = (struct params){0};
}

/* The bytes of a pair with a name of nl bytes and a value of vl bytes. */
static size_t pair_size(size_t nl, size_t vl)
{
	return (nl < 128 ? 1 : 4) + (vl < 128 ? 1 : 4) + nl + vl;
}

/* What nginx sends with conf/chat-fcgi.conf for a browser's POST, with a
 * cookie of 60,000 bytes, an empty query, a header with a name of 200 bytes
 * (four-byte lengths), and a last header that makes the stream exactly
 * total bytes. */
static void nginx_params(struct params *ps, size_t total)
{
	add_copy(ps, "REQUEST_METHOD", "POST");
	add_copy(ps, "REQUEST_URI", "/rooms/lobby/messages");
	add_copy(ps, "QUERY_STRING", "");
	add_copy(ps, "CONTENT_TYPE", "application/x-www-form-urlencoded");
	add_copy(ps, "CONTENT_LENGTH", "15");
	add_copy(ps, "REQUEST_ID", "0f3c2a9d8e7b6a5f4e3d2c1b0a998877");
	add_copy(ps, "REQUEST_SCHEME", "https");
	add_copy(ps, "HTTP_HOST", "chat.example.org");
	add_copy(ps, "HTTP_ORIGIN", "https://chat.example.org");
	add_copy(ps, "HTTP_SEC_FETCH_SITE", "same-origin");
	add_copy(ps, "HTTP_ACCEPT", "text/html,application/xhtml+xml,*/*;q=0.8");
	add(ps, "HTTP_COOKIE", filled(60000, 'c'));
	char name[201];
	memset(name, 'N', 200);
	memcpy(name, "HTTP_X_", 7);
	name[200] = '\0';
	add_copy(ps, name, "a header with a long name");
	static const char last[] = "HTTP_X_FILLER";
	size_t room = total - ps->stream.n - pair_size(sizeof last - 1, 0);
	size_t vl = room < 128 ? room : room - 3;
	if (pair_size(sizeof last - 1, vl) + ps->stream.n != total)
		abort();
	add(ps, last, filled(vl, 'f'));
}

static void record(struct buf *o, unsigned type, const void *content, size_t len)
{
	unsigned pad = (unsigned)((8 - len % 8) % 8);
	const unsigned char h[FCGI_HEADER_LEN] = {
	    FCGI_VERSION_1,     (unsigned char)type, 0, 1, (unsigned char)(len >> 8),
	    (unsigned char)len, (unsigned char)pad,  0};
	put(o, h, sizeof h);
	put(o, content, len);
	put(o, "\0\0\0\0\0\0\0", pad);
}

/* The parameter stream as the server has it: the request as nginx sends
 * it (its parameters in records of at most 32 KiB), through the record
 * reader. */
static struct buf through_reader(const struct buf *stream)
{
	struct buf req = {0}, out = {0};
	static const unsigned char begin[8] = {0, FCGI_RESPONDER, FCGI_KEEP_CONN};
	record(&req, FCGI_BEGIN_REQUEST, begin, sizeof begin);
	for (size_t at = 0; at < stream->n; at += 32768)
		record(&req, FCGI_PARAMS, stream->b + at,
		       stream->n - at < 32768 ? stream->n - at : 32768);
	record(&req, FCGI_PARAMS, NULL, 0);
	struct records r;
	records_init(&r);
	size_t at = 0;
	for (;;) {
		size_t used;
		struct records_found f;
		enum records_event ev = records_read(&r, req.b + at, req.n - at, &used, &f);
		at += used;
		if (ev == RECORDS_PARAMS)
			put(&out, f.data, f.len);
		else if (ev == RECORDS_PARAMS_END)
			break;
		else if (ev != RECORDS_BEGIN)
			abort();
	}
	buf_free(&req);
	return out;
}

/* Every pair found by FCGX_GetParam with its value, FCGI_ROLE too, and no
 * more parameters than that. Says what went wrong in diagnostics. */
static bool all_found(const FCGX_Request *req, const struct params *ps)
{
	if (!req->envp)
		return false;
	bool good = true;
	for (size_t i = 0; i < ps->count; i++) {
		if (!ps->name[i][0]) {
			/* FCGX_GetParam looks up no empty name: the entry
			 * itself. */
			size_t k = 0;
			while (req->envp[k] && !(req->envp[k][0] == '=' &&
						 strcmp(req->envp[k] + 1, ps->value[i]) == 0))
				k++;
			good = good && req->envp[k];
			continue;
		}
		const char *v = FCGX_GetParam(ps->name[i], req->envp);
		if (!v || strcmp(v, ps->value[i]) != 0) {
			diag("%.40s: %s", ps->name[i], v ? "another value" : "not found");
			good = false;
		}
	}
	const char *role = FCGX_GetParam("FCGI_ROLE", req->envp);
	if (!role || strcmp(role, "RESPONDER") != 0)
		good = false;
	size_t n = 0;
	while (req->envp[n])
		n++;
	if (n != ps->count + 1) {
		diag("%zu parameters for %zu pairs", n, ps->count);
		good = false;
	}
	return good;
}

static int sv[2];

/* Nothing waiting on either end of the socket pair. */
static bool quiet(void)
{
	char b[64];
	for (int i = 0; i < 2; i++) {
		ssize_t n = recv(sv[i], b, sizeof b, MSG_DONTWAIT);
		if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			diag("end %d: %zd bytes", i, n);
			return false;
		}
	}
	return true;
}

static void test_parse(FCGX_Request *req)
{
	struct params ps = {0};
	nginx_params(&ps, RECORDS_PARAMS_MAX);
	is_int(ps.stream.n, RECORDS_PARAMS_MAX,
	       "(the nginx parameters take RECORDS_PARAMS_MAX bytes)");
	struct buf stream = through_reader(&ps.stream);
	is_mem(stream.b, stream.n, ps.stream.b, ps.stream.n,
	       "the record reader hands out the parameter stream whole");
	is_int(params_parse(req, stream.b, stream.n), 0,
	       "params_parse reads nginx's parameters (two PARAMS records for libfcgi)");
	ok(all_found(req, &ps), "FCGX_GetParam finds every name with its value (%zu pairs)",
	   ps.count);
	const char *cookie = FCGX_GetParam("HTTP_COOKIE", req->envp);
	is_int(cookie ? strlen(cookie) : 0, 60000, "the cookie's 60,000 bytes");
	const char *query = FCGX_GetParam("QUERY_STRING", req->envp);
	ok(query && *query == '\0', "QUERY_STRING, empty");
	ok(FCGX_GetParam("HTTP_X_NNNNNNNNNNNNNNNNNNNNNNNNNNNNN", req->envp) == NULL,
	   "a prefix of the long name is not a name");
	ok(FCGX_GetError(req->in) == 0, "the input stream has no error");
	params_free(req);
	/* libfcgi leaves envp as it was (the server looks at it only while
	 * it has parameters): the streams show what is freed. */
	ok(!req->in && !req->out && !req->err, "params_free frees the streams");
	buf_free(&stream);
	params_clear(&ps);

	/* One PARAMS record of libfcgi's: 65,535 bytes. */
	nginx_params(&ps, FCGI_MAX_LENGTH);
	is_int(params_parse(req, ps.stream.b, ps.stream.n), 0,
	       "then parameters of 65,535 bytes on the same request");
	ok(all_found(req, &ps), "every one found");
	params_free(req);
	params_clear(&ps);

	add_copy(&ps, "REQUEST_METHOD", "GET");
	add_copy(&ps, "REQUEST_URI", "/rooms/a/messages?after=12");
	add_copy(&ps, "", "an empty name");
	add_copy(&ps, "EMPTY", "");
	is_int(params_parse(req, ps.stream.b, ps.stream.n), 0, "then a short GET");
	ok(all_found(req, &ps), "its parameters, an empty name and value among them");
	ok(FCGX_GetParam("HTTP_COOKIE", req->envp) == NULL, "none of the request before");
	params_free(req);
	params_clear(&ps);

	is_int(params_parse(req, (const unsigned char *)"", 0), 0, "then no parameters at all");
	ok(all_found(req, &ps), "only FCGI_ROLE");
	params_free(req);

	/* The record reader bounds the stream; params_parse holds to it. */
	nginx_params(&ps, RECORDS_PARAMS_MAX);
	unsigned char *over = malloc(RECORDS_PARAMS_MAX + 1);
	if (!over)
		abort();
	memcpy(over, ps.stream.b, RECORDS_PARAMS_MAX);
	over[RECORDS_PARAMS_MAX] = 0;
	is_int(params_parse(req, over, RECORDS_PARAMS_MAX + 1), -1,
	       "a stream over RECORDS_PARAMS_MAX is refused");
	free(over);
	params_free(req);
	params_clear(&ps);

	/* Out of contract (the record reader lets no such stream through),
	 * but libfcgi's refusal must not leave the request unusable. */
	static const unsigned char cut[] = {11, 3, 'R', 'E', 'Q'};
	is_int(params_parse(req, cut, sizeof cut), -1, "a stream that ends inside a pair: -1");
	params_free(req);
	add_copy(&ps, "REQUEST_URI", "/");
	is_int(params_parse(req, ps.stream.b, ps.stream.n), 0, "and the request parses again");
	ok(all_found(req, &ps), "its parameter");
	params_free(req);
	params_clear(&ps);

	/* Many requests, for a leak to show under ASan or valgrind. */
	bool every = true;
	for (int i = 0; i < 2000 && every; i++) {
		char uri[32];
		snprintf(uri, sizeof uri, "/rooms/%d/messages", i);
		add_copy(&ps, "REQUEST_URI", uri);
		add(&ps, "HTTP_COOKIE", filled((size_t)i * 7, 'k'));
		every = params_parse(req, ps.stream.b, ps.stream.n) == 0 && all_found(req, &ps);
		params_free(req);
		params_clear(&ps);
	}
	ok(every, "2000 requests in a row on one FCGX_Request");
}

static void test_no_write(FCGX_Request *req)
{
	struct params ps = {0};
	add_copy(&ps, "REQUEST_URI", "/");
	static const char reply[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello\n";

	is_int(params_parse(req, ps.stream.b, ps.stream.n), 0, "a request parsed");
	ok(FCGX_PutStr(reply, (int)sizeof reply - 1, req->out) == (int)sizeof reply - 1,
	   "FCGX_PutStr takes the reply into libfcgi's buffer");
	is_int(FCGX_FFlush(req->out), -1, "FCGX_FFlush fails");
	ok(FCGX_GetError(req->out) != 0, "the stream has OS_Write's error (%d)",
	   FCGX_GetError(req->out));
	FCGX_FPrintF(req->err, "an error line\n");
	is_int(FCGX_FFlush(req->err), -1, "a write to the error stream fails too");
	ok(quiet(), "nothing reached the socket pair");
	params_free(req);

	/* Even a request whose descriptor is a live socket writes nothing:
	 * OS_Write refuses whatever the descriptor. */
	is_int(params_parse(req, ps.stream.b, ps.stream.n), 0, "a request parsed again");
	req->ipcFd = sv[0];
	FCGX_PutStr(reply, (int)sizeof reply - 1, req->out);
	is_int(FCGX_FFlush(req->out), -1, "with a socket as its descriptor, FCGX_FFlush fails");
	ok(FCGX_GetError(req->out) != 0, "OS_Write refused");
	is_int(FCGX_FClose(req->out), -1, "and so does FCGX_FClose (the end records)");
	ok(quiet(), "nothing reached the socket pair");
	/* FCGX_Free with close 0 leaves the descriptor alone. */
	params_free(req);
	ok(quiet(), "after params_free either");
	ok(send(sv[1], "x", 1, 0) == 1 && recv(sv[0], (char[1]){0}, 1, 0) == 1,
	   "and the socket pair is still open");

	errno = 0;
	is_int(OS_Write(sv[1], (char *)"x", 1), -1, "OS_Write on a socket: -1");
	is_int(errno, EPIPE, "EPIPE");
	ok(quiet(), "nothing sent");
	params_clear(&ps);
}

static void test_no_read(void)
{
	char b[16];
	ok(send(sv[1], "abc", 3, 0) == 3, "(three bytes wait on the socket pair)");
	errno = 0;
	is_int(OS_Read(sv[0], b, sizeof b), -1, "OS_Read of the socket: -1");
	is_int(errno, EBADF, "EBADF");
	static const int fds[] = {0, 1, 2, -1, 1000};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
		errno = 0;
		int n = OS_Read(fds[i], b, sizeof b);
		ok(n == -1 && errno == EBADF, "OS_Read of descriptor %d: -1, EBADF", fds[i]);
	}
	ok(recv(sv[0], b, sizeof b, MSG_DONTWAIT) == 3 && memcmp(b, "abc", 3) == 0,
	   "the bytes are still on the socket");
}

/* The feed is each thread's own: threads parse their own requests at the
 * same time. */
struct worker {
	int which;
	bool good;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	FCGX_Request req;
	w->good = FCGX_InitRequest(&req, -1, 0) == 0;
	for (int i = 0; i < 3000 && w->good; i++) {
		struct params ps = {0};
		char uri[48];
		snprintf(uri, sizeof uri, "/thread/%d/request/%d", w->which, i);
		add_copy(&ps, "REQUEST_URI", uri);
		add(&ps, "HTTP_COOKIE", filled((size_t)(w->which * 1000 + i % 500), 'a'));
		w->good = params_parse(&req, ps.stream.b, ps.stream.n) == 0 && all_found(&req, &ps);
		params_free(&req);
		params_clear(&ps);
	}
	return NULL;
}

static void test_threads(void)
{
	struct worker w[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.which = i};
		if (pthread_create(&t[i], NULL, work, &w[i]) != 0)
			abort();
	}
	bool good = true;
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		good = good && w[i].good;
	}
	ok(good, "four threads parse 3000 requests each at once, each its own");
}

int main(void)
{
	if (!is_int(FCGX_Init(), 0, "FCGX_Init"))
		return done_testing();
	ok(server_libfcgi_works(),
	   "server_libfcgi_works: libfcgi reads and writes through params.c");
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		abort();
	FCGX_Request req;
	is_int(FCGX_InitRequest(&req, -1, 0), 0, "FCGX_InitRequest");
	test_parse(&req);
	test_no_write(&req);
	test_no_read();
	test_threads();
	ok(quiet(), "at the end, nothing on the socket pair");
	close(sv[0]);
	close(sv[1]);
	return done_testing();
}
