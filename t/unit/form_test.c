/* message_from_form: the "message" field of an urlencoded body. */
#include "message_form.h"
#include "tap.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

/* Runs the decoder on a copy of body in a buffer of exactly body_len bytes,
 * so that a read past the end shows under valgrind or ASan. */
static int decode(const char *body, size_t body_len, char **text, size_t *len, const char **why)
{
	char *copy = malloc(body_len ? body_len : 1);
	if (!copy)
		abort();
	memcpy(copy, body, body_len);
	*text = NULL;
	*len = (size_t)-1;
	*why = NULL;
	int r = message_from_form(copy, body_len, text, len, why);
	free(copy);
	return r;
}

/* One test: body decodes to exactly want (want_len bytes), returned
 * NUL-terminated. */
static void decodes_to(const char *body, size_t body_len, const char *want, size_t want_len,
		       const char *name)
{
	char *text;
	size_t len;
	const char *why;
	int r = decode(body, body_len, &text, &len, &why);
	if (r != 0) {
		ok(0, "%s", name);
		diag("returned %d, why: %s", r, why ? why : "(NULL)");
		free(text);
		return;
	}
	bool same = text && len == want_len && memcmp(text, want, len) == 0;
	bool terminated = text && text[len] == '\0';
	if (!ok(same && terminated, "%s", name)) {
		tap_mem_diff_(text, text ? len : 0, want, want_len);
		if (!terminated)
			diag("the text is not NUL-terminated");
	}
	free(text);
}

#define DECODES(body, want, name) decodes_to(body, sizeof(body) - 1, want, sizeof(want) - 1, name)

/* One test: body is refused with -1 and a sentence in *why. */
static void refused(const char *body, size_t body_len, const char *name)
{
	char *text;
	size_t len;
	const char *why;
	int r = decode(body, body_len, &text, &len, &why);
	bool good = r == -1 && why && *why;
	if (!ok(good, "%s", name)) {
		diag("returned %d, why: %s", r, why ? why : "(NULL)");
		if (r == 0)
			tap_mem_diff_(text, len, "(an error)", 10);
	}
	if (r == 0)
		free(text);
}

#define REFUSED(body, name) refused(body, sizeof(body) - 1, name)

static void test_basics(void)
{
	DECODES("message=hello", "hello", "a plain field");
	DECODES("message=hello+world%21", "hello world!", "'+' is a space, %21 is '!'");
	DECODES("message=%2B", "+", "%2B is a literal '+'");
	DECODES("message=%2b", "+", "lower-case hex: %2b");
	DECODES("message=%4a%4A", "JJ", "mixed-case hex digits");
	DECODES("message=a%20b", "a b", "%20 is a space");
	DECODES("message=a+%2B+b", "a + b", "'+' and %2B side by side");
	DECODES("message=%25", "%", "%25 is a literal '%'");
	DECODES("message=a%26b%3Dc", "a&b=c", "encoded '&' and '=' do not split fields");
	DECODES("message=a=b", "a=b", "a raw '=' in the value is kept");
	DECODES("message=%ED%95%9C", "\xED\x95\x9C", "percent-encoded UTF-8 (%ED%95%9C is 한)");
	DECODES("message=%F0%9F%98%80", "\xF0\x9F\x98\x80", "percent-encoded emoji");
	DECODES("message=\xED\x95\x9C", "\xED\x95\x9C", "raw UTF-8 is kept");
	DECODES("message=a%00b", "a\0b", "%00 gives a NUL that survives");
	DECODES("message=%00", "\0", "a message of one NUL byte");
	DECODES("message=%0A%09%01", "\n\t\x01", "encoded control characters");
}

static void test_fields(void)
{
	DECODES("", "", "an empty body gives the empty message");
	DECODES("message=", "", "message= gives the empty message");
	DECODES("a=1&b=2", "", "no message field gives the empty message");
	DECODES("a=1&message=x&b=2", "x", "message among other fields");
	DECODES("message=x&a=1", "x", "message first");
	DECODES("a=1&message=x", "x", "message last");
	DECODES("message=first&message=second", "second", "the last of two message fields wins");
	DECODES("message=a&x=1&message=b&y=2", "b", "the last wins with fields between");
	DECODES("message=x&message=", "", "the last wins even when empty");
	DECODES("messages=x", "", "messages= is not message");
	DECODES("xmessage=y", "", "xmessage= is not message");
	DECODES("Message=x", "", "names are case-sensitive (Message=)");
	DECODES("message+=x", "", "'message ' (with a '+') is not message");
	DECODES("messages=x&message=y&xmessage=z", "y", "prefix and suffix names around message");
	DECODES("foo&message=x&bar", "x", "fields without '=' are skipped");
	DECODES("&&message=x&&", "x", "empty fields are skipped");
	DECODES("=x&message=y", "y", "a field with an empty name");
	/* From reading src/message_form.c: a bare "message" is the field with an
	 * empty value, and names are percent-decoded as in the URL standard. */
	DECODES("message", "", "a bare 'message' (no '=') is the empty message");
	DECODES("message=x&message", "", "a bare 'message' after message=x wins, as empty");
	DECODES("m%65ssage=x", "x", "a percent-encoded name (m%65ssage) is message");
	DECODES("%6D%65%73%73%61%67%65=x", "x", "a name fully percent-encoded is message");
	DECODES("%6d%65%73%73%61%67%65%20=x", "", "an encoded name with a trailing space is not");
	DECODES("m%65ssage=x&message=y", "y", "the last wins across encoded and plain names");
	DECODES("message=y&m%65ssage=x", "x", "the last wins: an encoded name after a plain one");
}

static void test_bounds(void)
{
	/* The length is honoured: bytes past it are not part of the body. */
	char *text;
	size_t len;
	const char *why;
	int r = decode("message=ab&message=zz", 10, &text, &len, &why);
	ok(r == 0 && len == 2 && memcmp(text, "ab", 2) == 0,
	   "bytes past body_len are not read (message=ab|&message=zz)");
	if (r == 0)
		free(text);

	r = decode("message=%41", 10, &text, &len, &why);
	ok(r == -1, "an escape cut by body_len (message=%%4|1) is bad");
	if (r == 0)
		free(text);

	r = decode("message=x%", 10, &text, &len, &why);
	ok(r == -1, "a '%%' at body_len is bad");
	if (r == 0)
		free(text);

	/* A long value, long enough to need no special treatment. */
	size_t n = 100000;
	char *body = malloc(8 + 3 * n);
	char *want = malloc(n);
	if (!body || !want)
		abort();
	memcpy(body, "message=", 8);
	for (size_t i = 0; i < n; i++) {
		memcpy(body + 8 + 3 * i, "%41", 3);
		want[i] = 'A';
	}
	decodes_to(body, 8 + 3 * n, want, n, "a 100,000-byte value, all escapes");
	free(body);
	free(want);
}

static void test_bad(void)
{
	REFUSED("message=%", "bad percent-encoding: message=%");
	REFUSED("message=%4", "bad percent-encoding: message=%4");
	REFUSED("message=%zz", "bad percent-encoding: message=%zz");
	REFUSED("message=%g0", "bad percent-encoding: message=%g0");
	REFUSED("message=%0g", "bad percent-encoding: message=%0g");
	REFUSED("message=%%41", "bad percent-encoding: message=%%41");
	REFUSED("message=% 1", "bad percent-encoding: message=% 1");
	REFUSED("message=%4&a=1", "bad percent-encoding before '&'");
	REFUSED("message=x&message=%", "bad percent-encoding in the winning field");
	REFUSED("message=%C0%AF", "decoded text not UTF-8: overlong (%C0%AF)");
	REFUSED("message=%ED%A0%80", "decoded text not UTF-8: surrogate (%ED%A0%80)");
	REFUSED("message=%FF", "decoded text not UTF-8: byte FF");
	REFUSED("message=%E4%B8", "decoded text not UTF-8: truncated sequence");
	REFUSED("message=%80", "decoded text not UTF-8: stray continuation");
	REFUSED("message=%F4%90%80%80", "decoded text not UTF-8: above U+10FFFF");
	REFUSED("message=\xC0\xAF", "raw text not UTF-8: overlong (C0 AF)");
	REFUSED("message=\xFF", "raw text not UTF-8: byte FF");
	REFUSED("message=%E4%B8+%AD", "a '+' splitting a sequence leaves invalid UTF-8");
}

/* Whatever the decoder does with odd input, it must not crash or leak, and
 * what it returns must be UTF-8. */
static void test_no_crash(void)
{
	static const char *const odd[] = {
	    "%",
	    "%%",
	    "=",
	    "==",
	    "&",
	    "&=&",
	    "message",
	    "message=%",
	    "m%65ssage",
	    "m%65ssage=%",
	    "m%6",
	    "m%",
	    "%6D%65%73%73%61%67%65",
	    "message&",
	    "=message",
	    "message==",
	    "message=&message",
	    "%00=%00",
	    "m%00ssage=x",
	    "message%00=x",
	    "mess%61ge%3Dx",
	    "message=x&%zz=1",
	    "%zz=1&message=x",
	    "%6D%65%73%73%61%67%65%6D%65%73%73%61%67%65%6D%65%73%73%61%67%65=x",
	    "m%65ssage%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20=x",
	};
	bool all = true;
	for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
		char *text;
		size_t len;
		const char *why;
		int r = decode(odd[i], strlen(odd[i]), &text, &len, &why);
		if (r == 0) {
			if (!text || text[len] != '\0' || !utf8_valid(text, len)) {
				diag("%s: bad text", odd[i]);
				all = false;
			}
			free(text);
		} else if (r != -1 || !why || !*why) {
			diag("%s: returned %d without a reason", odd[i], r);
			all = false;
		}
	}
	ok(all, "odd bodies (%zu of them) give text or a reason, never a crash",
	   sizeof odd / sizeof odd[0]);

	/* What the implementation decides for the remaining odd names. */
	DECODES("m%00ssage=x", "", "a name with an encoded NUL is not message");
	DECODES("message%00=x", "", "'message' plus an encoded NUL is not message");
	DECODES("mess%61ge%3Dx", "", "an encoded '=' does not end the name");
	REFUSED("%zz=1&message=x", "a bad escape in another field's name refuses the body");
	REFUSED("message=x&a=%zz", "a bad escape in another field's value refuses the body");
}

int main(void)
{
	test_basics();
	test_fields();
	test_bounds();
	test_bad();
	test_no_crash();
	return done_testing();
}
