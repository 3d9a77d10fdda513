#include "fcgi_head.h"

#include <stdbool.h>
#include <stdint.h>

#define RECORD_HEADER   8
#define VERSION_1       1
#define TYPE_PARAMS     4
#define TYPE_STDIN      5
#define TYPE_GET_VALUES 9

/* Walks the name-value pairs of the parameter stream across records. */
struct pairs {
	unsigned char len[8]; /* the two lengths, 1 or 4 bytes each */
	unsigned have;        /* bytes of len read so far */
	uint64_t skip;        /* name and value bytes still to pass */
};

/* Bytes the two lengths take, once their first bytes are known; 0 when
 * still unknown. */
static unsigned lengths_size(const struct pairs *p)
{
	if (p->have == 0)
		return 0;
	unsigned first = p->len[0] & 0x80 ? 4 : 1;
	if (p->have <= first)
		return 0;
	return first + (p->len[first] & 0x80 ? 4 : 1);
}

static uint64_t length_at(const unsigned char *b)
{
	if (!(b[0] & 0x80))
		return b[0];
	return (uint64_t)(b[0] & 0x7f) << 24 | (uint64_t)b[1] << 16 | (uint64_t)b[2] << 8 | b[3];
}

/* Feeds n parameter bytes; 0 while sane, -1 for a length past the limit. */
static int feed(struct pairs *p, const unsigned char *b, size_t n)
{
	while (n > 0) {
		if (p->skip > 0) {
			size_t take = p->skip < n ? (size_t)p->skip : n;
			p->skip -= take;
			b += take;
			n -= take;
			continue;
		}
		p->len[p->have++] = *b++;
		n--;
		unsigned size = lengths_size(p);
		if (size != 0 && p->have == size) {
			unsigned first = p->len[0] & 0x80 ? 4 : 1;
			uint64_t name = length_at(p->len), value = length_at(p->len + first);
			if (name > FCGI_HEAD_MAX_PARAMS || value > FCGI_HEAD_MAX_PARAMS)
				return -1;
			p->skip = name + value;
			p->have = 0;
		}
	}
	return 0;
}

enum fcgi_head fcgi_head_check(const unsigned char *buf, size_t len)
{
	struct pairs pairs = {.have = 0};
	size_t params = 0;
	size_t off = 0;
	for (;;) {
		if (len - off < RECORD_HEADER)
			return off >= FCGI_HEAD_PEEK_MAX ? FCGI_HEAD_BAD : FCGI_HEAD_PARTIAL;
		const unsigned char *h = buf + off;
		if (h[0] != VERSION_1)
			return FCGI_HEAD_BAD;
		/* A management record (request id 0) other than GET_VALUES:
		 * libfcgi answers it with UNKNOWN_TYPE but leaks 48 bytes each
		 * time (seen under valgrind), so a peer could grow us at will. */
		if (h[2] == 0 && h[3] == 0 && h[1] != TYPE_GET_VALUES)
			return FCGI_HEAD_BAD;
		size_t content = (size_t)h[4] << 8 | h[5];
		size_t record = RECORD_HEADER + content + h[6];
		if (h[1] == TYPE_PARAMS) {
			if (content == 0)
				/* The end of the parameters: every pair whole? */
				return pairs.have == 0 && pairs.skip == 0 ? FCGI_HEAD_READY
									  : FCGI_HEAD_BAD;
			size_t here = len - off - RECORD_HEADER;
			if (here > content)
				here = content;
			params += content;
			if (params > FCGI_HEAD_MAX_PARAMS ||
			    feed(&pairs, h + RECORD_HEADER, here) != 0)
				return FCGI_HEAD_BAD;
			if (here < content)
				return FCGI_HEAD_PARTIAL;
		}
		if (len - off < record)
			return off + record > FCGI_HEAD_PEEK_MAX ? FCGI_HEAD_BAD
								 : FCGI_HEAD_PARTIAL;
		off += record;
	}
}

bool fcgi_request_whole(const unsigned char *buf, size_t len)
{
	for (size_t off = 0; len - off >= RECORD_HEADER;) {
		const unsigned char *h = buf + off;
		size_t content = (size_t)h[4] << 8 | h[5];
		size_t record = RECORD_HEADER + content + h[6];
		if (len - off < record)
			return false;
		if (h[1] == TYPE_STDIN && content == 0)
			return true;
		off += record;
	}
	return false;
}
