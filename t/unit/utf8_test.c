/* utf8_valid: strict UTF-8 (RFC 3629). */
#include "tap.h"
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Encodes a code point (any value up to 0x1FFFFF, surrogates included) the
 * shortest way; returns the number of bytes. */
static size_t encode(uint32_t cp, unsigned char out[4])
{
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (unsigned char)(0xC0 | (cp >> 6));
		out[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (unsigned char)(0xE0 | (cp >> 12));
		out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (unsigned char)(0xF0 | (cp >> 18));
	out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

/* A reference validator written the other way round: decode each sequence
 * to a code point, then reject overlong forms, surrogates and values above
 * U+10FFFF. */
static bool ref_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			n = 2, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			n = 3, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			n = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return false; /* a continuation byte, or F8..FF */
		}
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n;
	}
	return true;
}

static bool valid(const char *s, size_t len)
{
	/* A copy in a buffer of exactly len bytes, so that a read past the end
	 * shows under valgrind or ASan. */
	char *copy = malloc(len ? len : 1);
	if (!copy)
		abort();
	memcpy(copy, s, len);
	bool r = utf8_valid(copy, len);
	free(copy);
	return r;
}

#define VALID(lit, name)   ok(valid(lit, sizeof(lit) - 1), "valid: %s", name)
#define INVALID(lit, name) ok(!valid(lit, sizeof(lit) - 1), "invalid: %s", name)

static void test_boundaries(void)
{
	static const struct {
		uint32_t cp;
		const char *name;
	} cps[] = {
	    {0x0000, "U+0000"},     {0x007F, "U+007F"},     {0x0080, "U+0080"},
	    {0x07FF, "U+07FF"},     {0x0800, "U+0800"},     {0xD7FF, "U+D7FF"},
	    {0xE000, "U+E000"},     {0xFFFD, "U+FFFD"},     {0xFFFE, "U+FFFE"},
	    {0xFFFF, "U+FFFF"},     {0x10000, "U+10000"},   {0xFFFFF, "U+FFFFF"},
	    {0x100000, "U+100000"}, {0x10FFFF, "U+10FFFF"},
	};
	for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
		unsigned char b[4];
		size_t n = encode(cps[i].cp, b);
		ok(valid((const char *)b, n), "valid: boundary %s alone", cps[i].name);
		/* Also inside text, after an ASCII run long enough for a fast path. */
		char buf[32] = "abcdefghijklmnop";
		memcpy(buf + 16, b, n);
		memcpy(buf + 16 + n, "xyz", 3);
		ok(valid(buf, 16 + n + 3), "valid: boundary %s inside ASCII text", cps[i].name);
	}
}

static void test_valid(void)
{
	ok(valid("", 0), "valid: the empty string");
	ok(utf8_valid(NULL, 0), "valid: NULL with length 0");
	VALID("\0", "a NUL byte");
	VALID("a\0b\0\0c", "NUL bytes among ASCII");
	VALID("hello, world", "plain ASCII");
	VALID("\x01\x1f\x7f", "ASCII control characters and DEL");
	VALID("\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94", "Korean 안녕하세요");
	VALID("\xF0\x9F\x98\x80", "emoji U+1F600");
	VALID("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80!", "mixed 2-, 3- and 4-byte sequences");
	VALID("\xE2\x80\xA8\xE2\x80\xA9", "U+2028 and U+2029");
	VALID("\xEF\xBB\xBF", "a byte order mark (U+FEFF)");
	/* The length is honoured: an invalid byte past it does not count. */
	ok(utf8_valid("abc\xFF", 3), "valid: an invalid byte just past len is not read as text");
	ok(utf8_valid("\xC3\xA9\x80", 2), "valid: a stray continuation past len is ignored");
}

static void test_invalid(void)
{
	/* Overlong forms. */
	INVALID("\xC0\x80", "overlong U+0000 (C0 80)");
	INVALID("\xC0\xAF", "overlong '/' (C0 AF)");
	INVALID("\xC1\xBF", "overlong U+007F (C1 BF)");
	INVALID("\xE0\x80\x80", "overlong U+0000 in 3 bytes (E0 80 80)");
	INVALID("\xE0\x80\xAF", "overlong '/' in 3 bytes (E0 80 AF)");
	INVALID("\xE0\x9F\xBF", "overlong U+07FF in 3 bytes (E0 9F BF)");
	INVALID("\xF0\x80\x80\x80", "overlong U+0000 in 4 bytes (F0 80 80 80)");
	INVALID("\xF0\x80\x80\xAF", "overlong '/' in 4 bytes (F0 80 80 AF)");
	INVALID("\xF0\x8F\xBF\xBF", "overlong U+FFFF in 4 bytes (F0 8F BF BF)");
	INVALID("\xF8\x80\x80\x80\xAF", "overlong '/' in 5 bytes (F8 80 80 80 AF)");
	INVALID("\xFC\x80\x80\x80\x80\xAF", "overlong '/' in 6 bytes (FC 80 80 80 80 AF)");

	/* UTF-8-encoded surrogates (CESU-8 and friends). */
	INVALID("\xED\xA0\x80", "surrogate U+D800 (ED A0 80)");
	INVALID("\xED\xAD\xBF", "surrogate U+DB7F (ED AD BF)");
	INVALID("\xED\xAE\x80", "surrogate U+DB80 (ED AE 80)");
	INVALID("\xED\xAF\xBF", "surrogate U+DBFF (ED AF BF)");
	INVALID("\xED\xB0\x80", "surrogate U+DC00 (ED B0 80)");
	INVALID("\xED\xBF\xBF", "surrogate U+DFFF (ED BF BF)");
	INVALID("\xED\xA0\xBD\xED\xB8\x80", "a surrogate pair encoded as two 3-byte sequences");

	/* Bytes that never appear in UTF-8. */
	INVALID("\xFF", "byte FF");
	INVALID("\xFE", "byte FE");
	INVALID("\xFE\xFF", "UTF-16 BOM bytes FE FF");
	INVALID("ab\xFF"
		"cd",
		"byte FF among ASCII");
	INVALID("\xC0", "byte C0 alone");
	INVALID("\xC1", "byte C1 alone");

	/* Truncated sequences at the end. */
	INVALID("\xC3", "truncated 2-byte sequence (C3) at the end");
	INVALID("abc\xC3", "truncated 2-byte sequence after ASCII");
	INVALID("\xE4", "truncated 3-byte sequence (E4) at the end");
	INVALID("\xE4\xB8", "truncated 3-byte sequence (E4 B8) at the end");
	INVALID("abcdefgh\xE4\xB8", "truncated 3-byte sequence after 8 ASCII bytes");
	INVALID("\xF0", "truncated 4-byte sequence (F0) at the end");
	INVALID("\xF0\x9F", "truncated 4-byte sequence (F0 9F) at the end");
	INVALID("\xF0\x9F\x98", "truncated 4-byte sequence (F0 9F 98) at the end");
	INVALID("\xF4\x8F\xBF", "truncated U+10FFFF (F4 8F BF) at the end");
	ok(!utf8_valid("\xE4\xB8\xAD", 2), "invalid: a whole sequence cut by len");

	/* Truncated sequences in the middle: a non-continuation too soon. */
	INVALID("\xC3"
		"A",
		"2-byte lead followed by ASCII");
	INVALID("\xE4\xB8"
		"A",
		"3-byte sequence cut by ASCII");
	INVALID("\xF0\x9F\x98"
		"A",
		"4-byte sequence cut by ASCII");
	INVALID("\xE4\xC3\xA9", "3-byte lead followed by a 2-byte sequence");
	INVALID("\xF0\x9F\xC3\xA9", "4-byte sequence cut by a 2-byte sequence");

	/* Stray continuation bytes. */
	INVALID("\x80", "stray continuation 80");
	INVALID("\xBF", "stray continuation BF");
	INVALID("a\x80"
		"b",
		"stray continuation between ASCII");
	INVALID("\xC3\xA9\xA9", "continuation after a complete 2-byte sequence");
	INVALID("\xE4\xB8\xAD\x80", "continuation after a complete 3-byte sequence");
	INVALID("\xF0\x9F\x98\x80\x80", "continuation after a complete 4-byte sequence");

	/* Above U+10FFFF. */
	INVALID("\xF4\x90\x80\x80", "U+110000 (F4 90 80 80)");
	INVALID("\xF4\xBF\xBF\xBF", "U+13FFFF (F4 BF BF BF)");
	INVALID("\xF5\x80\x80\x80", "F5 lead (F5 80 80 80)");
	INVALID("\xF6\x80\x80\x80", "F6 lead");
	INVALID("\xF7\xBF\xBF\xBF", "U+1FFFFF (F7 BF BF BF)");
	INVALID("\xF8\x88\x80\x80\x80", "5-byte sequence");
	INVALID("\xFC\x84\x80\x80\x80\x80", "6-byte sequence");
}

/* An invalid byte at every offset of an ASCII buffer, for fast paths that
 * look at several bytes at a time. */
static void test_every_offset(void)
{
	static const char *const bad[] = {"\x80", "\xFF", "\xC0\xAF", "\xED\xA0\x80", "\xC3"};
	bool all = true;
	for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
		size_t blen = strlen(bad[b]);
		for (size_t total = 1; total <= 40; total++) {
			for (size_t at = 0; at + blen <= total; at++) {
				char buf[48];
				memset(buf, 'a', total);
				memcpy(buf + at, bad[b], blen);
				if (valid(buf, total)) {
					diag("accepted bad sequence %zu at offset %zu of %zu", b,
					     at, total);
					all = false;
				}
			}
		}
	}
	ok(all, "invalid: bad sequences at every offset of ASCII buffers of 1-40 bytes");

	bool good = true;
	for (size_t total = 0; total <= 40; total++) {
		for (size_t at = 0; at + 4 <= total; at++) {
			char buf[48];
			memset(buf, 'a', total);
			memcpy(buf + at, "\xF0\x9F\x98\x80", 4);
			if (!valid(buf, total)) {
				diag("rejected U+1F600 at offset %zu of %zu", at, total);
				good = false;
			}
		}
	}
	ok(good, "valid: U+1F600 at every offset of ASCII buffers of 4-40 bytes");
}

/* Every scalar value is valid; every surrogate is not. */
static void test_all_code_points(void)
{
	size_t wrong = 0;
	for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
		unsigned char b[4];
		size_t n = encode(cp, b);
		bool want = cp < 0xD800 || cp > 0xDFFF;
		if (utf8_valid((const char *)b, n) != want) {
			if (wrong++ < 10)
				diag("U+%04X: got %s", (unsigned)cp, want ? "invalid" : "valid");
		}
	}
	ok(wrong == 0, "every code point U+0000..U+10FFFF: scalar values valid, surrogates not");

	/* Values past U+10FFFF in the 4-byte form. */
	wrong = 0;
	for (uint32_t cp = 0x110000; cp <= 0x1FFFFF; cp += 0x1001) {
		unsigned char b[4];
		size_t n = encode(cp, b);
		if (utf8_valid((const char *)b, n) && wrong++ < 10)
			diag("U+%X accepted", (unsigned)cp);
	}
	ok(wrong == 0, "4-byte forms of U+110000..U+1FFFFF are invalid");
}

/* Agreement with the reference on every 1-, 2- and 3-byte string, and on
 * 4-byte strings over all first two bytes with telling last bytes. */
static void test_against_reference(void)
{
	size_t wrong = 0, count = 0;
	unsigned char b[4];

	for (unsigned x = 0; x < 256; x++) {
		b[0] = (unsigned char)x;
		count++;
		if (utf8_valid((const char *)b, 1) != ref_valid(b, 1) && wrong++ < 10)
			diag("disagree on %02X", x);
		for (unsigned y = 0; y < 256; y++) {
			b[1] = (unsigned char)y;
			count++;
			if (utf8_valid((const char *)b, 2) != ref_valid(b, 2) && wrong++ < 10)
				diag("disagree on %02X %02X", x, y);
			for (unsigned z = 0; z < 256; z++) {
				/* 16M strings are slow under valgrind: take every third
				 * byte plus the edges of the continuation range. */
				if (z % 3 && z != 0x7F && z != 0x80 && z != 0xBF && z != 0xC0)
					continue;
				b[2] = (unsigned char)z;
				count++;
				if (utf8_valid((const char *)b, 3) != ref_valid(b, 3) &&
				    wrong++ < 10)
					diag("disagree on %02X %02X %02X", x, y, z);
			}
		}
	}
	static const unsigned char tails[] = {0x00, 0x41, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
	for (unsigned x = 0xE0; x < 256; x++) {
		for (unsigned y = 0; y < 256; y++) {
			for (size_t i = 0; i < sizeof tails; i++) {
				for (size_t j = 0; j < sizeof tails; j++) {
					b[0] = (unsigned char)x, b[1] = (unsigned char)y;
					b[2] = tails[i], b[3] = tails[j];
					count++;
					if (utf8_valid((const char *)b, 4) != ref_valid(b, 4) &&
					    wrong++ < 10)
						diag("disagree on %02X %02X %02X %02X", x, y,
						     tails[i], tails[j]);
				}
			}
		}
	}
	ok(wrong == 0, "agrees with a reference decoder on %zu byte strings of length 1-4", count);
}

int main(void)
{
	test_valid();
	test_boundaries();
	test_invalid();
	test_every_offset();
	test_all_code_points();
	test_against_reference();
	return done_testing();
}
