#include "json_strict.h"

#include "hex.h"
#include "swar.h"
#include "utf8.h"

#include <string.h>
#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h>
#endif

/* Recursive descent over the grammar of RFC 8259; recursion is bounded by
 * max_depth, which the caller keeps small. */
struct scan {
	const unsigned char *p, *end;
	unsigned depth, max_depth;
	const char *why;
	/* What scan_string learnt of the last string: whether it has an
	 * escape, and whether it is written exactly as reply_escape would. */
	bool escapes, as_reply;
	struct json_strict_message *msg;
	bool keys_escaped; /* a top-level key has an escape (and may be "message") */
};

static const char not_json[] = "The body is not valid JSON.";
static const char not_utf8[] = "The body is not valid UTF-8.";

static bool fail(struct scan *s, const char *why)
{
	if (!s->why)
		s->why = why;
	return false;
}

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Reads the four hex digits after "\u"; -1 if they are not there. */
static long read_u_escape(struct scan *s)
{
	if (s->end - s->p < 4)
		return -1;
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int d = hex_value(s->p[i]);
		if (d < 0)
			return -1;
		v = v << 4 | d;
	}
	s->p += 4;
	return v;
}

/* Whether the escape \\uXXXX of cp (its digits end at p) is the one
 * reply_escape writes: only control characters without a short escape, with
 * lowercase hex. */
static bool u_escape_as_reply(long cp, const unsigned char *p)
{
	return cp < 0x20 && cp != '\b' && cp != '\t' && cp != '\n' && cp != '\f' && cp != '\r' &&
	       !(p[-1] >= 'A' && p[-1] <= 'F');
}

/* Whether c ends a plain run in a string: what swar_string_stop flags. */
static bool string_stop(unsigned char c)
{
	return c < 0x20 || c == '"' || c == '\\' || c >= 0x80;
}

#if defined(__SSE2__) && defined(__GNUC__)
/* Bit i set when byte i of the sixteen at p ends a plain run: a signed
 * compare with 0x20 takes the bytes of 0x80 and above with the controls. */
static inline unsigned stop_mask16(const unsigned char *p)
{
	__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i quote = _mm_cmpeq_epi8(x, _mm_set1_epi8('"'));
	__m128i backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'));
	__m128i low = _mm_cmplt_epi8(x, _mm_set1_epi8(0x20));
	return (unsigned)_mm_movemask_epi8(_mm_or_si128(low, _mm_or_si128(quote, backslash)));
}
#endif

/* The last sixteen bytes looked at, and where their stops are: a string
 * has a stop every few bytes (escapes, non-ASCII characters), and the next
 * one is often in the same block. */
struct run_block {
	const unsigned char *base; /* NULL: none */
	unsigned mask;
};

/* The first byte from p on that ends a plain ASCII run in a string, or end:
 * sixteen bytes at a time where SSE2 is there (all of x86-64), else eight.
 * p never goes back between calls on one block. */
static const unsigned char *plain_run_end(const unsigned char *p, const unsigned char *end,
					  struct run_block *rb)
{
#if defined(__SSE2__) && defined(__GNUC__)
	if (rb->base) {
		size_t off = (size_t)(p - rb->base);
		if (off < 16) {
			unsigned m = rb->mask >> off << off;
			if (m)
				return rb->base + __builtin_ctz(m);
			p = rb->base + 16;
		}
	}
	for (; end - p >= 16; p += 16) {
		unsigned m = stop_mask16(p);
		if (m) {
			rb->base = p;
			rb->mask = m;
			return p + __builtin_ctz(m);
		}
	}
	rb->base = NULL;
#else
	(void)rb;
#endif
	for (; end - p >= 8; p += 8) {
		uint64_t m = swar_string_stop(swar_load(p));
		if (m) {
			p += swar_first(m);
			break;
		}
	}
	while (p < end && !string_stop(*p))
		p++;
	return p;
}

/* A key may not hold U+0000: json-c cuts keys at the first NUL, so
 * "message\u0000x" would be taken for "message". UTF-8 is checked here, in
 * the one pass: outside strings the grammar admits only ASCII. Locals, not
 * s->p, keep the loop in registers. */
static bool scan_string(struct scan *s, bool is_key)
{
	const unsigned char *p = s->p + 1; /* after the opening quote */
	const unsigned char *const end = s->end;
	bool escapes = false, as_reply = true;
	struct run_block rb = {NULL, 0};
	for (;;) {
		p = plain_run_end(p, end, &rb);
		if (p == end)
			break;
		unsigned char c = *p;
		if (c >= 0x80) {
			/* Non-ASCII text is mostly runs of such characters. */
			do {
				size_t n = utf8_sequence(p, (size_t)(end - p));
				if (!n) {
					s->p = p;
					return fail(s, not_utf8);
				}
				p += n;
			} while (p < end && *p >= 0x80);
			continue;
		}
		if (c == '"') {
			s->p = p + 1;
			s->escapes = escapes;
			s->as_reply = as_reply;
			return true;
		}
		s->p = p;
		if (c < 0x20)
			return fail(s, "The JSON has a raw control character in a string; "
				       "control characters must be escaped.");
		escapes = true;
		if (end - p < 2)
			break;
		c = p[1];
		p += 2;
		switch (c) {
		case '/':
			as_reply = false; /* the reply writes '/' as it is */
			continue;
		case '"':
		case '\\':
		case 'b':
		case 'f':
		case 'n':
		case 'r':
		case 't':
			continue;
		case 'u':
			break;
		default:
			return fail(s, "The JSON has an invalid escape in a string.");
		}
		s->p = p;
		long cp = read_u_escape(s);
		if (cp < 0)
			return fail(s, "The JSON has an invalid \\u escape in a string.");
		if (cp == 0 && is_key)
			return fail(s, "The JSON has an object key with a NUL character.");
		if (cp >= 0xDC00 && cp <= 0xDFFF)
			return fail(s, "The JSON has an unpaired UTF-16 surrogate escape.");
		if (!u_escape_as_reply(cp, s->p))
			as_reply = false;
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			/* A high surrogate must be followed at once by a low one. */
			if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
				return fail(s, "The JSON has an unpaired UTF-16 surrogate escape.");
			s->p += 2;
			long lo = read_u_escape(s);
			if (lo < 0xDC00 || lo > 0xDFFF)
				return fail(s, "The JSON has an unpaired UTF-16 surrogate escape.");
		}
		p = s->p;
	}
	return fail(s, "The JSON ends inside a string.");
}

static bool scan_digits(struct scan *s)
{
	if (s->p == s->end || !is_digit(*s->p))
		return fail(s, "The JSON has an invalid number.");
	while (s->p < s->end && is_digit(*s->p))
		s->p++;
	return true;
}

/* number = [ minus ] int [ frac ] [ exp ]; int = zero / ( digit1-9 *DIGIT ) */
static bool scan_number(struct scan *s)
{
	if (*s->p == '-')
		s->p++;
	if (s->p < s->end && *s->p == '0') {
		s->p++;
		if (s->p < s->end && is_digit(*s->p))
			return fail(s, "The JSON has a number with a leading zero.");
	} else if (!scan_digits(s)) {
		return false;
	}
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (!scan_digits(s))
			return false;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (!scan_digits(s))
			return false;
	}
	return true;
}

static bool scan_literal(struct scan *s, const char *word, size_t len)
{
	if ((size_t)(s->end - s->p) < len)
		return fail(s, not_json);
	for (size_t i = 0; i < len; i++)
		if (s->p[i] != (unsigned char)word[i])
			return fail(s, not_json);
	s->p += len;
	return true;
}

static bool scan_value(struct scan *s);

/* Objects and arrays share one loop: members are "key": value or value. */
static bool scan_container(struct scan *s, unsigned char close)
{
	if (++s->depth > s->max_depth)
		return fail(s, "The JSON is nested too deeply.");
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == close) {
		s->p++;
		s->depth--;
		return true;
	}
	for (;;) {
		bool is_message = false;
		if (close == '}') {
			if (s->p == s->end || *s->p != '"')
				return fail(s, "The JSON has an object key that is not a string.");
			const unsigned char *key = s->p + 1;
			if (!scan_string(s, true))
				return false;
			if (s->depth == 1) {
				is_message = s->p - key == 8 && memcmp(key, "message\"", 8) == 0;
				s->keys_escaped |= s->escapes;
			}
			skip_ws(s);
			if (s->p == s->end || *s->p != ':')
				return fail(s, not_json);
			s->p++;
			skip_ws(s);
		}
		const unsigned char *value = s->p;
		if (!scan_value(s))
			return false;
		/* json-c keeps the last of duplicate keys: so does this. */
		if (is_message && s->msg) {
			bool string = *value == '"';
			s->msg->raw = string ? (const char *)value + 1 : NULL;
			s->msg->raw_len = string ? (size_t)(s->p - value) - 2 : 0;
			s->msg->escapes = string && s->escapes;
			s->msg->as_reply = string && s->as_reply;
		}
		skip_ws(s);
		if (s->p == s->end)
			return fail(s, "The JSON ends before the value does.");
		if (*s->p == close) {
			s->p++;
			s->depth--;
			return true;
		}
		if (*s->p != ',')
			return fail(s, not_json);
		s->p++;
		skip_ws(s);
	}
}

static bool scan_value(struct scan *s)
{
	if (s->p == s->end)
		return fail(s, "The JSON ends before the value does.");
	switch (*s->p) {
	case '{':
		return scan_container(s, '}');
	case '[':
		return scan_container(s, ']');
	case '"':
		return scan_string(s, false);
	case 't':
		return scan_literal(s, "true", 4);
	case 'f':
		return scan_literal(s, "false", 5);
	case 'n':
		return scan_literal(s, "null", 4);
	default:
		if (*s->p == '-' || is_digit(*s->p))
			return scan_number(s);
		return fail(s, not_json);
	}
}

bool json_strict_scan(const char *text, size_t len, unsigned max_depth,
		      struct json_strict_message *msg, const char **why)
{
	struct scan s = {
	    .p = (const unsigned char *)text,
	    .end = (const unsigned char *)text + len,
	    .max_depth = max_depth,
	    .msg = msg,
	};
	if (msg)
		*msg = (struct json_strict_message){0};
	skip_ws(&s);
	if (scan_value(&s)) {
		skip_ws(&s);
		if (s.p == s.end) {
			if (msg && s.keys_escaped)
				msg->raw = NULL; /* "mess\u0061ge" may be the one */
			return true;
		}
		fail(&s, "The body has bytes after the JSON value.");
	}
	/* Bad UTF-8 anywhere is the first thing a client is told of. */
	*why = utf8_valid(text, len) ? s.why : not_utf8;
	if (msg)
		msg->raw = NULL;
	return false;
}

bool json_strict_check(const char *text, size_t len, unsigned max_depth, const char **why)
{
	return json_strict_scan(text, len, max_depth, NULL, why);
}
