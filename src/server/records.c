#include "records.h"

#include <fastcgi.h>
#include <string.h>

void records_init(struct records *r)
{
	memset(r, 0, sizeof *r);
}

bool records_in_request(const struct records *r)
{
	return r->id != 0;
}

void records_request_done(struct records *r)
{
	r->id = 0;
	r->phase = RECORDS_IDLE;
}

/* Bytes the two lengths of a pair take once their first bytes are known;
 * 0 while that is still unknown. A length is one byte, or four with the
 * high bit of the first set. */
static unsigned lengths_size(const struct records_pairs *p)
{
	if (p->lengths_have == 0)
		return 0;
	unsigned first = p->lengths[0] & 0x80 ? 4 : 1;
	if (p->lengths_have <= first)
		return 0;
	return first + (p->lengths[first] & 0x80 ? 4 : 1);
}

static uint64_t length_at(const unsigned char *b)
{
	if (!(b[0] & 0x80))
		return b[0];
	return (uint64_t)(b[0] & 0x7f) << 24 | (uint64_t)b[1] << 16 | (uint64_t)b[2] << 8 | b[3];
}

static bool pairs_whole(const struct records_pairs *p)
{
	return p->lengths_have == 0 && p->name_left == 0 && p->value_left == 0;
}

/* A GET_VALUES name that has just ended: one of the variables known? */
static void recognise(const struct records_pairs *p, unsigned *asked)
{
	static const struct {
		const char *name;
		unsigned bit;
	} known[] = {
	    {FCGI_MAX_CONNS, RECORDS_ASK_MAX_CONNS},
	    {FCGI_MAX_REQS, RECORDS_ASK_MAX_REQS},
	    {FCGI_MPXS_CONNS, RECORDS_ASK_MPXS_CONNS},
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (p->name_total == strlen(known[i].name) &&
		    memcmp(p->name, known[i].name, p->name_total) == 0)
			*asked |= known[i].bit;
}

/* The two lengths are known: the pair's name and value come next. False
 * for a length past RECORDS_PARAMS_MAX. */
static bool pair_begins(struct records_pairs *p, const unsigned char *lengths)
{
	unsigned first = lengths[0] & 0x80 ? 4 : 1;
	uint64_t name = length_at(lengths), value = length_at(lengths + first);
	if (name > RECORDS_PARAMS_MAX || value > RECORDS_PARAMS_MAX)
		return false;
	p->lengths_have = 0;
	p->name_total = p->name_left = name;
	p->value_left = value;
	return true;
}

/* Walks n more bytes of pairs; false for a length past RECORDS_PARAMS_MAX.
 * With asked, names are matched against the GET_VALUES variables; without,
 * a name and its value are passed over together. */
static bool pairs_walk(struct records_pairs *p, const unsigned char *b, size_t n, unsigned *asked)
{
	while (n > 0) {
		if (!asked && (p->name_left > 0 || p->value_left > 0)) {
			uint64_t pair = p->name_left + p->value_left;
			size_t take = pair < n ? (size_t)pair : n;
			size_t from_name = take < p->name_left ? take : (size_t)p->name_left;
			p->name_left -= from_name;
			p->value_left -= take - from_name;
			b += take;
			n -= take;
			continue;
		}
		if (p->name_left > 0) {
			size_t take = p->name_left < n ? (size_t)p->name_left : n;
			size_t kept = (size_t)(p->name_total - p->name_left);
			if (kept < sizeof p->name) {
				size_t room = sizeof p->name - kept;
				memcpy(p->name + kept, b, take < room ? take : room);
			}
			p->name_left -= take;
			b += take;
			n -= take;
			if (p->name_left == 0)
				recognise(p, asked);
			continue;
		}
		if (p->value_left > 0) {
			size_t take = p->value_left < n ? (size_t)p->value_left : n;
			p->value_left -= take;
			b += take;
			n -= take;
			continue;
		}
		/* Both lengths here at once, as they nearly always are. */
		if (p->lengths_have == 0) {
			size_t first = b[0] & 0x80 ? 4 : 1;
			if (n > first && n >= first + (b[first] & 0x80 ? 4 : 1)) {
				size_t size = first + (b[first] & 0x80 ? 4 : 1);
				if (!pair_begins(p, b))
					return false;
				b += size;
				n -= size;
				if (asked && p->name_left == 0)
					recognise(p, asked);
				continue;
			}
		}
		p->lengths[p->lengths_have++] = *b++;
		n--;
		unsigned size = lengths_size(p);
		if (size != 0 && p->lengths_have == size && !pair_begins(p, p->lengths))
			return false;
		if (asked && size != 0 && p->lengths_have == 0 && p->name_left == 0)
			recognise(p, asked);
	}
	return true;
}

static enum records_event broken(struct records_found *f, const char *why)
{
	f->why = why;
	return RECORDS_BROKEN;
}

/* A whole header has come: judges the record it opens. RECORDS_MORE when
 * its content may follow. */
static enum records_event record_opens(struct records *r, struct records_found *f)
{
	const unsigned char *h = r->head;
	if (h[0] != FCGI_VERSION_1)
		return broken(f, "a record of a FastCGI version other than 1");
	r->type = h[1];
	r->record_id = (unsigned)h[2] << 8 | h[3];
	r->left = (size_t)h[4] << 8 | h[5];
	r->padding = h[6];
	unsigned id = r->record_id;

	/* Management records (section 3.3) may come at any time. A known
	 * type with request id 0 other than GET_VALUES is either an
	 * application's own (END_REQUEST, GET_VALUES_RESULT...) or one that
	 * needs a request: broken. Any other type gets UNKNOWN_TYPE. */
	if (id == FCGI_NULL_REQUEST_ID) {
		if (r->type == FCGI_GET_VALUES) {
			memset(&r->values_pairs, 0, sizeof r->values_pairs);
			r->asked = 0;
		} else if (r->type >= FCGI_BEGIN_REQUEST && r->type <= FCGI_MAXTYPE) {
			return broken(f, "a record of a type that is no management record "
					 "with request id 0");
		}
		return RECORDS_MORE;
	}
	if (r->type == FCGI_BEGIN_REQUEST) {
		if (r->id != 0) {
			/* One request at a time (FCGI_MPXS_CONNS 0). */
			f->id = id;
			return RECORDS_CANT_MPX;
		}
		if (r->left != sizeof r->begin)
			return broken(f, "a BEGIN_REQUEST record whose body is not 8 bytes");
		r->begin_have = 0;
		return RECORDS_MORE;
	}
	if (r->id == 0)
		return broken(f, "a record for a request that was never begun");
	if (id != r->id)
		return broken(f, "a record for a request other than the one in progress");
	switch (r->type) {
	case FCGI_ABORT_REQUEST:
		return RECORDS_MORE;
	case FCGI_PARAMS:
		if (r->phase != RECORDS_IN_PARAMS)
			return broken(f, "parameters after the end of the parameters");
		r->params += r->left;
		if (r->params > RECORDS_PARAMS_MAX)
			return broken(f, "parameters over 64 KiB");
		return RECORDS_MORE;
	case FCGI_STDIN:
		if (r->phase != RECORDS_IN_STDIN)
			return broken(f, r->phase == RECORDS_IN_PARAMS
					     ? "a body before the end of the parameters"
					     : "a body after the end of the body");
		return RECORDS_MORE;
	case FCGI_DATA:
		return broken(f, "an FCGI_DATA record, which only a filter takes");
	default:
		return broken(f, "a record of a type a web server does not send");
	}
}

/* The current record's content and padding are all read: what it means. */
static enum records_event record_ends(struct records *r, struct records_found *f)
{
	if (r->record_id == FCGI_NULL_REQUEST_ID) {
		if (r->type != FCGI_GET_VALUES) {
			f->type = r->type;
			return RECORDS_UNKNOWN_TYPE;
		}
		if (!pairs_whole(&r->values_pairs))
			return broken(f, "a GET_VALUES record that ends inside a name");
		f->asked = r->asked;
		return RECORDS_GET_VALUES;
	}
	switch (r->type) {
	case FCGI_BEGIN_REQUEST: {
		unsigned role = (unsigned)r->begin[0] << 8 | r->begin[1];
		f->id = r->record_id;
		if (role != FCGI_RESPONDER)
			return RECORDS_UNKNOWN_ROLE;
		f->keep_conn = (r->begin[2] & FCGI_KEEP_CONN) != 0;
		r->id = r->record_id;
		r->phase = RECORDS_IN_PARAMS;
		r->params = 0;
		memset(&r->params_pairs, 0, sizeof r->params_pairs);
		return RECORDS_BEGIN;
	}
	case FCGI_ABORT_REQUEST:
		return RECORDS_ABORT;
	case FCGI_PARAMS:
		/* Only the empty record that ends the stream gets here with news:
		 * the pieces of the others went out as they came. */
		if (r->empty) {
			if (!pairs_whole(&r->params_pairs))
				return broken(f, "parameters that end inside a name-value pair");
			r->phase = RECORDS_IN_STDIN;
			return RECORDS_PARAMS_END;
		}
		return RECORDS_MORE;
	case FCGI_STDIN:
		if (r->empty) {
			r->phase = RECORDS_WHOLE;
			return RECORDS_STDIN_END;
		}
		return RECORDS_MORE;
	default:
		return RECORDS_MORE;
	}
}

enum records_event records_read(struct records *r, const unsigned char *bytes, size_t len,
				size_t *used, struct records_found *f)
{
	size_t at = 0;
	enum records_event ev = RECORDS_MORE;
	memset(f, 0, sizeof *f);
	for (;;) {
		if (r->have < sizeof r->head) {
			if (r->have == 0 && len - at >= sizeof r->head) {
				/* A whole header here, as nearly always. */
				memcpy(r->head, bytes + at, sizeof r->head);
				r->have = sizeof r->head;
				at += sizeof r->head;
			} else {
				size_t take = sizeof r->head - r->have;
				if (take > len - at)
					take = len - at;
				memcpy(r->head + r->have, bytes + at, take);
				r->have += (unsigned)take;
				at += take;
				if (r->have < sizeof r->head)
					break;
			}
			ev = record_opens(r, f);
			if (ev != RECORDS_MORE)
				break;
			r->empty = r->left == 0;
		}
		if (r->left > 0) {
			size_t n = len - at < r->left ? len - at : r->left;
			if (n == 0)
				break;
			const unsigned char *b = bytes + at;
			r->left -= n;
			at += n;
			if (r->record_id == FCGI_NULL_REQUEST_ID) {
				if (r->type == FCGI_GET_VALUES &&
				    !pairs_walk(&r->values_pairs, b, n, &r->asked)) {
					ev = broken(f, "a GET_VALUES name over 64 KiB");
					break;
				}
				continue;
			}
			switch (r->type) {
			case FCGI_BEGIN_REQUEST:
				memcpy(r->begin + r->begin_have, b, n);
				r->begin_have += (unsigned)n;
				continue;
			case FCGI_PARAMS:
				if (!pairs_walk(&r->params_pairs, b, n, NULL)) {
					ev = broken(f, "a parameter name or value over 64 KiB");
					break;
				}
				f->data = b;
				f->len = n;
				ev = RECORDS_PARAMS;
				break;
			case FCGI_STDIN:
				f->data = b;
				f->len = n;
				ev = RECORDS_STDIN;
				break;
			default:
				continue; /* ABORT_REQUEST's content, if any */
			}
			break;
		}
		if (r->padding > 0) {
			size_t n = len - at < r->padding ? len - at : r->padding;
			if (n == 0)
				break;
			r->padding -= (unsigned)n;
			at += n;
			if (r->padding > 0)
				break;
		}
		/* The record is read: the next byte starts a header. */
		r->have = 0;
		ev = record_ends(r, f);
		if (ev != RECORDS_MORE)
			break;
		if (at == len)
			break;
	}
	*used = at;
	return ev;
}
