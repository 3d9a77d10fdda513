/* fcgi_head_check: when a request's parameters are whole and sane enough to
 * hand to libfcgi. */
#include "fcgi_head.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

struct buf {
	unsigned char b[200000];
	size_t n;
};

static void record(struct buf *o, int version, int type, const void *content, size_t len,
		   size_t padding)
{
	unsigned char h[8] = {
	    (unsigned char)version, (unsigned char)type,    0, 1, (unsigned char)(len >> 8),
	    (unsigned char)len,     (unsigned char)padding, 0};
	memcpy(o->b + o->n, h, 8);
	o->n += 8;
	if (len)
		memcpy(o->b + o->n, content, len);
	o->n += len;
	memset(o->b + o->n, 0, padding);
	o->n += padding;
}

static size_t pair(unsigned char *out, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value), n = 0;
	out[n++] = (unsigned char)nl;
	if (vl < 128) {
		out[n++] = (unsigned char)vl;
	} else {
		out[n++] = (unsigned char)(0x80 | vl >> 24);
		out[n++] = (unsigned char)(vl >> 16);
		out[n++] = (unsigned char)(vl >> 8);
		out[n++] = (unsigned char)vl;
	}
	memcpy(out + n, name, nl);
	memcpy(out + n + nl, value, vl);
	return n + nl + vl;
}

static const unsigned char begin[8] = {0, 1, 1, 0, 0, 0, 0, 0};

int main(void)
{
	static struct buf o;
	unsigned char p[4096];
	size_t pl = pair(p, "REQUEST_METHOD", "POST");
	pl += pair(p + pl, "REQUEST_URI", "/chat/");
	pl += pair(p + pl, "CONTENT_LENGTH", "15");

	o.n = 0;
	record(&o, 1, 1, begin, 8, 0);
	record(&o, 1, 4, p, pl, 3);
	record(&o, 1, 4, NULL, 0, 0);
	size_t head = o.n;
	record(&o, 1, 5, "{\"message\":\"x\"}", 15, 1);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_READY, "a whole request is ready");
	is_int(fcgi_head_check(o.b, head), FCGI_HEAD_READY, "... and so are its parameters alone");
	int partial = 0;
	for (size_t cut = 0; cut < head; cut++)
		partial += fcgi_head_check(o.b, cut) == FCGI_HEAD_PARTIAL;
	is_int(partial, (int)head, "cut anywhere before the parameters end: partial");

	/* fcgi_request_whole: the body too, up to its empty STDIN record. */
	ok(!fcgi_request_whole(o.b, o.n), "a body without its closing STDIN record: not whole");
	size_t body_end = o.n;
	record(&o, 1, 5, NULL, 0, 0);
	ok(fcgi_request_whole(o.b, o.n), "with it: whole");
	int cut_whole = 0;
	for (size_t cut = 0; cut < o.n; cut++)
		cut_whole += fcgi_request_whole(o.b, cut);
	is_int(cut_whole, 0, "cut anywhere before the end: not whole");
	ok(!fcgi_request_whole(o.b, body_end + 4), "... half a record header included");
	o.n = body_end;

	o.b[0] = 2;
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_BAD, "another protocol version: bad");

	/* A pair split across two records, and a 4-byte value length. */
	char big[300];
	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	size_t bl = pair(p, "HTTP_X_LONG", big);
	o.n = 0;
	record(&o, 1, 1, begin, 8, 0);
	record(&o, 1, 4, p, 3, 0);
	record(&o, 1, 4, p + 3, bl - 3, 0);
	record(&o, 1, 4, NULL, 0, 0);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_READY, "a pair split across records");

	/* Lengths whose sum overflows an int: libfcgi would abort. */
	unsigned char evil[10] = {0xc0, 0, 0, 0, 0xc0, 0, 0, 0, 'A', 'B'};
	o.n = 0;
	record(&o, 1, 1, begin, 8, 0);
	record(&o, 1, 4, evil, sizeof evil, 0);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_BAD, "lengths of 1 GiB: bad at once");
	record(&o, 1, 4, NULL, 0, 0);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_BAD, "... also when the stream ends");

	/* The stream ends inside a pair. */
	o.n = 0;
	record(&o, 1, 1, begin, 8, 0);
	record(&o, 1, 4, p, 10, 0);
	record(&o, 1, 4, NULL, 0, 0);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_BAD, "parameters that end inside a pair: bad");

	/* Over 64 KiB of parameters. */
	o.n = 0;
	record(&o, 1, 1, begin, 8, 0);
	static char huge[40000];
	memset(huge, 'h', sizeof huge - 1);
	static unsigned char hp[40100];
	size_t hl = pair(hp, "HTTP_A", huge);
	record(&o, 1, 4, hp, hl, 0);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_PARTIAL, "40 KB of parameters: still fine");
	hl = pair(hp, "HTTP_B", huge);
	record(&o, 1, 4, hp, hl, 0);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_BAD, "80 KB of parameters: bad");

	/* Unknown and management records before the parameters are passed over. */
	o.n = 0;
	record(&o, 1, 9,
	       "\x0b\x00"
	       "FCGI_MAX_CONNS",
	       13, 3);
	record(&o, 1, 1, begin, 8, 0);
	record(&o, 1, 77, "???", 3, 0);
	pl = pair(p, "REQUEST_METHOD", "GET");
	record(&o, 1, 4, p, pl, 0);
	record(&o, 1, 4, NULL, 0, 0);
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_READY, "other records first: still ready");
	is_int(fcgi_head_check(o.b, 0), FCGI_HEAD_PARTIAL, "nothing yet: partial");

	/* A management record of an unknown type: libfcgi leaks on it. */
	o.n = 0;
	unsigned char unknown[8] = {1, 99, 0, 0, 0, 3, 0, 0};
	memcpy(o.b, unknown, 8);
	memcpy(o.b + 8, "xyz", 3);
	o.n = 11;
	is_int(fcgi_head_check(o.b, o.n), FCGI_HEAD_BAD, "an unknown management record: bad");
	return done_testing();
}
