/* json_strict_scan: what it notes of the top-level "message" string in
 * passing (which string, whether it has escapes, whether they are the
 * reply's own), and which sentence it gives when UTF-8 and grammar both
 * fail, now that one pass checks both. */
#include "json_strict.h"
#include "tap.h"
#include "utf8.h"

#include <stdio.h>
#include <string.h>

#define L(lit) lit, sizeof(lit) - 1

static struct json_strict_message scan(const char *body, size_t len, bool *valid)
{
	struct json_strict_message m;
	const char *why = NULL;
	*valid = json_strict_scan(body, len, 4, &m, &why);
	return m;
}

/* The message of body is the string want (its raw bytes), with the given
 * flags. */
static void found(const char *body, size_t len, const char *want, bool escapes, bool as_reply,
		  const char *name)
{
	bool valid;
	struct json_strict_message m = scan(body, len, &valid);
	bool good = valid && m.raw && m.raw_len == strlen(want) &&
		    memcmp(m.raw, want, m.raw_len) == 0 && m.escapes == escapes &&
		    m.as_reply == as_reply;
	if (!good)
		diag("valid %d, raw %.*s, escapes %d, as_reply %d", valid,
		     m.raw ? (int)m.raw_len : 0, m.raw ? m.raw : "", m.escapes, m.as_reply);
	ok(good, "%s", name);
}

static void not_found(const char *body, size_t len, const char *name)
{
	bool valid;
	struct json_strict_message m = scan(body, len, &valid);
	ok(!m.raw, "no message string noted: %s", name);
}

static void why_is(const char *body, size_t len, const char *want, const char *name)
{
	const char *why = NULL;
	struct json_strict_message m;
	ok(!json_strict_scan(body, len, 4, &m, &why) && why && strcmp(why, want) == 0 && !m.raw,
	   "%s (got: %s)", name, why ? why : "nothing");
}

int main(void)
{
	found(L("{\"message\":\"hi\"}"), "hi", false, true, "a plain message");
	found(L("{\"message\":\"\"}"), "", false, true, "an empty message");
	found(L(" { \"a\" : [1,{\"message\":\"no\"}] , \"message\" : \"x\\u00e9\" } "), "x\\u00e9",
	      true, false, "the top-level one, among white space and other keys");
	found(L("{\"message\":\"a\",\"message\":\"b\"}"), "b", false, true,
	      "duplicates: the last, as json-c keeps");
	found(L("{\"message\":1,\"message\":\"b\"}"), "b", false, true,
	      "duplicates: a number, then a string");
	found(L("{\"message\":\"a\\\"b\\\\c\\b\\f\\n\\r\\t\"}"), "a\\\"b\\\\c\\b\\f\\n\\r\\t", true,
	      true, "short escapes are the reply's");
	found(L("{\"message\":\"\\u0000\\u0001\\u001f\\u000b\"}"), "\\u0000\\u0001\\u001f\\u000b",
	      true, true, "\\u00XX of controls without a short escape, lowercase, are the reply's");
	found(L("{\"message\":\"\\u001F\"}"), "\\u001F", true, false, "upper-case hex is not");
	found(L("{\"message\":\"\\u000a\"}"), "\\u000a", true, false,
	      "\\u000a is not (the reply writes \\n)");
	found(L("{\"message\":\"\\u0041\"}"), "\\u0041", true, false, "\\u0041 is not");
	found(L("{\"message\":\"\\u007f\"}"), "\\u007f", true, false, "\\u007f is not");
	found(L("{\"message\":\"a\\/b\"}"), "a\\/b", true, false, "\\/ is not");
	found(L("{\"message\":\"\\ud83d\\ude00\"}"), "\\ud83d\\ude00", true, false,
	      "a surrogate pair is not");
	found(L("{\"message\":\"\xc3\xa9\xec\x95\x88\xf0\x9f\x98\x80/\x7f\"}"),
	      "\xc3\xa9\xec\x95\x88\xf0\x9f\x98\x80/\x7f", false, true,
	      "raw UTF-8, '/' and DEL are the reply's");

	not_found(L("{\"message\":\"a\",\"message\":1}"), "the last duplicate is a number");
	not_found(L("{\"message\":{\"message\":\"x\"}}"), "an object");
	not_found(L("{\"a\":{\"message\":\"x\"}}"), "only nested");
	not_found(L("[\"message\",\"x\"]"), "an array");
	not_found(L("\"message\""), "a string");
	not_found(L("{\"m\\u0065ssage\":\"x\"}"), "a key with an escape may be message");
	not_found(L("{\"message\":\"x\",\"\\u0061\":\"y\"}"), "any escaped key makes it unknown");
	not_found(L("{\"message\":\"x\"} x"), "an invalid text");

	/* One pass checks UTF-8 and grammar: bad UTF-8 anywhere is still what
	 * the client is told first, as when UTF-8 was checked before. */
	why_is(L("{\"message\":\"\xc3\"}"), "The body is not valid UTF-8.", "a cut sequence");
	why_is(L("{\"message\":\"\xed\xa0\x80\"}"), "The body is not valid UTF-8.",
	       "a UTF-8 surrogate");
	why_is(L("{\"message\":\xff}"), "The body is not valid UTF-8.",
	       "bad UTF-8 outside a string");
	why_is(L("{,\"message\":\"\xc0\xaf\"}"), "The body is not valid UTF-8.",
	       "bad UTF-8 after a grammar error");
	why_is(L("{\"message\":\"\xc3\xa9\"} \xc3\xa9"), "The body has bytes after the JSON value.",
	       "valid UTF-8 after the value is a grammar error");
	why_is(L("{\"message\":\"\\ud83d\xc3\xa9\"}"),
	       "The JSON has an unpaired UTF-16 surrogate escape.",
	       "a grammar error in valid UTF-8");
	/* Every byte value at every place of a 40-byte string: the runs are
	 * read sixteen, then eight, then one byte at a time. */
	unsigned long wrong = 0;
	for (size_t at = 0; at < 40; at++)
		for (unsigned v = 0; v < 256; v++) {
			char body[64];
			size_t n = (size_t)sprintf(body, "{\"message\":\"");
			memset(body + n, 'x', 40);
			body[n + at] = (char)v;
			n += 40;
			n += (size_t)sprintf(body + n, "\"}");
			const char *why = NULL;
			bool plain = v >= 0x20 && v < 0x80 && v != '"' && v != '\\';
			bool valid = json_strict_check(body, n, 4, &why);
			const char *want =
			    v >= 0x80  ? "The body is not valid UTF-8."
			    : v < 0x20 ? "The JSON has a raw control character in a string; "
					 "control characters must be escaped."
				       : NULL;
			if (valid != plain || (want && strcmp(why, want) != 0))
				wrong++;
		}
	is_int(wrong, 0, "every byte at every place of a string is judged right");

	/* Strings of random UTF-8, valid or nearly (pieces of sequences, at
	 * every alignment, across the sixteen-byte blocks): valid exactly when
	 * utf8_valid says so. A fixed seed keeps the test repeatable. */
	static const char *const pieces[] = {
	    "a",
	    "bcdefghijklmnopq",
	    "\xc3\xa9",
	    "\xec\x95\x88",
	    "\xf0\x9f\x98\x80",
	    "\xc3",
	    "\xec\x95",
	    "\xf0\x9f\x98",
	    "\x80",
	    "\xbf",
	    "\xe0\x80\x80",
	    "\xed\xa0\x80",
	    "\xf4\x90\x80\x80",
	    "\xc0\xaf",
	    "\xff",
	    "\\n",
	    "\\u00e9",
	};
	unsigned long seed = 12345;
	wrong = 0;
	for (unsigned round = 0; round < 20000; round++) {
		char text[256];
		size_t n = 0;
		while (n < 200) {
			seed = seed * 6364136223846793005UL + 1442695040888963407UL;
			unsigned r = (unsigned)(seed >> 33);
			/* Mostly valid pieces, so that whole strings are often valid. */
			size_t k = r % 64 < 60 ? r % 5 : r % (sizeof pieces / sizeof pieces[0]);
			if (r % 97 == 0)
				break;
			size_t len = strlen(pieces[k]);
			memcpy(text + n, pieces[k], len);
			n += len;
		}
		char body[300];
		size_t b = (size_t)sprintf(body, "{\"message\":\"");
		memcpy(body + b, text, n);
		b += n;
		b += (size_t)sprintf(body + b, "\"}");
		const char *why = NULL;
		if (json_strict_check(body, b, 4, &why) != utf8_valid(body, b))
			wrong++;
	}
	is_int(wrong, 0, "random UTF-8 in a string: valid exactly when utf8_valid says so");
	return done_testing();
}
