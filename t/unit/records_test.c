/*
 * The record reader (src/server/records.c) on streams built here as nginx
 * builds them (FastCGI 1.0): the events each stream gives, and the
 * parameter and body bytes they hand out, whatever the cuts between reads;
 * and the connection given up for every way a peer can break the protocol.
 */
#include "records.h"
#include "tap.h"

#include <fastcgi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

static void put_byte(struct buf *o, unsigned byte)
{
	unsigned char c = (unsigned char)byte;
	put(o, &c, 1);
}

static void buf_free(struct buf *o)
{
	free(o->b);
	*o = (struct buf){0};
}

/* A record header, with any version and content length, true or not. */
static void header(struct buf *o, unsigned version, unsigned type, unsigned id, size_t len,
		   unsigned pad)
{
	const unsigned char h[FCGI_HEADER_LEN] = {(unsigned char)version,    (unsigned char)type,
						  (unsigned char)(id >> 8),  (unsigned char)id,
						  (unsigned char)(len >> 8), (unsigned char)len,
						  (unsigned char)pad,        0};
	put(o, h, sizeof h);
}

/* nginx pads each record to a multiple of 8 bytes; any other value is the
 * padding itself. */
#define PAD_NGINX 256u

/* A record: its header, content, then padding that is not zeros, so that
 * padding taken for content shows. */
static void record_pad(struct buf *o, unsigned type, unsigned id, const void *content, size_t len,
		       unsigned pad)
{
	if (pad == PAD_NGINX)
		pad = (unsigned)((8 - len % 8) % 8);
	header(o, FCGI_VERSION_1, type, id, len, pad);
	put(o, content, len);
	for (unsigned i = 0; i < pad; i++)
		put_byte(o, 0xA5);
}

static void record(struct buf *o, unsigned type, unsigned id, const void *content, size_t len)
{
	record_pad(o, type, id, content, len, 0);
}

static void begin_pad(struct buf *o, unsigned id, unsigned role, bool keep, unsigned pad)
{
	const unsigned char body[8] = {(unsigned char)(role >> 8), (unsigned char)role,
				       keep ? FCGI_KEEP_CONN : 0};
	record_pad(o, FCGI_BEGIN_REQUEST, id, body, sizeof body, pad);
}

static void begin(struct buf *o, unsigned id, bool keep)
{
	begin_pad(o, id, FCGI_RESPONDER, keep, PAD_NGINX);
}

/* A length of a name-value pair (section 3.4): one byte below 128, else
 * four with the high bit set; four also when asked, as a peer may. */
static void length(struct buf *p, uint32_t n, bool four)
{
	if (n < 128 && !four) {
		put_byte(p, n);
		return;
	}
	put_byte(p, 0x80 | n >> 24);
	put_byte(p, n >> 16 & 0xff);
	put_byte(p, n >> 8 & 0xff);
	put_byte(p, n & 0xff);
}

static void pair_n(struct buf *p, const void *name, size_t nl, const void *value, size_t vl)
{
	length(p, (uint32_t)nl, false);
	length(p, (uint32_t)vl, false);
	put(p, name, nl);
	put(p, value, vl);
}

static void pair(struct buf *p, const char *name, const char *value)
{
	pair_n(p, name, strlen(name), value, strlen(value));
}

/* The stream p in PARAMS records of at most max bytes, then the empty
 * PARAMS that ends it. */
static void params_records(struct buf *o, unsigned id, const struct buf *p, size_t max,
			   unsigned pad)
{
	for (size_t at = 0; at < p->n; at += max)
		record_pad(o, FCGI_PARAMS, id, p->b + at, p->n - at < max ? p->n - at : max, pad);
	record_pad(o, FCGI_PARAMS, id, NULL, 0, pad);
}

/* The body in STDIN records of at most max bytes, then the empty STDIN. */
static void stdin_records(struct buf *o, unsigned id, const struct buf *body, size_t max,
			  unsigned pad)
{
	for (size_t at = 0; at < body->n; at += max)
		record_pad(o, FCGI_STDIN, id, body->b + at, body->n - at < max ? body->n - at : max,
			   pad);
	record_pad(o, FCGI_STDIN, id, NULL, 0, pad);
}

/* What the reader made of a stream: its events as words (the pieces of
 * one stream in a row as one word, since their number depends on the
 * cuts), the pieces' bytes end to end, the last BROKEN's sentence, and the
 * first promise of records.h a call broke, if any. */
struct run {
	char trace[1024];
	size_t trace_len;
	enum records_event last;
	struct buf params, body;
	const char *why;
	char wrong[160];
	bool stopped;
};

static void run_free(struct run *u)
{
	buf_free(&u->params);
	buf_free(&u->body);
}

static void word(struct run *u, const char *fmt, ...) TAP_PRINTF(2, 3);
static void word(struct run *u, const char *fmt, ...)
{
	size_t room = sizeof u->trace - u->trace_len;
	int n = snprintf(u->trace + u->trace_len, room, "%s", u->trace_len ? " " : "");
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < room)
		n += vsnprintf(u->trace + u->trace_len + n, room - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room)
		abort(); /* a test's trace is short: a longer one is a bug here */
	u->trace_len += (size_t)n;
}

static void wrong(struct run *u, const char *fmt, ...) TAP_PRINTF(2, 3);
static void wrong(struct run *u, const char *fmt, ...)
{
	if (!u->wrong[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(u->wrong, sizeof u->wrong, fmt, ap);
		va_end(ap);
	}
	u->stopped = true;
}

static void note(struct run *u, enum records_event ev, const struct records_found *f)
{
	bool piece = ev == RECORDS_PARAMS || ev == RECORDS_STDIN;
	if (!(piece && u->last == ev)) {
		switch (ev) {
		case RECORDS_MORE:
			break;
		case RECORDS_BEGIN:
			word(u, "BEGIN %u%s", f->id, f->keep_conn ? " keep" : "");
			break;
		case RECORDS_PARAMS:
			word(u, "PARAMS");
			break;
		case RECORDS_PARAMS_END:
			word(u, "PARAMS_END");
			break;
		case RECORDS_STDIN:
			word(u, "STDIN");
			break;
		case RECORDS_STDIN_END:
			word(u, "STDIN_END");
			break;
		case RECORDS_ABORT:
			word(u, "ABORT");
			break;
		case RECORDS_GET_VALUES:
			word(u, "GET_VALUES %u", f->asked);
			break;
		case RECORDS_UNKNOWN_TYPE:
			word(u, "UNKNOWN_TYPE %u", f->type);
			break;
		case RECORDS_UNKNOWN_ROLE:
			word(u, "UNKNOWN_ROLE %u", f->id);
			break;
		case RECORDS_CANT_MPX:
			word(u, "CANT_MPX %u", f->id);
			break;
		case RECORDS_BROKEN:
			word(u, "BROKEN");
			u->why = f->why;
			break;
		}
	}
	u->last = ev;
}

/*
 * Feeds s[0, n) to r in pieces cut at cuts[0..ncuts) (ascending; a cut may
 * repeat, which makes an empty piece), each piece in a buffer of exactly
 * its size so that a read past it shows under ASan. With done, a request
 * is over at STDIN_END and at ABORT, as the server ends it.
 */
static void feed(struct records *r, const unsigned char *s, size_t n, const size_t *cuts,
		 size_t ncuts, bool done, struct run *u)
{
	size_t from = 0;
	for (size_t k = 0; k <= ncuts && !u->stopped; k++) {
		size_t to = k < ncuts ? cuts[k] : n;
		size_t len = to - from;
		unsigned char *piece = malloc(len ? len : 1);
		if (!piece)
			abort();
		memcpy(piece, s + from, len);
		size_t at = 0, calls = 0;
		while (!u->stopped) {
			struct records_found f;
			size_t used = SIZE_MAX;
			enum records_event ev = records_read(r, piece + at, len - at, &used, &f);
			if (used > len - at) {
				wrong(u, "used %zu of %zu bytes", used, len - at);
				break;
			}
			const unsigned char *given = piece + at;
			at += used;
			/* Each event but the pieces' takes a record of 8 bytes or
			 * more, and a piece takes a byte or more. */
			if (++calls > 2 * len + 4) {
				wrong(u, "%zu calls on %zu bytes", calls, len);
				break;
			}
			if (ev == RECORDS_MORE) {
				if (at != len)
					wrong(u, "RECORDS_MORE with %zu of %zu bytes unused",
					      len - at, len);
				break;
			}
			if (ev == RECORDS_PARAMS || ev == RECORDS_STDIN) {
				if (!f.data || f.len == 0 || f.data < given ||
				    f.len > (size_t)(piece + at - f.data)) {
					wrong(u, "a piece outside the bytes used");
					break;
				}
				put(ev == RECORDS_PARAMS ? &u->params : &u->body, f.data, f.len);
			}
			note(u, ev, &f);
			if (ev == RECORDS_BROKEN || ev == RECORDS_UNKNOWN_ROLE ||
			    ev == RECORDS_CANT_MPX)
				u->stopped = true;
			else if (done && (ev == RECORDS_STDIN_END || ev == RECORDS_ABORT))
				records_request_done(r);
		}
		free(piece);
		from = to;
	}
}

/* The stream in pieces of step bytes (the last one shorter). */
static void feed_by(const struct buf *s, size_t step, bool done, struct run *u)
{
	struct records r;
	records_init(&r);
	size_t ncuts = s->n > 0 ? (s->n - 1) / step : 0;
	size_t *cuts = malloc((ncuts ? ncuts : 1) * sizeof *cuts);
	if (!cuts)
		abort();
	for (size_t k = 0; k < ncuts; k++)
		cuts[k] = (k + 1) * step;
	feed(&r, s->b, s->n, cuts, ncuts, done, u);
	free(cuts);
}

/* Same events, same bytes? */
static bool same_run(const struct run *a, const struct run *b)
{
	return strcmp(a->trace, b->trace) == 0 && a->params.n == b->params.n &&
	       a->body.n == b->body.n &&
	       (a->params.n == 0 || memcmp(a->params.b, b->params.b, a->params.n) == 0) &&
	       (a->body.n == 0 || memcmp(a->body.b, b->body.b, a->body.n) == 0) && !a->wrong[0] &&
	       !b->wrong[0];
}

/* Is a the start of b? */
static bool starts(const struct buf *a, const struct buf *b)
{
	return a->n <= b->n && (a->n == 0 || memcmp(a->b, b->b, a->n) == 0);
}

/*
 * The stream read whole and one byte at a time: both give the events want
 * and keep every promise, and a BROKEN says why. Both give the same
 * pieces, except that before a BROKEN found inside a record the reader has
 * already handed out the pieces before the cut. Returns the whole run for
 * the caller to look at its pieces (run_free after).
 */
static struct run expect(const struct buf *s, bool done, const char *want, const char *name)
{
	struct run whole = {0}, bytes = {0};
	feed_by(s, s->n ? s->n : 1, done, &whole);
	feed_by(s, 1, done, &bytes);
	is_str(whole.trace, want, "%s", name);
	bool broken = strstr(want, "BROKEN") != NULL;
	bool same = strcmp(whole.trace, bytes.trace) == 0 && !whole.wrong[0] && !bytes.wrong[0] &&
		    starts(&whole.params, &bytes.params) && starts(&whole.body, &bytes.body) &&
		    (broken || (whole.params.n == bytes.params.n && whole.body.n == bytes.body.n));
	if (!ok(same, "%s: the same one byte at a time", name))
		diag("whole: %s%s%s; one byte at a time: %s%s%s", whole.trace,
		     whole.wrong[0] ? ": " : "", whole.wrong, bytes.trace,
		     bytes.wrong[0] ? ": " : "", bytes.wrong);
	if (broken)
		ok(whole.why && whole.why[0], "%s: says why (%s)", name,
		   whole.why ? whole.why : "NULL");
	run_free(&bytes);
	return whole;
}

/* expect, for a stream whose pieces need no further look. */
static void expect_only(const struct buf *s, bool done, const char *want, const char *name)
{
	struct run u = expect(s, done, want, name);
	run_free(&u);
}

/* The parameters nginx sends with conf/chat-fcgi.conf, as a browser's
 * request makes them: an empty value, a long value and a long name (both
 * with four-byte lengths). */
static void nginx_params(struct buf *p, const char *method, const char *uri)
{
	pair(p, "REQUEST_METHOD", method);
	pair(p, "REQUEST_URI", uri);
	pair(p, "QUERY_STRING", "");
	pair(p, "CONTENT_TYPE", "application/json");
	pair(p, "CONTENT_LENGTH", "70000");
	pair(p, "REQUEST_ID", "8d4f6ad0c1e2b3a49f0e1d2c3b4a5968");
	pair(p, "REQUEST_SCHEME", "https");
	pair(p, "HTTP_HOST", "chat.example.org");
	pair(p, "HTTP_ORIGIN", "https://chat.example.org");
	pair(p, "HTTP_SEC_FETCH_SITE", "same-origin");
	char accept[300];
	memset(accept, 'a', sizeof accept - 1);
	memcpy(accept, "application/json, text/plain, */*;q=0.8, ", 41);
	accept[sizeof accept - 1] = '\0';
	pair(p, "HTTP_ACCEPT", accept);
	char name[160] = "HTTP_X_";
	memset(name + 7, 'N', sizeof name - 8);
	name[sizeof name - 1] = '\0';
	pair(p, name, "a header with a long name");
}

static void body_bytes(struct buf *body, size_t n)
{
	static const char start[] = "{\"message\":\"";
	put(body, start, sizeof start - 1);
	for (size_t i = sizeof start - 1; i + 2 < n; i++)
		put_byte(body, 'a' + i % 26);
	put(body, "\"}", 2);
}

static void test_nginx_request(void)
{
	struct buf p = {0}, body = {0}, s = {0};
	nginx_params(&p, "POST", "/rooms/lobby/messages");
	body_bytes(&body, 70000);
	begin(&s, 1, true);
	/* Two PARAMS records cut inside a pair, as a peer may. */
	size_t cut = p.n / 2 + 3;
	record_pad(&s, FCGI_PARAMS, 1, p.b, cut, PAD_NGINX);
	record_pad(&s, FCGI_PARAMS, 1, p.b + cut, p.n - cut, PAD_NGINX);
	record_pad(&s, FCGI_PARAMS, 1, NULL, 0, PAD_NGINX);
	/* nginx sends a body in records of 32 KiB at most. */
	stdin_records(&s, 1, &body, 32768, PAD_NGINX);

	const char *want = "BEGIN 1 keep PARAMS PARAMS_END STDIN STDIN_END";
	struct run u = expect(&s, false, want, "a request as nginx sends it");
	is_mem(u.params.b, u.params.n, p.b, p.n, "its PARAMS pieces make the parameter stream");
	is_mem(u.body.b, u.body.n, body.b, body.n, "its STDIN pieces make the body");
	run_free(&u);

	static const size_t steps[] = {2, 3, 7, 8, 9, 13, 100, 4096, 32768 + 8, 65536};
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		u = (struct run){0};
		feed_by(&s, steps[i], false, &u);
		ok(strcmp(u.trace, want) == 0 && !u.wrong[0] && u.params.n == p.n &&
		       memcmp(u.params.b, p.b, p.n) == 0 && u.body.n == body.n &&
		       memcmp(u.body.b, body.b, body.n) == 0,
		   "the request in pieces of %zu bytes: the same events and bytes", steps[i]);
		run_free(&u);
	}

	struct records r;
	records_init(&r);
	u = (struct run){0};
	feed(&r, s.b, s.n, NULL, 0, false, &u);
	ok(records_in_request(&r), "after STDIN_END the request is in progress until it is done");
	records_request_done(&r);
	ok(!records_in_request(&r), "records_request_done ends it");
	run_free(&u);
	buf_free(&p);
	buf_free(&body);
	buf_free(&s);
}

/* A short request with a management record inside each stream, cut at
 * every two places: every way a read can split it. */
static void test_every_two_cuts(void)
{
	struct buf p = {0}, body = {0}, s = {0}, values = {0};
	pair(&p, "REQUEST_METHOD", "POST");
	pair(&p, "REQUEST_URI", "/rooms/a/messages");
	pair(&p, "QUERY_STRING", "");
	char v[140];
	memset(v, 'v', sizeof v - 1);
	v[sizeof v - 1] = '\0';
	pair(&p, "HTTP_ACCEPT", v);
	pair(&p, "CONTENT_LENGTH", "19");
	put(&body, "{\"message\":\"hi!\"}\n", 19);
	pair(&values, FCGI_MAX_CONNS, "");
	pair(&values, "FCGI_UNKNOWN", "");
	pair(&values, FCGI_MPXS_CONNS, "");

	begin(&s, 1, true);
	size_t cut = 2; /* inside the first pair's name */
	record_pad(&s, FCGI_PARAMS, 1, p.b, cut, PAD_NGINX);
	record_pad(&s, FCGI_GET_VALUES, 0, values.b, values.n, 3);
	record_pad(&s, FCGI_PARAMS, 1, p.b + cut, p.n - cut, 1);
	record_pad(&s, FCGI_PARAMS, 1, NULL, 0, 0);
	record_pad(&s, FCGI_STDIN, 1, body.b, 5, PAD_NGINX);
	record_pad(&s, 77, 0, "?", 1, 2);
	record_pad(&s, FCGI_STDIN, 1, body.b + 5, body.n - 5, 0);
	record_pad(&s, FCGI_STDIN, 1, NULL, 0, 0);

	struct run want = {0};
	feed_by(&s, s.n, false, &want);
	is_str(want.trace,
	       "BEGIN 1 keep PARAMS GET_VALUES 5 PARAMS PARAMS_END STDIN UNKNOWN_TYPE 77 STDIN "
	       "STDIN_END",
	       "a short request with management records inside, read whole");
	is_mem(want.params.b, want.params.n, p.b, p.n, "its parameter stream");
	is_mem(want.body.b, want.body.n, body.b, body.n, "its body");

	size_t splits = 0, differ = 0;
	for (size_t i = 0; i <= s.n; i++) {
		for (size_t j = i; j <= s.n; j++) {
			struct records r;
			records_init(&r);
			struct run u = {0};
			const size_t cuts[2] = {i, j};
			feed(&r, s.b, s.n, cuts, 2, false, &u);
			splits++;
			if (!same_run(&u, &want) && differ++ < 5)
				diag("cut at %zu and %zu: %s%s%s", i, j, u.trace,
				     u.wrong[0] ? "; " : "", u.wrong);
			run_free(&u);
		}
	}
	ok(differ == 0, "the same events and bytes for each of the %zu ways to cut it in three",
	   splits);
	run_free(&want);
	buf_free(&p);
	buf_free(&body);
	buf_free(&s);
	buf_free(&values);
}

/* Padding of any length after every kind of record is skipped. */
static void test_padding(void)
{
	struct buf p = {0}, body = {0}, values = {0};
	pair(&p, "REQUEST_METHOD", "GET");
	pair(&p, "REQUEST_URI", "/rooms/a/messages?after=3");
	pair(&values, FCGI_MAX_REQS, "");
	put(&body, "a body", 6);
	const char *want = "BEGIN 1 keep GET_VALUES 2 PARAMS UNKNOWN_TYPE 12 PARAMS PARAMS_END "
			   "STDIN STDIN_END BEGIN 2 ABORT";
	unsigned whole_bad = 0, split_bad = 0;
	for (unsigned pad = 0; pad <= 255; pad++) {
		struct buf s = {0};
		begin_pad(&s, 1, FCGI_RESPONDER, true, pad);
		record_pad(&s, FCGI_GET_VALUES, 0, values.b, values.n, pad);
		record_pad(&s, FCGI_PARAMS, 1, p.b, 10, pad);
		record_pad(&s, 12, 0, "xyz", 3, pad);
		record_pad(&s, FCGI_PARAMS, 1, p.b + 10, p.n - 10, pad);
		record_pad(&s, FCGI_PARAMS, 1, NULL, 0, pad);
		stdin_records(&s, 1, &body, 4, pad);
		begin_pad(&s, 2, FCGI_RESPONDER, false, pad);
		record_pad(&s, FCGI_ABORT_REQUEST, 2, NULL, 0, pad);

		struct run whole = {0}, split = {0};
		feed_by(&s, s.n, true, &whole);
		feed_by(&s, 5, true, &split);
		if ((strcmp(whole.trace, want) != 0 || whole.wrong[0] || whole.params.n != p.n ||
		     memcmp(whole.params.b, p.b, p.n) != 0 || whole.body.n != body.n ||
		     memcmp(whole.body.b, body.b, body.n) != 0) &&
		    whole_bad++ < 3)
			diag("padding %u: %s %s", pad, whole.trace, whole.wrong);
		if (!same_run(&whole, &split) && split_bad++ < 3)
			diag("padding %u in pieces of 5: %s %s", pad, split.trace, split.wrong);
		if (pad == 255)
			expect_only(&s, true, want, "padding of 255 bytes on every record");
		run_free(&whole);
		run_free(&split);
		buf_free(&s);
	}
	ok(whole_bad == 0, "padding of 0 to 255 bytes on every kind of record is skipped");
	ok(split_bad == 0, "and the same in pieces of 5 bytes");
	buf_free(&p);
	buf_free(&body);
	buf_free(&values);
}

static void test_requests_in_a_row(void)
{
	struct buf s = {0}, p1 = {0}, p2 = {0}, p3 = {0}, b1 = {0}, b3 = {0}, all = {0};
	nginx_params(&p1, "POST", "/rooms/a/messages");
	pair(&p2, "REQUEST_METHOD", "GET");
	pair(&p2, "REQUEST_URI", "/rooms/a/messages");
	pair(&p3, "REQUEST_METHOD", "POST");
	pair(&p3, "REQUEST_URI", "/rooms/b/messages");
	body_bytes(&b1, 100);
	body_bytes(&b3, 40);
	begin(&s, 1, true);
	params_records(&s, 1, &p1, 65535, PAD_NGINX);
	stdin_records(&s, 1, &b1, 32768, PAD_NGINX);
	begin(&s, 1, true);
	params_records(&s, 1, &p2, 65535, PAD_NGINX);
	stdin_records(&s, 1, &(struct buf){0}, 32768, PAD_NGINX);
	begin(&s, 300, false);
	params_records(&s, 300, &p3, 65535, PAD_NGINX);
	stdin_records(&s, 300, &b3, 32768, PAD_NGINX);
	struct run u = expect(&s, true,
			      "BEGIN 1 keep PARAMS PARAMS_END STDIN STDIN_END "
			      "BEGIN 1 keep PARAMS PARAMS_END STDIN_END "
			      "BEGIN 300 PARAMS PARAMS_END STDIN STDIN_END",
			      "three requests on one connection, each done before the next");
	put(&all, p1.b, p1.n);
	put(&all, p2.b, p2.n);
	put(&all, p3.b, p3.n);
	is_mem(u.params.b, u.params.n, all.b, all.n, "their parameters, one after the other");
	buf_free(&all);
	put(&all, b1.b, b1.n);
	put(&all, b3.b, b3.n);
	is_mem(u.body.b, u.body.n, all.b, all.n, "their bodies, one after the other");
	run_free(&u);
	buf_free(&all);

	/* A reader left with anything in it starts over with records_init. */
	struct records r;
	memset(&r, 0xff, sizeof r);
	records_init(&r);
	u = (struct run){0};
	feed(&r, s.b, s.n, NULL, 0, true, &u);
	ok(strncmp(u.trace, "BEGIN 1 keep PARAMS", 19) == 0 && !u.wrong[0],
	   "records_init makes any reader new");
	run_free(&u);

	unsigned char none[1] = {0};
	size_t used = 1;
	struct records_found f;
	records_init(&r);
	is_int(records_read(&r, none, 0, &used, &f), RECORDS_MORE, "no bytes: RECORDS_MORE");
	is_int(used, 0, "and none used");
	is_int(records_read(&r, s.b, 5, &used, &f), RECORDS_MORE, "part of a header: RECORDS_MORE");
	is_int(used, 5, "all of it used");
	is_int(records_read(&r, none, 0, &used, &f), RECORDS_MORE,
	       "then no bytes: RECORDS_MORE again");
	is_int(records_read(&r, s.b + 5, s.n - 5, &used, &f), RECORDS_BEGIN,
	       "then the rest: the request begins");
	is_int(used, 16 - 5, "having used the rest of the BEGIN_REQUEST record only");

	buf_free(&s);
	buf_free(&p1);
	buf_free(&p2);
	buf_free(&p3);
	buf_free(&b1);
	buf_free(&b3);
}

/* A GET_VALUES record of the given pairs, alone on the connection. */
static void expect_values(const struct buf *values, unsigned asked, const char *name)
{
	struct buf s = {0};
	record_pad(&s, FCGI_GET_VALUES, 0, values->b, values->n, PAD_NGINX);
	char want[32];
	snprintf(want, sizeof want, "GET_VALUES %u", asked);
	expect_only(&s, false, want, name);
	buf_free(&s);
}

static void test_get_values(void)
{
	static const struct {
		const char *names[4];
		unsigned asked;
		const char *name;
	} cases[] = {
	    {{FCGI_MAX_CONNS}, RECORDS_ASK_MAX_CONNS, "GET_VALUES of FCGI_MAX_CONNS"},
	    {{FCGI_MAX_REQS}, RECORDS_ASK_MAX_REQS, "GET_VALUES of FCGI_MAX_REQS"},
	    {{FCGI_MPXS_CONNS}, RECORDS_ASK_MPXS_CONNS, "GET_VALUES of FCGI_MPXS_CONNS"},
	    {{FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS}, 7, "GET_VALUES of all three"},
	    {{FCGI_MPXS_CONNS, "FCGI_WHATEVER", FCGI_MAX_CONNS},
	     5,
	     "GET_VALUES of two known names and an unknown one"},
	    {{"FCGI_MAX_CONN", "FCGI_MAX_CONNSS", "fcgi_max_conns", "XFCGI_MAX_REQS"},
	     0,
	     "GET_VALUES of near misses only"},
	    {{"FCGI_MPXS_CONNS_AND_MORE", "FCGI_MAX_REQS\x01"},
	     0,
	     "GET_VALUES of names that start as known ones"},
	    {{""}, 0, "GET_VALUES of an empty name"},
	    {{NULL}, 0, "GET_VALUES with no names"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct buf v = {0};
		for (size_t k = 0; k < 4 && cases[i].names[k]; k++)
			pair(&v, cases[i].names[k], "");
		expect_values(&v, cases[i].asked, cases[i].name);
		buf_free(&v);
	}

	struct buf v = {0};
	/* The spec's values are empty, but a value does no harm; a length
	 * may take four bytes even when short. */
	pair(&v, FCGI_MAX_CONNS, "10");
	length(&v, 13, true);
	length(&v, 0, true);
	put(&v, FCGI_MAX_REQS, 13);
	expect_values(&v, 3, "GET_VALUES with a value and with four-byte lengths");
	buf_free(&v);

	/* 3855 pairs of 17 bytes fill a record's 65535 bytes exactly. */
	for (int k = 0; k < 3855; k++)
		pair(&v, FCGI_MPXS_CONNS, "");
	is_int(v.n, FCGI_MAX_LENGTH, "(3855 names fill a record)");
	expect_values(&v, RECORDS_ASK_MPXS_CONNS, "one name 3855 times: asked once");
	buf_free(&v);
	for (int k = 0; k < 1365; k++) {
		pair(&v, FCGI_MAX_CONNS, "");
		pair(&v, FCGI_MAX_REQS, "");
		pair(&v, FCGI_MPXS_CONNS, "");
	}
	pair(&v, FCGI_MAX_REQS, "");
	is_int(v.n, FCGI_MAX_LENGTH, "(4096 names fill a record)");
	expect_values(&v, 7, "three names 1365 times each: each asked once");
	buf_free(&v);
	char long_name[1000];
	memset(long_name, 'N', sizeof long_name);
	while (v.n + 4 + 1 + sizeof long_name + 2 + 15 <= FCGI_MAX_LENGTH)
		pair_n(&v, long_name, sizeof long_name, "", 0);
	pair(&v, FCGI_MPXS_CONNS, "");
	expect_values(&v, RECORDS_ASK_MPXS_CONNS, "long unknown names, then a known one");
	buf_free(&v);

	/* The next GET_VALUES asks afresh. */
	struct buf s = {0};
	pair(&v, FCGI_MAX_CONNS, "");
	pair(&v, FCGI_MAX_REQS, "");
	pair(&v, FCGI_MPXS_CONNS, "");
	record_pad(&s, FCGI_GET_VALUES, 0, v.b, v.n, 0);
	record_pad(&s, FCGI_GET_VALUES, 0, v.b + 16, 15, 0);
	record_pad(&s, FCGI_GET_VALUES, 0, NULL, 0, 0);
	expect_only(&s, false, "GET_VALUES 7 GET_VALUES 2 GET_VALUES 0",
		    "GET_VALUES three times: each asks its own");
	buf_free(&s);

	/* Names cut across reads at any two places. */
	record_pad(&s, FCGI_GET_VALUES, 0, v.b, v.n, 5);
	size_t differ = 0, splits = 0;
	for (size_t i = 0; i <= s.n; i++) {
		for (size_t j = i; j <= s.n; j++) {
			struct records r;
			records_init(&r);
			struct run u = {0};
			const size_t cuts[2] = {i, j};
			feed(&r, s.b, s.n, cuts, 2, false, &u);
			splits++;
			if ((strcmp(u.trace, "GET_VALUES 7") != 0 || u.wrong[0]) && differ++ < 5)
				diag("cut at %zu and %zu: %s %s", i, j, u.trace, u.wrong);
			run_free(&u);
		}
	}
	ok(differ == 0, "GET_VALUES of all three cut in three in each of %zu ways: asked all",
	   splits);
	buf_free(&s);
	buf_free(&v);

	/* A record that ends before its last pair does. */
	pair(&v, FCGI_MAX_CONNS, "");
	record(&s, FCGI_GET_VALUES, 0, v.b, v.n - 3);
	expect_only(&s, false, "BROKEN", "GET_VALUES that ends inside a name");
	buf_free(&s);
	record(&s, FCGI_GET_VALUES, 0, v.b, 1);
	expect_only(&s, false, "BROKEN", "GET_VALUES that ends between the two lengths");
	buf_free(&s);
	buf_free(&v);
	length(&v, 14, false);
	length(&v, 5, true);
	put(&v, "FCGI_MAX_CONNS", 14);
	put(&v, "ab", 2);
	record(&s, FCGI_GET_VALUES, 0, v.b, 4);
	expect_only(&s, false, "BROKEN", "GET_VALUES that ends inside a four-byte length");
	buf_free(&s);
	record(&s, FCGI_GET_VALUES, 0, v.b, v.n);
	expect_only(&s, false, "BROKEN", "GET_VALUES that ends inside a value");
	buf_free(&s);
	buf_free(&v);
	length(&v, 0x7fffffff, true);
	length(&v, 0, false);
	put(&v, "FCGI_MAX_CONNS", 14);
	record(&s, FCGI_GET_VALUES, 0, v.b, v.n);
	expect_only(&s, false, "BROKEN", "GET_VALUES with a name length of 0x7fffffff");
	buf_free(&s);
	buf_free(&v);
}

/* Management records between the records of a request's streams: the
 * streams go on, a pair cut across two records too. */
static void test_management_mid_request(void)
{
	struct buf s = {0}, p = {0}, v = {0}, body = {0};
	nginx_params(&p, "POST", "/rooms/a/messages");
	body_bytes(&body, 500);
	pair(&v, FCGI_MAX_CONNS, "");
	pair(&v, FCGI_MPXS_CONNS, "");

	/* Cuts inside the first name, the second value, the last pair's
	 * four-byte name length (the pair takes 4 + 1 + 159 + 25 bytes) and
	 * its value. */
	size_t cuts[] = {3, 41, p.n - 189 + 2, p.n - 20};
	begin(&s, 9, true);
	size_t from = 0;
	for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
		record_pad(&s, FCGI_PARAMS, 9, p.b + from, cuts[k] - from, PAD_NGINX);
		record_pad(&s, FCGI_GET_VALUES, 0, v.b, v.n, PAD_NGINX);
		from = cuts[k];
	}
	record_pad(&s, FCGI_PARAMS, 9, p.b + from, p.n - from, PAD_NGINX);
	record_pad(&s, FCGI_PARAMS, 9, NULL, 0, PAD_NGINX);
	record_pad(&s, FCGI_STDIN, 9, body.b, 100, PAD_NGINX);
	record_pad(&s, FCGI_GET_VALUES, 0, v.b, v.n, PAD_NGINX);
	record_pad(&s, 200, 0, NULL, 0, PAD_NGINX);
	record_pad(&s, FCGI_STDIN, 9, body.b + 100, body.n - 100, PAD_NGINX);
	record_pad(&s, FCGI_STDIN, 9, NULL, 0, PAD_NGINX);
	record_pad(&s, FCGI_GET_VALUES, 0, v.b, v.n, PAD_NGINX);
	struct run u = expect(&s, false,
			      "BEGIN 9 keep PARAMS GET_VALUES 5 PARAMS GET_VALUES 5 PARAMS "
			      "GET_VALUES 5 PARAMS GET_VALUES 5 PARAMS PARAMS_END STDIN "
			      "GET_VALUES 5 UNKNOWN_TYPE 200 STDIN STDIN_END GET_VALUES 5",
			      "GET_VALUES between PARAMS records and between STDIN records");
	is_mem(u.params.b, u.params.n, p.b, p.n, "the parameters go on across them");
	is_mem(u.body.b, u.body.n, body.b, body.n, "the body goes on across them");
	run_free(&u);
	buf_free(&s);
	buf_free(&p);
	buf_free(&v);
	buf_free(&body);
}

static void test_unknown_type(void)
{
	/* Any record with request id 0 is a management record (section
	 * 3.3): of the types the specification names, this reader takes
	 * GET_VALUES; the others need a request or are an application's own,
	 * and break the protocol. Any other type gets UNKNOWN_TYPE. */
	static const unsigned unknown[] = {0, 12, 99, 255};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		struct buf s = {0}, p = {0};
		pair(&p, "REQUEST_URI", "/");
		record_pad(&s, unknown[i], 0, "content", 7, 9);
		begin(&s, 1, true);
		record_pad(&s, unknown[i], 0, NULL, 0, 0);
		params_records(&s, 1, &p, 65535, PAD_NGINX);
		stdin_records(&s, 1, &(struct buf){0}, 65535, PAD_NGINX);
		char want[160], name[80];
		snprintf(want, sizeof want,
			 "UNKNOWN_TYPE %u BEGIN 1 keep UNKNOWN_TYPE %u PARAMS PARAMS_END STDIN_END",
			 unknown[i], unknown[i]);
		snprintf(name, sizeof name, "type %u with request id 0: UNKNOWN_TYPE, and on",
			 unknown[i]);
		expect_only(&s, false, want, name);
		buf_free(&s);
		buf_free(&p);
	}
	static const unsigned known[] = {1, 2, 3, 4, 5, 6, 7, 8, 10, 11};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
		struct buf s = {0};
		record_pad(&s, known[i], 0, NULL, 0, 0);
		char name[80];
		snprintf(name, sizeof name, "type %u with request id 0: broken", known[i]);
		expect_only(&s, false, "BROKEN", name);
		buf_free(&s);
	}
}

static void test_unknown_role(void)
{
	static const struct {
		unsigned role;
		const char *name;
	} roles[] = {
	    {FCGI_AUTHORIZER, "FCGI_AUTHORIZER"},
	    {FCGI_FILTER, "FCGI_FILTER"},
	    {0, "role 0"},
	    {0x0101, "role 0x0101"},
	    {0xffff, "role 0xffff"},
	};
	for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
		struct buf s = {0};
		begin_pad(&s, 7, roles[i].role, true, PAD_NGINX);
		record(&s, FCGI_PARAMS, 7, NULL, 0);
		begin(&s, 8, true);
		char name[80];
		snprintf(name, sizeof name, "BEGIN_REQUEST for %s: UNKNOWN_ROLE, then nothing",
			 roles[i].name);
		expect_only(&s, false, "UNKNOWN_ROLE 7", name);
		buf_free(&s);
	}
}

static void test_cant_mpx(void)
{
	struct buf s = {0}, p = {0};
	pair(&p, "REQUEST_URI", "/rooms/a/messages");

	begin(&s, 1, true);
	record(&s, FCGI_PARAMS, 1, p.b, 5);
	begin(&s, 2, true);
	record(&s, FCGI_PARAMS, 2, NULL, 0);
	expect_only(&s, false, "BEGIN 1 keep PARAMS CANT_MPX 2",
		    "a second BEGIN_REQUEST among the parameters: CANT_MPX, then nothing");
	buf_free(&s);

	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, 0);
	record(&s, FCGI_STDIN, 1, "ab", 2);
	begin_pad(&s, 65535, FCGI_RESPONDER, false, 0);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN CANT_MPX 65535",
		    "a second BEGIN_REQUEST within the body");
	buf_free(&s);

	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, 0);
	stdin_records(&s, 1, &(struct buf){0}, 65535, 0);
	begin(&s, 2, true);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN_END CANT_MPX 2",
		    "a second BEGIN_REQUEST before the first is done");
	buf_free(&s);

	begin(&s, 1, true);
	begin(&s, 1, true);
	expect_only(&s, false, "BEGIN 1 keep CANT_MPX 1", "the same BEGIN_REQUEST twice");
	buf_free(&s);
	buf_free(&p);
}

/* FCGI_KEEP_CONN is the flags' low bit; the others are reserved. */
static void test_keep_conn(void)
{
	static const struct {
		unsigned flags;
		const char *want;
	} cases[] = {
	    {0x00, "BEGIN 1"}, {0x01, "BEGIN 1 keep"}, {0xfe, "BEGIN 1"}, {0xff, "BEGIN 1 keep"}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct buf s = {0};
		const unsigned char body[8] = {0, FCGI_RESPONDER, (unsigned char)cases[i].flags};
		record(&s, FCGI_BEGIN_REQUEST, 1, body, sizeof body);
		char name[64];
		snprintf(name, sizeof name, "BEGIN_REQUEST with flags %#04x", cases[i].flags);
		expect_only(&s, false, cases[i].want, name);
		buf_free(&s);
	}
}

/* s, with the start of a request: BEGIN, and the first bytes of the
 * parameters. */
static void started(struct buf *s, const struct buf *p)
{
	begin(s, 1, true);
	record_pad(s, FCGI_PARAMS, 1, p->b, 6, PAD_NGINX);
}

/* ... and the rest of the parameters, and part of the body. */
static void in_body(struct buf *s, const struct buf *p)
{
	started(s, p);
	record_pad(s, FCGI_PARAMS, 1, p->b + 6, p->n - 6, PAD_NGINX);
	record(s, FCGI_PARAMS, 1, NULL, 0);
	record_pad(s, FCGI_STDIN, 1, "{\"mess", 6, PAD_NGINX);
}

static void test_broken(void)
{
	struct buf s = {0}, p = {0};
	pair(&p, "REQUEST_URI", "/rooms/a/messages");
	pair(&p, "REQUEST_METHOD", "POST");

	static const unsigned versions[] = {0, 2, 255};
	for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
		char name[80];
		header(&s, versions[i], FCGI_BEGIN_REQUEST, 1, 8, 0);
		put(&s, "\0\1\1\0\0\0\0\0", 8);
		snprintf(name, sizeof name, "a first record of version %u", versions[i]);
		expect_only(&s, false, "BROKEN", name);
		buf_free(&s);
		started(&s, &p);
		header(&s, versions[i], FCGI_PARAMS, 1, 0, 0);
		snprintf(name, sizeof name, "a record of version %u among the parameters",
			 versions[i]);
		expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN", name);
		buf_free(&s);
		header(&s, versions[i], FCGI_GET_VALUES, 0, 0, 0);
		snprintf(name, sizeof name, "a management record of version %u", versions[i]);
		expect_only(&s, false, "BROKEN", name);
		buf_free(&s);
	}

	static const size_t bodies[] = {0, 7, 9, 16};
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		static const unsigned char body[16] = {0, 1, 1};
		char name[80];
		record(&s, FCGI_BEGIN_REQUEST, 1, body, bodies[i]);
		snprintf(name, sizeof name, "a BEGIN_REQUEST body of %zu bytes", bodies[i]);
		expect_only(&s, false, "BROKEN", name);
		buf_free(&s);
	}

	/* Every type, for a request id never begun (also after one is
	 * done), and for another id than the request's. */
	static const unsigned types[] = {FCGI_ABORT_REQUEST,
					 FCGI_END_REQUEST,
					 FCGI_PARAMS,
					 FCGI_STDIN,
					 FCGI_STDOUT,
					 FCGI_STDERR,
					 FCGI_DATA,
					 FCGI_GET_VALUES,
					 FCGI_GET_VALUES_RESULT,
					 FCGI_UNKNOWN_TYPE,
					 99};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		char name[80];
		record(&s, types[i], 1, NULL, 0);
		snprintf(name, sizeof name, "type %u for a request never begun", types[i]);
		expect_only(&s, false, "BROKEN", name);
		buf_free(&s);

		begin(&s, 1, false);
		params_records(&s, 1, &p, 65535, 0);
		stdin_records(&s, 1, &(struct buf){0}, 65535, 0);
		record_pad(&s, types[i], 1, "x", 1, 7);
		snprintf(name, sizeof name, "type %u for the request just done", types[i]);
		expect_only(&s, true, "BEGIN 1 PARAMS PARAMS_END STDIN_END BROKEN", name);
		buf_free(&s);

		started(&s, &p);
		record_pad(&s, types[i], 2, "x", 1, 7);
		snprintf(name, sizeof name, "type %u for another request among the parameters",
			 types[i]);
		expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN", name);
		buf_free(&s);

		in_body(&s, &p);
		record_pad(&s, types[i], 256 + 1, "x", 1, 7);
		snprintf(name, sizeof name, "type %u for another request within the body",
			 types[i]);
		expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN BROKEN", name);
		buf_free(&s);
	}

	/* Types a web server does not send, for the request in progress. */
	static const unsigned never[] = {
	    FCGI_END_REQUEST,       FCGI_STDOUT,       FCGI_STDERR, FCGI_DATA, FCGI_GET_VALUES,
	    FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE, 0,           99,        255};
	for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
		char name[80];
		started(&s, &p);
		record_pad(&s, never[i], 1, "x", 1, 7);
		snprintf(name, sizeof name, "type %u for the request, among its parameters",
			 never[i]);
		expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN", name);
		buf_free(&s);
		in_body(&s, &p);
		record(&s, never[i], 1, NULL, 0);
		snprintf(name, sizeof name, "type %u (empty) for the request, within its body",
			 never[i]);
		expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN BROKEN", name);
		buf_free(&s);
	}

	started(&s, &p);
	record(&s, FCGI_PARAMS, 1, NULL, 0);
	record(&s, FCGI_PARAMS, 1, NULL, 0);
	expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN",
		    "parameters that end inside a pair, then an empty PARAMS again");
	buf_free(&s);
	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, 0);
	record(&s, FCGI_PARAMS, 1, p.b, 2);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END BROKEN",
		    "PARAMS after the parameters ended");
	buf_free(&s);
	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, 0);
	record(&s, FCGI_PARAMS, 1, NULL, 0);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END BROKEN",
		    "an empty PARAMS after the parameters ended");
	buf_free(&s);

	started(&s, &p);
	record(&s, FCGI_STDIN, 1, "{}", 2);
	expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN", "STDIN before the parameters end");
	buf_free(&s);
	begin(&s, 1, true);
	record(&s, FCGI_STDIN, 1, NULL, 0);
	expect_only(&s, false, "BEGIN 1 keep BROKEN", "an empty STDIN before any parameters");
	buf_free(&s);
	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, 0);
	stdin_records(&s, 1, &(struct buf){0}, 65535, 0);
	record(&s, FCGI_STDIN, 1, "{}", 2);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN_END BROKEN",
		    "STDIN after the body ended");
	buf_free(&s);
	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, 0);
	stdin_records(&s, 1, &(struct buf){0}, 65535, 0);
	record(&s, FCGI_STDIN, 1, NULL, 0);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN_END BROKEN",
		    "an empty STDIN after the body ended");
	buf_free(&s);
	in_body(&s, &p);
	record(&s, FCGI_DATA, 1, "data", 4);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN BROKEN",
		    "DATA, which only a filter takes");
	buf_free(&s);
	buf_free(&p);
}

/* Parameters as large as allowed, and larger; lengths that no stream of
 * parameters could hold (CVE-2025-23016 in libfcgi 2.4.4 and older: a
 * length of 0x7fffffff overflowed an allocation's size). */
static void test_params_bounds(void)
{
	struct buf s = {0}, p = {0};
	char *value = malloc(RECORDS_PARAMS_MAX);
	if (!value)
		abort();
	memset(value, 'v', RECORDS_PARAMS_MAX);

	/* One pair of 1 + 4 + 1 + v bytes. */
	size_t v = RECORDS_PARAMS_MAX - 6;
	pair_n(&p, "N", 1, value, v);
	is_int(p.n, RECORDS_PARAMS_MAX, "(a stream of RECORDS_PARAMS_MAX bytes)");
	begin(&s, 1, true);
	params_records(&s, 1, &p, FCGI_MAX_LENGTH, PAD_NGINX);
	struct run u = expect(&s, false, "BEGIN 1 keep PARAMS PARAMS_END",
			      "parameters of RECORDS_PARAMS_MAX bytes in two records");
	is_mem(u.params.b, u.params.n, p.b, p.n, "all of them");
	run_free(&u);
	buf_free(&s);
	buf_free(&p);

	pair_n(&p, "N", 1, value, v + 1);
	begin(&s, 1, true);
	params_records(&s, 1, &p, FCGI_MAX_LENGTH, PAD_NGINX);
	u = expect(&s, false, "BEGIN 1 keep PARAMS BROKEN",
		   "parameters of a byte more than RECORDS_PARAMS_MAX");
	is_int(u.params.n, FCGI_MAX_LENGTH, "only the first record's pieces come out");
	run_free(&u);
	buf_free(&s);
	buf_free(&p);

	/* Many small records over the bound, each a whole pair of 1000
	 * bytes. */
	pair_n(&p, "N", 1, value, 1000 - 6);
	begin(&s, 1, true);
	for (size_t total = 0; total <= RECORDS_PARAMS_MAX; total += p.n)
		record_pad(&s, FCGI_PARAMS, 1, p.b, p.n, PAD_NGINX);
	expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN",
		    "parameters over RECORDS_PARAMS_MAX in records of 1000 bytes");
	buf_free(&s);
	buf_free(&p);

	/* The bound is each request's: two requests of 40000 bytes of
	 * parameters each, on one connection. */
	pair_n(&p, "N", 1, value, 40000 - 6);
	for (unsigned id = 1; id <= 2; id++) {
		begin(&s, id, true);
		params_records(&s, id, &p, FCGI_MAX_LENGTH, PAD_NGINX);
		stdin_records(&s, id, &(struct buf){0}, FCGI_MAX_LENGTH, PAD_NGINX);
	}
	expect_only(&s, true,
		    "BEGIN 1 keep PARAMS PARAMS_END STDIN_END BEGIN 2 keep PARAMS PARAMS_END "
		    "STDIN_END",
		    "two requests of 40000 bytes of parameters each: the bound is per request");
	buf_free(&s);
	buf_free(&p);

	static const struct {
		uint32_t name, value;
	} lengths[] = {
	    {0x7fffffff, 0},
	    {0, 0x7fffffff},
	    {0x7fffffff, 0x7fffffff},
	    {RECORDS_PARAMS_MAX + 1, 1},
	    {1, RECORDS_PARAMS_MAX + 1},
	    {0x00ffffff, 0},
	};
	for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
		char name[96];
		/* A whole pair first, in a record of its own, so that the
		 * events are the same however the stream is cut. */
		begin(&s, 1, true);
		pair(&p, "REQUEST_URI", "/");
		record(&s, FCGI_PARAMS, 1, p.b, p.n);
		buf_free(&p);
		length(&p, lengths[i].name, true);
		length(&p, lengths[i].value, true);
		put(&p, "HTTP_X", 6);
		record(&s, FCGI_PARAMS, 1, p.b, p.n);
		snprintf(name, sizeof name, "a pair with name length %#x and value length %#x",
			 (unsigned)lengths[i].name, (unsigned)lengths[i].value);
		expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN", name);
		buf_free(&s);
		buf_free(&p);
	}

	/* The empty PARAMS inside a pair: a pair of 19 bytes, then one of
	 * 4 + 4 + 200 + 300. */
	pair(&p, "REQUEST_URI", "/rooms");
	length(&p, 200, true);
	length(&p, 300, true);
	put(&p, value, 500);
	static const struct {
		size_t at;
		const char *name;
	} ends[] = {
	    {1, "parameters that end between a pair's two lengths"},
	    {5, "parameters that end inside a pair's name"},
	    {15, "parameters that end inside a pair's value"},
	    {19 + 2, "parameters that end inside a four-byte name length"},
	    {19 + 6, "parameters that end inside a four-byte value length"},
	    {19 + 8 + 199, "parameters that end a byte before a pair's name ends"},
	    {19 + 8 + 499, "parameters that end a byte before a pair's value ends"},
	};
	for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
		begin(&s, 1, true);
		record_pad(&s, FCGI_PARAMS, 1, p.b, ends[i].at, PAD_NGINX);
		record(&s, FCGI_PARAMS, 1, NULL, 0);
		expect_only(&s, false, "BEGIN 1 keep PARAMS BROKEN", ends[i].name);
		buf_free(&s);
	}
	begin(&s, 1, true);
	record_pad(&s, FCGI_PARAMS, 1, p.b, p.n, PAD_NGINX);
	record(&s, FCGI_PARAMS, 1, NULL, 0);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END",
		    "(and with the last byte of the value, they are whole)");
	buf_free(&s);
	buf_free(&p);
	free(value);
}

static void test_abort(void)
{
	struct buf s = {0}, p = {0}, body = {0};
	nginx_params(&p, "POST", "/rooms/a/messages");
	body_bytes(&body, 300);

	begin(&s, 1, true);
	record(&s, FCGI_ABORT_REQUEST, 1, NULL, 0);
	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, PAD_NGINX);
	stdin_records(&s, 1, &body, 65535, PAD_NGINX);
	struct run u = expect(&s, true,
			      "BEGIN 1 keep ABORT BEGIN 1 keep PARAMS PARAMS_END STDIN "
			      "STDIN_END",
			      "ABORT before the parameters; then the same id begins again");
	is_mem(u.params.b, u.params.n, p.b, p.n, "the new request's parameters");
	is_mem(u.body.b, u.body.n, body.b, body.n, "the new request's body");
	run_free(&u);
	buf_free(&s);

	/* The first pair takes 20 bytes: cut after a byte of it, between
	 * the second's lengths, and inside the second's name (25 and not 30,
	 * where what is left of that pair is as long as the first). */
	static const size_t cuts[] = {1, 21, 25};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		char name[96];
		begin(&s, 1, true);
		record_pad(&s, FCGI_PARAMS, 1, p.b, cuts[i], PAD_NGINX);
		record_pad(&s, FCGI_ABORT_REQUEST, 1, NULL, 0, PAD_NGINX);
		begin(&s, 2, false);
		params_records(&s, 2, &p, 65535, PAD_NGINX);
		stdin_records(&s, 2, &body, 65535, PAD_NGINX);
		snprintf(name, sizeof name,
			 "ABORT after %zu bytes of parameters; then a new request", cuts[i]);
		u = expect(&s, true,
			   "BEGIN 1 keep PARAMS ABORT BEGIN 2 PARAMS PARAMS_END STDIN STDIN_END",
			   name);
		ok(u.params.n == cuts[i] + p.n && memcmp(u.params.b + cuts[i], p.b, p.n) == 0,
		   "the new request's parameters start afresh");
		run_free(&u);
		buf_free(&s);
	}

	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, PAD_NGINX);
	record_pad(&s, FCGI_STDIN, 1, body.b, 100, PAD_NGINX);
	/* The spec's ABORT_REQUEST is empty; content does no harm. */
	record_pad(&s, FCGI_ABORT_REQUEST, 1, "why", 3, 5);
	begin(&s, 3, true);
	params_records(&s, 3, &p, 65535, PAD_NGINX);
	stdin_records(&s, 3, &body, 65535, PAD_NGINX);
	u = expect(&s, true,
		   "BEGIN 1 keep PARAMS PARAMS_END STDIN ABORT BEGIN 3 keep PARAMS PARAMS_END "
		   "STDIN STDIN_END",
		   "ABORT within the body; then a new request");
	ok(u.body.n == 100 + body.n && memcmp(u.body.b + 100, body.b, body.n) == 0,
	   "the new request's body");
	run_free(&u);
	buf_free(&s);

	begin(&s, 1, true);
	params_records(&s, 1, &p, 65535, PAD_NGINX);
	stdin_records(&s, 1, &body, 65535, PAD_NGINX);
	record(&s, FCGI_ABORT_REQUEST, 1, NULL, 0);
	expect_only(&s, false, "BEGIN 1 keep PARAMS PARAMS_END STDIN STDIN_END ABORT",
		    "ABORT after the body, before the answer");
	buf_free(&s);

	begin(&s, 1, true);
	record(&s, FCGI_ABORT_REQUEST, 1, NULL, 0);
	record(&s, FCGI_PARAMS, 1, NULL, 0);
	expect_only(&s, true, "BEGIN 1 keep ABORT BROKEN",
		    "a record for an aborted request once it is done");
	buf_free(&s);
	buf_free(&p);
	buf_free(&body);
}

int main(void)
{
	test_nginx_request();
	test_every_two_cuts();
	test_padding();
	test_requests_in_a_row();
	test_get_values();
	test_management_mid_request();
	test_unknown_type();
	test_unknown_role();
	test_cant_mpx();
	test_keep_conn();
	test_broken();
	test_params_bounds();
	test_abort();
	return done_testing();
}
