/* reply_message, reply_escaped_len, reply_escape: the JSON the backend
 * writes. */
#include "reply.h"
#include "json_parse.h"
#include "tap.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

/* Escapes text into a buffer of exactly reply_escaped_len bytes plus a
 * guard, and checks the returned end and the guard. Returns a malloc'd copy
 * (NUL-terminated) of what was written, or NULL when something went wrong
 * (with a diagnostic). */
static char *escape(const char *text, size_t len, size_t *out_len)
{
	static const char guard[8] = "GUARD!!";
	size_t n = reply_escaped_len(text, len);
	char *buf = malloc(n + sizeof guard + 1);
	if (!buf)
		abort();
	memcpy(buf + n, guard, sizeof guard);
	char *end = reply_escape(buf, text, len);
	bool good = true;
	if (end != buf + n) {
		diag("reply_escape wrote %td bytes, reply_escaped_len said %zu", end - buf, n);
		good = false;
	}
	if (memcmp(buf + n, guard, sizeof guard) != 0) {
		diag("reply_escape wrote past reply_escaped_len bytes");
		good = false;
	}
	if (!good) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*out_len = n;
	return buf;
}

/* One test: text escapes to exactly want. */
static void escapes_to(const char *text, size_t len, const char *want, size_t want_len,
		       const char *name)
{
	size_t n = 0;
	char *got = escape(text, len, &n);
	if (!got) {
		ok(0, "escape %s", name);
		return;
	}
	is_mem(got, n, want, want_len, "escape %s", name);
	free(got);
}

#define ESCAPES(text, want, name) escapes_to(text, sizeof(text) - 1, want, sizeof(want) - 1, name)

static void test_table(void)
{
	ESCAPES("\"", "\\\"", "'\"' as \\\"");
	ESCAPES("\\", "\\\\", "'\\' as \\\\");
	ESCAPES("\n", "\\n", "newline as \\n");
	ESCAPES("\r", "\\r", "carriage return as \\r");
	ESCAPES("\t", "\\t", "tab as \\t");
	ESCAPES("\b", "\\b", "backspace as \\b");
	ESCAPES("\f", "\\f", "form feed as \\f");
	ESCAPES("\0", "\\u0000", "NUL as \\u0000");
	ESCAPES("\x01", "\\u0001", "0x01 as \\u0001");
	ESCAPES("\x0b", "\\u000b", "vertical tab as \\u000b (lower-case hex)");
	ESCAPES("\x0e", "\\u000e", "0x0e as \\u000e");
	ESCAPES("\x1a", "\\u001a", "0x1a as \\u001a");
	ESCAPES("\x1b", "\\u001b", "escape as \\u001b");
	ESCAPES("\x1f", "\\u001f", "0x1f as \\u001f");
	ESCAPES("\x7f", "\x7f", "DEL copied raw");
	ESCAPES("/", "/", "'/' copied raw");
	ESCAPES("</script>", "</script>", "</script> copied raw");
	ESCAPES(" ", " ", "space copied raw");
	ESCAPES("'", "'", "single quote copied raw");
	ESCAPES("\xEC\x95\x88\xEB\x85\x95", "\xEC\x95\x88\xEB\x85\x95", "Korean copied raw");
	ESCAPES("\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80", "emoji copied raw");
	ESCAPES("\xE2\x80\xA8\xE2\x80\xA9", "\xE2\x80\xA8\xE2\x80\xA9", "U+2028 U+2029 copied raw");
	ESCAPES("", "", "the empty string");
	ESCAPES("a\"b\\c\nd\x01"
		"e",
		"a\\\"b\\\\c\\nd\\u0001e", "escapes among plain text");
	ESCAPES("\"\"\\\\", "\\\"\\\"\\\\\\\\", "runs of escapes");
	ESCAPES("abcdefghijklmnopqrstuvwxyz\x01", "abcdefghijklmnopqrstuvwxyz\\u0001",
		"an escape after a long plain run");

	/* Every byte 0x00-0x7F alone, against a table written here. */
	bool all = true;
	for (unsigned c = 0; c < 0x80; c++) {
		char want[8];
		switch (c) {
		case '"':
			strcpy(want, "\\\"");
			break;
		case '\\':
			strcpy(want, "\\\\");
			break;
		case '\b':
			strcpy(want, "\\b");
			break;
		case '\f':
			strcpy(want, "\\f");
			break;
		case '\n':
			strcpy(want, "\\n");
			break;
		case '\r':
			strcpy(want, "\\r");
			break;
		case '\t':
			strcpy(want, "\\t");
			break;
		default:
			if (c < 0x20)
				snprintf(want, sizeof want, "\\u%04x", c);
			else
				want[0] = (char)c, want[1] = '\0';
		}
		char in = (char)c;
		size_t n = 0;
		char *got = escape(&in, 1, &n);
		if (!got || n != strlen(want) || memcmp(got, want, n) != 0) {
			diag("byte 0x%02X: got %s, want %s", c, got ? got : "(failure)", want);
			all = false;
		}
		free(got);
	}
	ok(all, "escape each byte 0x00-0x7F as the table says");
}

static void test_lengths(void)
{
	static const struct {
		const char *s;
		size_t len;
		size_t want;
	} cases[] = {
	    {"", 0, 0},
	    {"a", 1, 1},
	    {"\"", 1, 2},
	    {"\\", 1, 2},
	    {"\n", 1, 2},
	    {"\x01", 1, 6},
	    {"\0", 1, 6},
	    {"\x7f", 1, 1},
	    {"\xEC\x95\x88", 3, 3},
	    {"a\"b\x01\n", 5, 1 + 2 + 1 + 6 + 2},
	};
	bool all = true;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t got = reply_escaped_len(cases[i].s, cases[i].len);
		if (got != cases[i].want) {
			diag("case %zu: reply_escaped_len gave %zu, want %zu", i, got,
			     cases[i].want);
			all = false;
		}
	}
	ok(all, "reply_escaped_len on fixed cases");

	/* All bytes 0x00-0x7F together, plus UTF-8, in every rotation: the
	 * length must match what reply_escape writes. */
	char buf[128 + 16];
	for (unsigned c = 0; c < 0x80; c++)
		buf[c] = (char)c;
	memcpy(buf + 128, "\xEC\x95\x88\xF0\x9F\x98\x80\xC3\xA9", 9);
	size_t total = 137;
	all = true;
	for (size_t start = 0; start < total; start++) {
		char rot[137];
		memcpy(rot, buf + start, total - start);
		memcpy(rot + total - start, buf, start);
		for (size_t len = 0; len <= total; len += (len < 8 ? 1 : 17)) {
			size_t n = 0;
			char *got = escape(rot, len, &n);
			if (!got) {
				diag("rotation %zu, length %zu", start, len);
				all = false;
			}
			free(got);
		}
	}
	ok(all, "reply_escaped_len equals what reply_escape writes (bytes 0x00-0x7F, UTF-8)");

	size_t n = 0;
	char *got = escape(buf, total, &n);
	/* 32 control characters: 5 short (2 bytes), 27 \u00XX (6 bytes); '"'
	 * and '\\' 2 bytes; 94 other ASCII bytes and 9 UTF-8 bytes 1 each. */
	is_int(got ? (long long)n : -1, 5 * 2 + 27 * 6 + 2 * 2 + 94 + 9,
	       "escaped length of all bytes 0x00-0x7F plus UTF-8");
	free(got);
}

/* One test: reply_message(text) is {"message":"received <text>"}: one JSON
 * object with the one member, whose decoded value is exactly the prefix and
 * text; the buffer is NUL-terminated with no NUL inside. */
static void round_trips(const char *text, size_t len, const char *name)
{
	size_t out_len = (size_t)-1;
	char *out = reply_message(text, len, &out_len);
	bool good = false;
	json_object *obj = NULL;

	if (!out) {
		diag("reply_message returned NULL");
		goto done;
	}
	if (out[out_len] != '\0' || memchr(out, '\0', out_len)) {
		diag("the reply is not a NUL-terminated string of out_len bytes");
		goto done;
	}
	if (!utf8_valid(out, out_len)) {
		diag("the reply is not UTF-8");
		goto done;
	}
	obj = parse_strict(out, out_len);
	if (!obj || !json_object_is_type(obj, json_type_object) ||
	    json_object_object_length(obj) != 1) {
		diag("the reply is not an object with one member");
		goto done;
	}
	json_object *m;
	if (!json_object_object_get_ex(obj, "message", &m) ||
	    !json_object_is_type(m, json_type_string)) {
		diag("no string \"message\"");
		goto done;
	}
	size_t plen = strlen(REPLY_PREFIX);
	size_t mlen = (size_t)json_object_get_string_len(m);
	const char *ms = json_object_get_string(m);
	if (mlen != plen + len || memcmp(ms, REPLY_PREFIX, plen) != 0 ||
	    (len && memcmp(ms + plen, text, len) != 0)) {
		diag("the message does not round-trip:");
		char *want = malloc(plen + len + 1);
		if (!want)
			abort();
		memcpy(want, REPLY_PREFIX, plen);
		if (len)
			memcpy(want + plen, text, len);
		tap_mem_diff_(ms, mlen, want, plen + len);
		free(want);
		goto done;
	}
	/* The envelope: exactly the prefix, the escaped text, the suffix. */
	size_t esc = reply_escaped_len(text, len);
	static const char head[] = "{\"message\":\"received ";
	if (out_len != sizeof head - 1 + esc + 2 || memcmp(out, head, sizeof head - 1) != 0 ||
	    memcmp(out + out_len - 2, "\"}", 2) != 0) {
		diag("the reply is not {\"message\":\"received <escaped>\"} with no spaces");
		goto done;
	}
	good = true;
done:
	ok(good, "reply_message round-trips %s", name);
	json_object_put(obj);
	free(out);
}

#define ROUND_TRIPS(lit, name) round_trips(lit, sizeof(lit) - 1, name)

static void test_reply_message(void)
{
	size_t n = 0;
	char *out = reply_message("", 0, &n);
	is_mem(out, out ? n : 0, "{\"message\":\"received \"}", 23,
	       "reply_message of the empty text");
	free(out);
	out = reply_message("hi", 2, &n);
	is_mem(out, out ? n : 0, "{\"message\":\"received hi\"}", 25, "reply_message of \"hi\"");
	free(out);
	out = reply_message("a\"b\\c/d\n\x01", 9, &n);
	static const char want[] = "{\"message\":\"received a\\\"b\\\\c/d\\n\\u0001\"}";
	is_mem(out, out ? n : 0, want, sizeof want - 1, "reply_message escapes, '/' raw");
	free(out);

	ROUND_TRIPS("", "the empty text");
	ROUND_TRIPS("hello", "ASCII");
	ROUND_TRIPS("\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94", "Korean");
	ROUND_TRIPS("\xF0\x9F\x98\x80", "an emoji");
	ROUND_TRIPS("\"quoted\" and \\backslashed\\", "quotes and backslashes");
	ROUND_TRIPS("a\0b", "a NUL byte");
	ROUND_TRIPS("\0", "a lone NUL byte");
	ROUND_TRIPS("/ \\/ </script>", "slashes");
	ROUND_TRIPS("\x7f", "DEL");
	ROUND_TRIPS("\xE2\x80\xA8\xE2\x80\xA9", "U+2028 and U+2029");
	ROUND_TRIPS("\xEF\xBF\xBF\xF4\x8F\xBF\xBF", "U+FFFF and U+10FFFF");

	char all[128];
	for (int c = 0; c < 128; c++)
		all[c] = (char)c;
	round_trips(all, sizeof all, "every byte 0x00-0x7F");
}

/* The worst case: 64 KiB of control characters, each six bytes escaped. */
static void test_worst_case(void)
{
	size_t len = 64 * 1024;
	char *text = malloc(len);
	if (!text)
		abort();
	memset(text, 0x01, len);
	is_int(reply_escaped_len(text, len), 6 * len, "64 KiB of 0x01 escapes to 6 x 64 KiB");
	size_t n = 0;
	char *out = reply_message(text, len, &n);
	is_int(out ? (long long)n : -1, (long long)(23 + 6 * len),
	       "reply_message of 64 KiB of 0x01 has the right length");
	free(out);
	round_trips(text, len, "64 KiB of 0x01");

	for (size_t i = 0; i < len; i++)
		text[i] = (char)(i % 32);
	round_trips(text, len, "64 KiB of mixed control characters");
	free(text);
}

int main(void)
{
	test_table();
	test_lengths();
	test_reply_message();
	test_worst_case();
	return done_testing();
}
