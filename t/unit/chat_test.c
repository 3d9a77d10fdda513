/* chat_respond and chat_check_head: the request logic, from request to
 * response, with no FastCGI in between. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include "chat.h"
#include "json_parse.h"
#include "tap.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct chat_limits lim_default = {.max_body = CHAT_MAX_BODY_DEFAULT};

static const char JSON[] = "application/json";
static const char FORM[] = "application/x-www-form-urlencoded";

/* ---- running requests ---- */

/* Calls chat_respond with the body copied into a buffer of exactly body_len
 * bytes (so that a read past it shows under valgrind or ASan), freed before
 * the response is looked at: the response must not point into it. */
static void respond(const struct chat_request *req, const struct chat_limits *lim,
		    struct chat_response *res)
{
	struct chat_request r = *req;
	char *copy = NULL;
	if (req->body) {
		copy = malloc(req->body_len ? req->body_len : 1);
		if (!copy)
			abort();
		if (req->body_len)
			memcpy(copy, req->body, req->body_len);
		r.body = copy;
	}
	memset(res, 0x5A, sizeof *res); /* garbage: chat_respond must fill it */
	chat_respond(&r, lim, res);
	free(copy);
}

/* A POST to /chat/ with CONTENT_LENGTH set to the body's length. */
static struct chat_request post(const char *ctype, const char *body, size_t len, char clen[32])
{
	snprintf(clen, 32, "%zu", len);
	struct chat_request req = {
	    .method = "POST",
	    .path = "/chat/",
	    .content_type = ctype,
	    .content_length = clen,
	    .body = body,
	    .body_len = len,
	};
	return req;
}

/* ---- judging responses ---- */

/* The response body as escaped text in a diagnostic. */
static void show_body(const struct chat_response *res)
{
	fputs("#   status ", stdout);
	printf("%d, reason %s, body ", res->status, res->reason ? res->reason : "(NULL)");
	tap_print_escaped_(res->body, res->body ? res->body_len : 0);
	fputc('\n', stdout);
}

/* The escaping the reply uses, written independently of src/reply.c:
 * short escapes for \b \t \n \f \r, \u00xx (lower-case hex) for the other
 * bytes below 0x20, '"' and '\\' escaped, everything else as is. */
static size_t escape_ref(char *out, const char *s, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *e = NULL;
		switch (c) {
		case '"':
			e = "\\\"";
			break;
		case '\\':
			e = "\\\\";
			break;
		case '\b':
			e = "\\b";
			break;
		case '\t':
			e = "\\t";
			break;
		case '\n':
			e = "\\n";
			break;
		case '\f':
			e = "\\f";
			break;
		case '\r':
			e = "\\r";
			break;
		default:
			break;
		}
		if (e) {
			memcpy(out + o, e, 2);
			o += 2;
		} else if (c < 0x20) {
			o += (size_t)sprintf(out + o, "\\u%04x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	return o;
}

/* Is res a success whose decoded message is "received " + want? Checks the
 * exact bytes of the body too. Prints diagnostics; returns the verdict. */
static bool is_message(const struct chat_response *res, const char *want, size_t want_len)
{
	bool good = true;
	if (res->status != 200) {
		diag("status %d, expected 200", res->status);
		show_body(res);
		return false;
	}
	if (res->reason) {
		diag("reason is \"%s\" on a 200, expected NULL", res->reason);
		good = false;
	}
	if (res->allow) {
		diag("allow is \"%s\" on a 200, expected NULL", res->allow);
		good = false;
	}
	if (!res->body) {
		diag("no body");
		return false;
	}

	/* The exact body. */
	char *exact = malloc(32 + 6 * want_len);
	if (!exact)
		abort();
	size_t n = 0;
	memcpy(exact, "{\"message\":\"received ", 21);
	n = 21 + escape_ref(exact + 21, want, want_len);
	memcpy(exact + n, "\"}", 2);
	n += 2;
	if (res->body_len != n || memcmp(res->body, exact, n) != 0) {
		diag("the body is not exactly {\"message\":\"received <escaped>\"}");
		tap_mem_diff_(res->body, res->body_len, exact, n);
		good = false;
	}
	free(exact);

	/* The round trip: what a JSON client reads back. */
	json_object *obj = parse_strict(res->body, res->body_len);
	json_object *m = NULL;
	if (!obj) {
		good = false;
	} else if (!json_object_is_type(obj, json_type_object) ||
		   json_object_object_length(obj) != 1 ||
		   !json_object_object_get_ex(obj, "message", &m) ||
		   !json_object_is_type(m, json_type_string)) {
		diag("the body is not an object with just a string \"message\"");
		good = false;
	} else {
		const char *got = json_object_get_string(m);
		size_t got_len = (size_t)json_object_get_string_len(m);
		if (got_len != 9 + want_len || memcmp(got, "received ", 9) != 0 ||
		    (want_len && memcmp(got + 9, want, want_len) != 0)) {
			diag("the decoded message differs:");
			char *w = malloc(9 + want_len + 1);
			if (!w)
				abort();
			memcpy(w, "received ", 9);
			if (want_len)
				memcpy(w + 9, want, want_len);
			tap_mem_diff_(got, got_len, w, 9 + want_len);
			free(w);
			good = false;
		}
	}
	json_object_put(obj);
	return good;
}

/* Is res the error status with a JSON error body: exactly one member,
 * "error", a non-empty string? 405s must carry Allow: POST. */
static bool is_error(const struct chat_response *res, int status)
{
	bool good = true;
	if (res->status != status) {
		diag("status %d, expected %d", res->status, status);
		good = false;
	}
	if (!res->reason || !*res->reason) {
		diag("no reason for the log");
		good = false;
	}
	if (status == 405 && (!res->allow || strcmp(res->allow, "POST") != 0)) {
		diag("allow is %s, expected \"POST\"", res->allow ? res->allow : "NULL");
		good = false;
	}
	if (!res->body) {
		diag("no body");
		return false;
	}
	json_object *obj = parse_strict(res->body, res->body_len);
	json_object *e = NULL;
	if (!obj || !json_object_is_type(obj, json_type_object) ||
	    json_object_object_length(obj) != 1 || !json_object_object_get_ex(obj, "error", &e) ||
	    !json_object_is_type(e, json_type_string) || json_object_get_string_len(e) == 0) {
		diag("the body is not {\"error\":\"<sentence>\"}");
		good = false;
	}
	json_object_put(obj);
	if (!good)
		show_body(res);
	return good;
}

/* One test: a 200 whose body is exactly want. */
static void body_is(const struct chat_response *res, const char *want, size_t want_len,
		    const char *name)
{
	if (res->status != 200) {
		ok(0, "%s", name);
		show_body(res);
		return;
	}
	is_mem(res->body, res->body_len, want, want_len, "%s", name);
}

/* ---- one-line tests ---- */

static void post_ok(const char *ctype, const char *body, size_t len, const char *want,
		    size_t want_len, const char *name)
{
	char clen[32];
	struct chat_request req = post(ctype, body, len, clen);
	struct chat_response res;
	respond(&req, &lim_default, &res);
	ok(is_message(&res, want, want_len), "%s", name);
	chat_response_free(&res);
}

static void post_err(const char *ctype, const char *body, size_t len, int status, const char *name)
{
	char clen[32];
	struct chat_request req = post(ctype, body, len, clen);
	struct chat_response res;
	respond(&req, &lim_default, &res);
	ok(is_error(&res, status), "%s", name);
	chat_response_free(&res);
}

#define L(lit) lit, sizeof(lit) - 1
/* JSON body → 200 with the decoded message want. */
#define J_OK(body, want, name) post_ok(JSON, L(body), L(want), name)
/* JSON body → 400. */
#define J_400(body, name)      post_err(JSON, L(body), 400, "400: " name)
#define F_OK(body, want, name) post_ok(FORM, L(body), L(want), name)
#define F_400(body, name)      post_err(FORM, L(body), 400, "400: " name)

/* ---- the tests ---- */

static void test_success(void)
{
	char clen[32];
	struct chat_request req = post(JSON, L("{\"message\":\"hi\"}"), clen);
	struct chat_response res;
	respond(&req, &lim_default, &res);
	body_is(&res, L("{\"message\":\"received hi\"}"),
		"200: {\"message\":\"hi\"} gives exactly {\"message\":\"received hi\"}");
	is_int(res.status, 200, "200: the status of a good post");
	ok(res.reason == NULL && res.allow == NULL, "200: no reason, no Allow");
	chat_response_free(&res);

	J_OK("{\"message\":\"hello world\"}", "hello world", "200: a plain message");
	J_OK("{\"message\":\"\"}", "", "200: the empty message");
}

static void test_content_types(void)
{
	static const char *const good[] = {
	    "application/json; charset=utf-8",
	    "application/json;charset=UTF-8",
	    "Application/JSON",
	    "APPLICATION/JSON; CHARSET=UTF-8",
	    "application/json; charset=\"utf-8\"",
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		post_ok(good[i], L("{\"message\":\"x\"}"), L("x"), good[i]);

	static const char *const bad[] = {
	    "application/json; charset=latin1",
	    "application/json; charset=iso-8859-1",
	    "application/json; charset=utf-16",
	    "application/jsonx",
	    "text/json",
	    "application/json-patch+json",
	    "application/ld+json",
	    "text/plain",
	    "text/plain; charset=utf-8",
	    "multipart/form-data; boundary=x",
	    "application/x-www-form-urlencoded; charset=latin1",
	    "application/x-www-form-urlencodedx",
	    "",
	    NULL,
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char name[128];
		snprintf(name, sizeof name, "415: Content-Type %s%s%s", bad[i] ? "\"" : "",
			 bad[i] ? bad[i] : "missing", bad[i] ? "\"" : "");
		post_err(bad[i], L("{\"message\":\"x\"}"), 415, name);
	}
}

static void test_echo(void)
{
	J_OK("{\"message\":\"\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94\"}",
	     "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94",
	     "echo: Korean 안녕하세요");
	J_OK("{\"message\":\"\xF0\x9F\x98\x80\"}", "\xF0\x9F\x98\x80", "echo: emoji 😀 raw");
	J_OK("{\"message\":\"\\ud83d\\ude00\"}", "\xF0\x9F\x98\x80",
	     "echo: emoji as a surrogate-pair escape \\ud83d\\ude00");
	J_OK("{\"message\":\"\\uD83D\\uDE00\"}", "\xF0\x9F\x98\x80",
	     "echo: upper-case surrogate-pair escape");
	J_OK("{\"message\":\"\\udbff\\udfff\"}", "\xF4\x8F\xBF\xBF",
	     "echo: U+10FFFF as \\udbff\\udfff");
	J_OK("{\"message\":\"\\ud800\\udc00\"}", "\xF0\x90\x80\x80",
	     "echo: U+10000 as \\ud800\\udc00");
	J_OK("{\"message\":\"\\u00e9\\uD55C\\uffff\"}", "\xC3\xA9\xED\x95\x9C\xEF\xBF\xBF",
	     "echo: \\u escapes of 2- and 3-byte characters");
	J_OK("{\"message\":\"say \\\"hi\\\"\"}", "say \"hi\"", "echo: quotes");
	J_OK("{\"message\":\"C:\\\\dir\\\\\"}", "C:\\dir\\", "echo: backslashes");
	J_OK("{\"message\":\"a\\nb\\tc\\rd\\be\\ff\"}", "a\nb\tc\rd\be\ff",
	     "echo: short escapes \\n \\t \\r \\b \\f");
	J_OK("{\"message\":\"\\u0001\\u001f\\u001F\"}", "\x01\x1f\x1f",
	     "echo: \\u0001 and \\u001f");
	J_OK("{\"message\":\"\\u0000\"}", "\0", "echo: \\u0000 alone survives as a NUL");
	J_OK("{\"message\":\"a\\u0000b\"}", "a\0b", "echo: a NUL inside the text survives");
	J_OK("{\"message\":\"\\u0000\\u0000x\\u0000\"}", "\0\0x\0", "echo: several NULs");
	J_OK("{\"message\":\"a/b\\/c\"}", "a/b/c", "echo: / and \\/ both give /");
	J_OK("{\"message\":\"</script>\"}", "</script>", "echo: </script>");
	J_OK("{\"message\":\"\x7f\"}", "\x7f", "echo: a raw DEL is allowed");
	J_OK("{\"message\":\"\xE2\x80\xA8\xE2\x80\xA9\"}", "\xE2\x80\xA8\xE2\x80\xA9",
	     "echo: raw U+2028 and U+2029");
	J_OK("{\"message\":\"\xEF\xBB\xBF\"}", "\xEF\xBB\xBF", "echo: U+FEFF inside the string");
	J_OK("{\"message\":\"'single'\"}", "'single'", "echo: single quotes inside a string");

	/* Every escape at once, and every byte 0x00-0x1F via \u. */
	char body[512], want[64];
	size_t n = (size_t)sprintf(body, "{\"message\":\"");
	for (unsigned c = 0; c < 0x20; c++) {
		n += (size_t)sprintf(body + n, "\\u%04X", c);
		want[c] = (char)c;
	}
	n += (size_t)sprintf(body + n, "\"}");
	post_ok(JSON, body, n, want, 32, "echo: every control character U+0000..U+001F");
}

static void test_members(void)
{
	J_OK("{}", "", "missing message: {} gives \"received \"");
	char clen[32];
	struct chat_request req = post(JSON, L("{\"user\":\"x\"}"), clen);
	struct chat_response res;
	respond(&req, &lim_default, &res);
	body_is(&res, L("{\"message\":\"received \"}"),
		"missing message: the body is exactly {\"message\":\"received \"}");
	chat_response_free(&res);

	J_OK("{\"user\":\"x\",\"message\":\"hi\"}", "hi", "other keys ignored (before)");
	J_OK("{\"message\":\"hi\",\"user\":\"x\"}", "hi", "other keys ignored (after)");
	J_OK("{\"message\":\"a\",\"message\":\"b\"}", "b", "duplicate message: the last wins");
	J_OK("{\"message\":\"a\",\"x\":1,\"message\":\"b\",\"y\":2}", "b",
	     "duplicate message with keys between: the last wins");
	J_OK("{\"message\":1,\"message\":\"b\"}", "b",
	     "duplicate message: a non-string first, a string last");
	J_400("{\"message\":\"a\",\"message\":1}",
	      "duplicate message: a string first, a number last");
	J_OK("{\"a\":{\"message\":\"x\"}}", "", "a nested message is not the message");
	J_OK("{\"Message\":\"x\"}", "", "keys are case-sensitive (Message)");
	J_OK("{\"message \":\"x\"}", "", "'message ' is another key");
	J_OK("{\"m\\u0065ssage\":\"hi\"}", "hi", "an escaped key that decodes to message");
	J_OK("{\"n\":-0.5e+10,\"t\":true,\"f\":false,\"z\":null,\"a\":[],\"o\":{},"
	     "\"message\":\"x\"}",
	     "x", "other keys of every type are ignored");
	J_OK("{\"n\":0,\"m\":-0,\"e\":1E5,\"f\":2.5e-3,\"g\":1e400,"
	     "\"h\":123456789012345678901234567890,\"message\":\"x\"}",
	     "x", "valid numbers of all shapes, huge ones too");
	J_OK("{\"\":1,\"message\":\"x\"}", "x", "an empty key is fine");
	J_OK("{\"a\":\"\\u0000\",\"message\":\"x\"}", "x", "a NUL in another value is fine");

	/* json-c keeps keys as C strings: a key with an escaped NUL must not be
	 * mistaken for "message". A 400 is acceptable; echoing "evil" is not. */
	static const char *const nul_keys[] = {
	    "{\"message\\u0000\":\"evil\"}",
	    "{\"message\\u0000x\":\"evil\"}",
	    "{\"message\":\"good\",\"message\\u0000\":\"evil\"}",
	};
	static const char *const nul_want[] = {"", "", "good"};
	for (size_t i = 0; i < 3; i++) {
		req = post(JSON, nul_keys[i], strlen(nul_keys[i]), clen);
		respond(&req, &lim_default, &res);
		bool good;
		if (res.status == 400)
			good = is_error(&res, 400);
		else
			good = is_message(&res, nul_want[i], strlen(nul_want[i]));
		ok(good, "a key \"message\\u0000...\" is not message (%s)", nul_keys[i]);
		chat_response_free(&res);
	}
}

static void test_whitespace(void)
{
	J_OK(" \t\n\r{\"message\":\"x\"}", "x", "leading JSON white space is fine");
	J_OK("{\"message\":\"x\"} \t\n\r", "x", "trailing JSON white space is fine");
	J_OK("\r\n{ \"message\" :\t\"x\" ,\n\"a\" : [ 1 , 2 ] }\r\n", "x",
	     "white space between tokens is fine");
	J_400("{\"message\":\"x\"} x", "trailing bytes: {\"message\":\"x\"} x");
	J_400("{\"message\":\"x\"}{}", "trailing bytes: a second object");
	J_400("{\"message\":\"x\"}\0", "trailing bytes: a trailing NUL byte");
	J_400("{\"message\":\"x\"}\0\0\0\0", "trailing bytes: several trailing NULs");
	J_400("{\"message\":\"x\"},", "trailing bytes: a comma");
	J_400("{\"message\":\"x\"}\f", "trailing bytes: a form feed is not JSON white space");
	J_400("{\"message\":\"x\"}\v", "trailing bytes: a vertical tab is not JSON white space");
	J_400("\f{\"message\":\"x\"}", "leading form feed is not JSON white space");
	J_400("\0{\"message\":\"x\"}", "a leading NUL byte");
	J_400("{\"message\":\"x\"}\xC2\xA0", "trailing bytes: U+00A0 is not JSON white space");
	J_400("", "an empty body (body_len 0)");
	J_400(" \t\n\r ", "a white-space-only body");
}

static void test_strings(void)
{
	J_400("{\"message\":\"a\x01"
	      "b\"}",
	      "a raw 0x01 inside a string");
	J_400("{\"message\":\"a\tb\"}", "a raw TAB inside a string");
	J_400("{\"message\":\"a\nb\"}", "a raw newline inside a string");
	J_400("{\"message\":\"a\rb\"}", "a raw CR inside a string");
	J_400("{\"message\":\"a\x1f"
	      "b\"}",
	      "a raw 0x1f inside a string");
	J_400("{\"message\":\"a\0b\"}", "a raw NUL inside a string");
	J_400("{\"mes\nsage\":\"x\"}", "a raw newline inside a key");
	J_400("{'message':'x'}", "single quotes");
	J_400("{\"message\":'x'}", "a single-quoted value");
	J_400("{message:\"x\"}", "an unquoted key");
	J_400("{\"message\":\"a\\xb\"}", "invalid escape \\x");
	J_400("{\"message\":\"\\x41\"}", "invalid escape \\x41");
	J_400("{\"message\":\"\\u12\"}", "invalid escape \\u12 (short)");
	J_400("{\"message\":\"\\u12", "invalid escape \\u12 at the end of the body");
	J_400("{\"message\":\"\\u00G0\"}", "invalid escape \\u00G0");
	J_400("{\"message\":\"\\U0041\"}", "invalid escape \\U0041");
	J_400("{\"message\":\"\\a\"}", "invalid escape \\a");
	J_400("{\"message\":\"\\'\"}", "invalid escape \\'");
	J_400("{\"message\":\"\\0\"}", "invalid escape \\0");
	J_400("{\"message\":\"\\\x01\"}", "a backslash before a raw control character");
	J_400("{\"message\":\"\\\xC3\xA9\"}", "a backslash before a non-ASCII character");
	J_400("{\"message\":\"x\\\"}", "a string ended by an escaped quote (unterminated)");
	J_400("{\"message\":\"x", "an unterminated string");
	J_400("{\"message\":\"x\"", "an unterminated object");
	J_400("{\"message\":", "a missing value");
	J_400("{\"message\"}", "a key with no value");
	J_400("{\"message\" \"x\"}", "a missing colon");
	J_400("{", "a lone {");
	J_400("}", "a lone }");
}

static void test_values(void)
{
	J_400("{\"message\":\"x\"/* c */}", "a /* */ comment inside the object");
	J_400("/* c */{\"message\":\"x\"}", "a /* */ comment before the object");
	J_400("{\"message\":\"x\"}/* c */", "a /* */ comment after the object");
	J_400("// c\n{\"message\":\"x\"}", "a // comment before the object");
	J_400("{\"message\":\"x\"} // c", "a // comment after the object");
	J_400("{\"message\":\"x\"} # c", "a # comment after the object");
	J_400("{\"n\":NaN,\"message\":\"x\"}", "NaN");
	J_400("{\"n\":nan,\"message\":\"x\"}", "nan");
	J_400("{\"n\":Infinity,\"message\":\"x\"}", "Infinity");
	J_400("{\"n\":-Infinity,\"message\":\"x\"}", "-Infinity");
	J_400("{\"n\":infinity,\"message\":\"x\"}", "infinity");
	J_400("{\"message\":\"x\",}", "a trailing comma in an object");
	J_400("{\"a\":[1,],\"message\":\"x\"}", "a trailing comma in an array");
	J_400("{,\"message\":\"x\"}", "a leading comma in an object");
	J_400("{\"a\":[,1],\"message\":\"x\"}", "a leading comma in an array");
	J_400("{\"a\":1,,\"message\":\"x\"}", "a double comma");
	J_400("{\"a\":1 \"message\":\"x\"}", "a missing comma");
	J_400("{\"n\":01,\"message\":\"x\"}", "a leading zero (01)");
	J_400("{\"n\":-01,\"message\":\"x\"}", "a leading zero (-01)");
	J_400("{\"n\":00,\"message\":\"x\"}", "a leading zero (00)");
	J_400("{\"n\":+1,\"message\":\"x\"}", "a plus sign (+1)");
	J_400("{\"n\":.5,\"message\":\"x\"}", "no integer part (.5)");
	J_400("{\"n\":1.,\"message\":\"x\"}", "no fraction digits (1.)");
	J_400("{\"n\":1.e5,\"message\":\"x\"}", "no fraction digits (1.e5)");
	J_400("{\"n\":1e,\"message\":\"x\"}", "no exponent digits (1e)");
	J_400("{\"n\":1e+,\"message\":\"x\"}", "no exponent digits (1e+)");
	J_400("{\"n\":-,\"message\":\"x\"}", "a lone minus");
	J_400("{\"n\":- 1,\"message\":\"x\"}", "a minus and a space");
	J_400("{\"n\":0x10,\"message\":\"x\"}", "hexadecimal (0x10)");
	J_400("{\"n\":1e5.5,\"message\":\"x\"}", "a fraction after the exponent");
	J_400("{\"a\":tru,\"message\":\"x\"}", "a truncated literal (tru)");
	J_400("{\"a\":True,\"message\":\"x\"}", "a capitalised literal (True)");
	J_400("{\"a\":NULL,\"message\":\"x\"}", "an upper-case literal (NULL)");
	J_400("{\"a\":nulls,\"message\":\"x\"}", "a literal with a tail (nulls)");
	J_400("{\"a\":undefined,\"message\":\"x\"}", "undefined");
	J_400("[]", "not an object: []");
	J_400("[{\"message\":\"x\"}]", "not an object: an array holding one");
	J_400("\"x\"", "not an object: \"x\"");
	J_400("1", "not an object: 1");
	J_400("null", "not an object: null");
	J_400("true", "not an object: true");
	J_400("false", "not an object: false");
	J_400("{\"message\":1}", "message not a string: a number");
	J_400("{\"message\":null}", "message not a string: null");
	J_400("{\"message\":true}", "message not a string: true");
	J_400("{\"message\":false}", "message not a string: false");
	J_400("{\"message\":{}}", "message not a string: an object");
	J_400("{\"message\":[]}", "message not a string: an array");
	J_400("{\"message\":[\"x\"]}", "message not a string: an array of a string");
	J_400("{\"message\":{\"text\":\"x\"}}", "message not a string: an object with a string");
}

static void test_utf8(void)
{
	J_400("{\"message\":\"\xC0\xAF\"}", "invalid UTF-8: overlong C0 AF");
	J_400("{\"message\":\"\xC1\xBF\"}", "invalid UTF-8: overlong C1 BF");
	J_400("{\"message\":\"\xE0\x80\xAF\"}", "invalid UTF-8: overlong E0 80 AF");
	J_400("{\"message\":\"\xF0\x80\x80\xAF\"}", "invalid UTF-8: overlong F0 80 80 AF");
	J_400("{\"message\":\"\xED\xA0\x80\"}", "invalid UTF-8: surrogate ED A0 80");
	J_400("{\"message\":\"\xED\xBF\xBF\"}", "invalid UTF-8: surrogate ED BF BF");
	J_400("{\"message\":\"\xED\xA0\xBD\xED\xB8\x80\"}",
	      "invalid UTF-8: an emoji as two encoded surrogates (CESU-8)");
	J_400("{\"message\":\"\xFF\"}", "invalid UTF-8: byte FF");
	J_400("{\"message\":\"\xFE\"}", "invalid UTF-8: byte FE");
	J_400("{\"message\":\"a\xE4\xB8\"}",
	      "invalid UTF-8: a truncated sequence before the quote");
	J_400("{\"message\":\"x\"}\xE4\xB8", "invalid UTF-8: a truncated sequence at the end");
	J_400("{\"message\":\"x\"}\xC3", "invalid UTF-8: a lone lead byte at the end");
	J_400("{\"message\":\"\x80\"}", "invalid UTF-8: a stray continuation byte 80");
	J_400("{\"message\":\"a\xBF"
	      "b\"}",
	      "invalid UTF-8: a stray continuation byte BF");
	J_400("{\"message\":\"\xC3\xA9\xA9\"}", "invalid UTF-8: a continuation after a sequence");
	J_400("{\"message\":\"\xF4\x90\x80\x80\"}", "invalid UTF-8: U+110000 (F4 90 80 80)");
	J_400("{\"message\":\"\xF5\x80\x80\x80\"}", "invalid UTF-8: F5 80 80 80");
	J_400("{\"message\":\"\xF7\xBF\xBF\xBF\"}", "invalid UTF-8: F7 BF BF BF");
	J_400("{\"message\":\"\xF8\x88\x80\x80\x80\"}", "invalid UTF-8: a 5-byte sequence");
	J_400("{\"\xFF\":1,\"message\":\"x\"}", "invalid UTF-8 in another key");
	J_400("{\"a\":\"\xC0\xAF\",\"message\":\"x\"}", "invalid UTF-8 in another value");
	J_400("{\"message\":\"x\"} \xFF", "invalid UTF-8 after the object");

	J_400("{\"message\":\"\\ud800\"}", "unpaired surrogate escape \\ud800");
	J_400("{\"message\":\"\\udc00\"}", "unpaired surrogate escape \\udc00");
	J_400("{\"message\":\"\\uDBFF\"}", "unpaired surrogate escape \\uDBFF");
	J_400("{\"message\":\"\\uDFFF\"}", "unpaired surrogate escape \\uDFFF");
	J_400("{\"message\":\"\\ud800x\"}", "unpaired surrogate escape \\ud800x");
	J_400("{\"message\":\"x\\ud800\"}", "unpaired surrogate escape at the end of the string");
	J_400("{\"message\":\"\\ud800\\u0041\"}", "unpaired surrogate escape \\ud800\\u0041");
	J_400("{\"message\":\"\\ud800\\n\"}", "unpaired surrogate escape \\ud800\\n");
	J_400("{\"message\":\"\\ud800\\ud800\"}", "two high surrogate escapes");
	J_400("{\"message\":\"\\udc00\\ud800\"}", "surrogate escapes in the wrong order");
	J_400("{\"message\":\"\\ude00\\ud83d\"}", "an emoji's surrogate escapes swapped");
	J_400("{\"message\":\"\\ud83d\\ude00\\ude00\"}", "a pair then a lone low surrogate");
	J_400("{\"message\":\"\\ud83d\\\\ude00\"}", "a high surrogate, then an escaped backslash");
	J_400("{\"a\":\"\\ud800\",\"message\":\"x\"}",
	      "unpaired surrogate escape in another key's value");
	J_400("{\"\\udc00\":1,\"message\":\"x\"}", "unpaired surrogate escape in another key");
	J_400("{\"a\":[\"\\ud800\"],\"message\":\"x\"}", "unpaired surrogate escape in an array");
}

/* {"a": + depth-1 arrays + 1 + closers + ,"message":"x"} */
static char *nested(size_t depth, size_t *len)
{
	size_t arrays = depth - 1;
	char *b = malloc(2 * arrays + 32);
	if (!b)
		abort();
	size_t n = 0;
	memcpy(b, "{\"a\":", 5);
	n = 5;
	memset(b + n, '[', arrays);
	n += arrays;
	b[n++] = '1';
	memset(b + n, ']', arrays);
	n += arrays;
	memcpy(b + n, ",\"message\":\"x\"}", 15);
	n += 15;
	*len = n;
	return b;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_depth(void)
{
	J_OK("{\"a\":[[1]],\"message\":\"x\"}", "x", "depth 3 under another key is fine");
	J_OK("{\"a\":{\"b\":{\"c\":1}},\"message\":\"x\"}", "x", "depth 3 of objects is fine");

	size_t len;
	char *b = nested(CHAT_JSON_MAX_DEPTH, &len);
	post_ok(JSON, b, len, L("x"),
		"depth CHAT_JSON_MAX_DEPTH (the object and 15 arrays) is fine");
	free(b);
	b = nested(CHAT_JSON_MAX_DEPTH + 1, &len);
	post_err(JSON, b, len, 400, "400: depth CHAT_JSON_MAX_DEPTH + 1 is too deep");
	free(b);
	b = nested(101, &len);
	post_err(JSON, b, len, 400, "400: {\"a\":[[[...]]]} 100 arrays deep");
	free(b);

	/* 100,000 deep: bigger than the default limit, so raise it; it must be
	 * refused quickly and without running out of stack. */
	struct chat_limits big = {.max_body = 1024 * 1024};
	static const struct {
		const char *open, *close;
		const char *name;
	} kinds[] = {
	    {"[", "]", "arrays"},
	    {"{\"a\":", "}", "objects"},
	    {"[", "", "arrays never closed"},
	    {"{\"a\":[", "]}", "objects and arrays"},
	};
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		size_t depth = 100000;
		size_t ol = strlen(kinds[k].open), cl = strlen(kinds[k].close);
		char *body = malloc(depth * (ol + cl) + 32);
		if (!body)
			abort();
		size_t n = 0;
		memcpy(body + n, "{\"a\":", 5);
		n += 5;
		for (size_t i = 0; i < depth; i++, n += ol)
			memcpy(body + n, kinds[k].open, ol);
		body[n++] = '1';
		for (size_t i = 0; i < depth; i++, n += cl)
			memcpy(body + n, kinds[k].close, cl);
		body[n++] = '}';

		char clen[32];
		struct chat_request req = post(JSON, body, n, clen);
		struct chat_response res;
		double t0 = now();
		respond(&req, &big, &res);
		double dt = now() - t0;
		ok(is_error(&res, 400), "400: 100,000 deep %s (%zu bytes)", kinds[k].name, n);
		if (!ok(dt < 2.0, "100,000 deep %s answered in under 2 s", kinds[k].name))
			diag("took %.3f s", dt);
		chat_response_free(&res);
		free(body);
	}
}

static void test_form(void)
{
	char clen[32];
	struct chat_request req = post(FORM, L("message=hello+world%21"), clen);
	struct chat_response res;
	respond(&req, &lim_default, &res);
	body_is(&res, L("{\"message\":\"received hello world!\"}"),
		"form: message=hello+world%21 gives exactly received hello world!");
	chat_response_free(&res);

	F_OK("message=hello+world%21", "hello world!", "form: message=hello+world%21");
	post_ok("application/x-www-form-urlencoded; charset=UTF-8", L("message=hi"), L("hi"),
		"form: with ; charset=UTF-8");
	post_ok("Application/X-WWW-Form-Urlencoded", L("message=hi"), L("hi"),
		"form: the type is case-insensitive");
	F_OK("a=1&message=x&b=2", "x", "form: a=1&message=x&b=2");
	F_OK("a=1&b=2", "", "form: a missing message field gives \"received \"");
	F_OK("", "", "form: an empty body gives \"received \"");
	F_OK("message=%ED%95%9C", "\xED\x95\x9C", "form: percent-encoded UTF-8 %ED%95%9C is 한");
	F_OK("message=a%00b", "a\0b", "form: %00 survives as a NUL");
	F_OK("message=%22%5C%0A%01", "\"\\\n\x01", "form: characters that need escaping");
	F_OK("message=a&message=b", "b", "form: the last message field wins");
	F_400("message=%", "form: message=%");
	F_400("message=%4", "form: message=%4");
	F_400("message=%zz", "form: message=%zz");
	F_400("message=%C0%AF", "form: decoded text not UTF-8 (%C0%AF)");
	F_400("message=%ED%A0%80", "form: decoded text not UTF-8 (%ED%A0%80)");
	F_400("message=\xFF", "form: raw text not UTF-8 (FF)");
}

static void test_size(void)
{
	struct chat_limits small = {.max_body = 16};
	char clen[32];
	struct chat_request req = post(JSON, L("{\"message\":\"abc\"}"), clen); /* 17 bytes */
	struct chat_response res;
	respond(&req, &small, &res);
	ok(is_error(&res, 413), "413: max_body 16 and a 17-byte body");
	chat_response_free(&res);

	req = post(JSON, L("{\"message\":\"ab\"}"), clen); /* 16 bytes */
	respond(&req, &small, &res);
	ok(is_message(&res, L("ab")), "max_body 16 and a 16-byte body is fine");
	chat_response_free(&res);

	req = post(JSON, L("{\"message\":\"abc\"}"), clen);
	req.content_length = "5";
	respond(&req, &small, &res);
	ok(is_error(&res, 413),
	   "413: a 17-byte body over max_body 16 whatever CONTENT_LENGTH says");
	chat_response_free(&res);

	req = post(FORM, L("message=123456789"), clen); /* 17 bytes */
	respond(&req, &small, &res);
	ok(is_error(&res, 413), "413: a 17-byte form body over max_body 16");
	chat_response_free(&res);

	/* chat_check_head: the announced length alone. */
	size_t announced = 12345;
	req = post(JSON, NULL, 0, clen);
	req.content_length = "65537";
	memset(&res, 0, sizeof res);
	enum chat_head h = chat_check_head(&req, &lim_default, &res, &announced);
	ok(h == CHAT_HEAD_REJECTED && is_error(&res, 413),
	   "413: chat_check_head with CONTENT_LENGTH 65537 rejects before the body");
	chat_response_free(&res);

	req.content_length = "17";
	memset(&res, 0, sizeof res);
	h = chat_check_head(&req, &small, &res, &announced);
	ok(h == CHAT_HEAD_REJECTED && is_error(&res, 413),
	   "413: chat_check_head with CONTENT_LENGTH 17 over max_body 16");
	chat_response_free(&res);

	req.content_length = "65536";
	memset(&res, 0, sizeof res);
	h = chat_check_head(&req, &lim_default, &res, &announced);
	ok(h == CHAT_HEAD_READ_BODY && announced == 65536,
	   "chat_check_head with CONTENT_LENGTH 65536 (= max_body) reads the body");
	chat_response_free(&res);

	req.content_length = "16";
	memset(&res, 0, sizeof res);
	h = chat_check_head(&req, &small, &res, &announced);
	ok(h == CHAT_HEAD_READ_BODY && announced == 16,
	   "chat_check_head with CONTENT_LENGTH 16 = max_body 16 reads the body");
	chat_response_free(&res);

	/* Bodies of exactly 64 KiB, and one byte more. */
	size_t max = CHAT_MAX_BODY_DEFAULT;
	char *body = malloc(max + 1);
	if (!body)
		abort();
	memcpy(body, "{\"message\":\"", 12);
	memset(body + 12, 'a', max - 14);
	memcpy(body + max - 2, "\"}", 2);
	post_ok(JSON, body, max, body + 12, max - 14, "a JSON body of exactly 64 KiB is fine");
	memcpy(body + max - 2, "a\"}", 3);
	post_err(JSON, body, max + 1, 413, "413: a JSON body of 64 KiB + 1");

	/* 64 KiB of escaped control characters: the reply is 6x the text. */
	size_t chars = (max - 14) / 6;
	size_t n = 12;
	char *want = malloc(chars);
	if (!want)
		abort();
	for (size_t i = 0; i < chars; i++, n += 6) {
		memcpy(body + n, "\\u0001", 6);
		want[i] = '\x01';
	}
	memcpy(body + n, "\"}", 2);
	n += 2;
	post_ok(JSON, body, n, want, chars, "a 64 KiB body of \\u0001 escapes echoes");
	free(want);
	free(body);
}

static void test_content_length(void)
{
	char clen[32];
	struct chat_request req = post(JSON, NULL, 0, clen);
	struct chat_response res;
	size_t announced = 12345;

	req.content_length = "5";
	memset(&res, 0, sizeof res);
	enum chat_head h = chat_check_head(&req, &lim_default, &res, &announced);
	ok(h == CHAT_HEAD_READ_BODY && announced == 5,
	   "chat_check_head: CONTENT_LENGTH 5 reads the body, announced 5");
	chat_response_free(&res);

	req.content_length = NULL;
	announced = 12345;
	memset(&res, 0, sizeof res);
	h = chat_check_head(&req, &lim_default, &res, &announced);
	ok(h == CHAT_HEAD_READ_BODY && announced == 0,
	   "chat_check_head: no CONTENT_LENGTH reads the body, announced 0");
	chat_response_free(&res);

	req.content_length = "0";
	announced = 12345;
	memset(&res, 0, sizeof res);
	h = chat_check_head(&req, &lim_default, &res, &announced);
	ok(h == CHAT_HEAD_READ_BODY && announced == 0,
	   "chat_check_head: CONTENT_LENGTH 0 reads the body, announced 0");
	chat_response_free(&res);

	static const char *const bogus[] = {
	    "abc", "-1",   "1e3", " 5",  "5 ", "99999999999999999999999",
	    "+5",  "0x10", "5,5", "5.0", "",
	};
	for (size_t i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
		req = post(JSON, NULL, 0, clen);
		req.content_length = bogus[i];
		memset(&res, 0, sizeof res);
		h = chat_check_head(&req, &lim_default, &res, &announced);
		ok(h == CHAT_HEAD_REJECTED && is_error(&res, 400),
		   "400: chat_check_head with CONTENT_LENGTH \"%s\"", bogus[i]);
		chat_response_free(&res);

		/* chat_respond too, with a body of the length a lax parser
		 * would read. */
		req = post(JSON, L("{\"message\":\"x\"}"), clen);
		req.content_length = bogus[i];
		respond(&req, &lim_default, &res);
		ok(is_error(&res, 400), "400: chat_respond with CONTENT_LENGTH \"%s\"", bogus[i]);
		chat_response_free(&res);
	}

	/* The body read differs from what was announced. */
	static const char *const wrong[] = {"14", "16", "0", "1"};
	for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
		req = post(JSON, L("{\"message\":\"x\"}"), clen); /* 15 bytes */
		req.content_length = wrong[i];
		respond(&req, &lim_default, &res);
		ok(is_error(&res, 400), "400: a 15-byte body with CONTENT_LENGTH %s", wrong[i]);
		chat_response_free(&res);
	}
	req = post(JSON, NULL, 0, clen);
	req.content_length = "15";
	respond(&req, &lim_default, &res);
	ok(is_error(&res, 400), "400: no body with CONTENT_LENGTH 15");
	chat_response_free(&res);
}

static void test_methods(void)
{
	static const char *const methods[] = {
	    "GET",   "HEAD",    "PUT",  "DELETE", "PATCH", "OPTIONS",
	    "TRACE", "CONNECT", "post", "Post",   "",
	};
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		char clen[32];
		struct chat_request req = post(JSON, L("{\"message\":\"x\"}"), clen);
		req.method = methods[i];
		struct chat_response res;
		respond(&req, &lim_default, &res);
		ok(is_error(&res, 405), "405: %s /chat/ with Allow: POST", methods[i]);
		chat_response_free(&res);

		size_t announced;
		memset(&res, 0, sizeof res);
		enum chat_head h = chat_check_head(&req, &lim_default, &res, &announced);
		ok(h == CHAT_HEAD_REJECTED && is_error(&res, 405),
		   "405: chat_check_head, %s /chat/", methods[i]);
		chat_response_free(&res);
	}

	/* A wrong method on /chat/ comes before content type and length. */
	struct chat_request bad = {
	    .method = "GET",
	    .path = "/chat/",
	    .content_type = NULL,
	    .content_length = "abc",
	    .body = NULL,
	    .body_len = 0,
	};
	struct chat_response res;
	respond(&bad, &lim_default, &res);
	ok(is_error(&res, 405), "405 before 415 and 400: GET /chat/, no type, bad length");
	chat_response_free(&res);
	bad.content_type = "text/plain";
	bad.content_length = "99999999";
	respond(&bad, &lim_default, &res);
	ok(is_error(&res, 405), "405 before 415 and 413: GET /chat/, text/plain, huge length");
	chat_response_free(&res);
	size_t announced;
	memset(&res, 0, sizeof res);
	enum chat_head h = chat_check_head(&bad, &lim_default, &res, &announced);
	ok(h == CHAT_HEAD_REJECTED && is_error(&res, 405),
	   "405 before 415 and 413 in chat_check_head too");
	chat_response_free(&res);

	/* No method at all: 405 or 400, but an answer. */
	bad = (struct chat_request){.method = NULL,
				    .path = "/chat/",
				    .content_type = JSON,
				    .content_length = "15",
				    .body = "{\"message\":\"x\"}",
				    .body_len = 15};
	respond(&bad, &lim_default, &res);
	ok(res.status == 405 ? is_error(&res, 405) : is_error(&res, 400),
	   "a NULL method gets 405 or 400");
	chat_response_free(&res);
}

static void test_paths(void)
{
	static const char *const paths[] = {
	    "/",       "/chat",   "/chat/x", "/chatx/", "/other/", "/CHAT/", "/chat//",
	    "//chat/", "/chat/.", "chat/",   "",        "/chat/?", NULL,
	};
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		char clen[32];
		struct chat_request req = post(JSON, L("{\"message\":\"x\"}"), clen);
		req.path = paths[i];
		struct chat_response res;
		const char *shown = paths[i] ? paths[i] : "(NULL)";
		respond(&req, &lim_default, &res);
		ok(is_error(&res, 404), "404: POST to path \"%s\"", shown);
		chat_response_free(&res);

		req.method = "GET";
		respond(&req, &lim_default, &res);
		ok(is_error(&res, 404), "404 whatever the method: GET \"%s\"", shown);
		chat_response_free(&res);

		size_t announced;
		memset(&res, 0, sizeof res);
		enum chat_head h = chat_check_head(&req, &lim_default, &res, &announced);
		ok(h == CHAT_HEAD_REJECTED && is_error(&res, 404),
		   "404: chat_check_head, GET \"%s\"", shown);
		chat_response_free(&res);
	}
}

static void test_nulls(void)
{
	struct chat_request req = {.method = "POST",
				   .path = "/chat/",
				   .content_type = JSON,
				   .content_length = "0",
				   .body = NULL,
				   .body_len = 0};
	struct chat_response res;
	respond(&req, &lim_default, &res);
	ok(is_error(&res, 400), "400: a NULL JSON body with body_len 0");
	chat_response_free(&res);

	req.content_length = NULL;
	respond(&req, &lim_default, &res);
	ok(is_error(&res, 400), "400: a NULL JSON body, no CONTENT_LENGTH");
	chat_response_free(&res);

	req.content_type = FORM;
	req.content_length = "0";
	respond(&req, &lim_default, &res);
	ok(is_message(&res, L("")), "a NULL form body with body_len 0 is the empty message");
	chat_response_free(&res);

	req = (struct chat_request){0};
	respond(&req, &lim_default, &res);
	ok(is_error(&res, 404), "404: a request with every field NULL");
	chat_response_free(&res);

	req.path = "/chat/";
	respond(&req, &lim_default, &res);
	ok(res.status == 405 ? is_error(&res, 405) : is_error(&res, 400),
	   "405 or 400: /chat/ with every other field NULL");
	chat_response_free(&res);

	req.method = "POST";
	respond(&req, &lim_default, &res);
	ok(is_error(&res, 415), "415: POST /chat/ with no type, length or body");
	chat_response_free(&res);

	/* What a caller does after CHAT_HEAD_READ_BODY: free a response that
	 * holds nothing. */
	memset(&res, 0, sizeof res);
	chat_response_free(&res);
	ok(1, "chat_response_free is safe on a zeroed response");
}

/* json-c 0.16 on its own turns these pairs into U+FFFD: every code point
 * whose low 16 bits fall in D800..DFFF (found by the roundtrip fuzzer). */
static void test_surrogate_pairs(void)
{
	J_OK("{\"message\":\"\\ud836\\udc00\"}", "\xF0\x9D\xA0\x80",
	     "echo: U+1D800 (SignWriting) as \\ud836\\udc00");
	J_OK("{\"message\":\"\\ud876\\udc00\"}", "\xF0\xAD\xA0\x80",
	     "echo: U+2D800 (CJK Extension F) as \\ud876\\udc00");
	J_OK("{\"message\":\"\\ud8b7\\udf7d\"}", "\xF0\xBD\xBD\xBD",
	     "echo: U+3DF7D as \\ud8b7\\udf7d");
	J_OK("{\"message\":\"a\\\\ud836\\n\\u00e9\\uDBFF\\uDFFF\"}",
	     "a\\ud836\n\xC3\xA9\xF4\x8F\xBF\xBF",
	     "echo: an escaped backslash before \"ud836\" stays text, next to real pairs");
	J_OK("{\"\\ud836\\udc00\":\"\\ud836\\udc00\",\"message\":\"\\ud836\\udc01\"}",
	     "\xF0\x9D\xA0\x81", "echo: such pairs in a key and another member too");

	/* Every high surrogate with the first, a middle and the last low one. */
	static const unsigned lows[] = {0xDC00, 0xDE55, 0xDFFF};
	unsigned tried = 0, failed = 0;
	for (unsigned hi = 0xD800; hi <= 0xDBFF && !failed; hi++) {
		for (size_t k = 0; k < sizeof lows / sizeof lows[0]; k++) {
			char body[64], want[4], clen[32];
			int n = snprintf(body, sizeof body, "{\"message\":\"\\u%04x\\u%04X\"}", hi,
					 lows[k]);
			unsigned long cp =
			    0x10000 + ((unsigned long)(hi - 0xD800) << 10) + (lows[k] - 0xDC00);
			want[0] = (char)(0xF0 | cp >> 18);
			want[1] = (char)(0x80 | (cp >> 12 & 0x3F));
			want[2] = (char)(0x80 | (cp >> 6 & 0x3F));
			want[3] = (char)(0x80 | (cp & 0x3F));
			struct chat_request req = post(JSON, body, (size_t)n, clen);
			struct chat_response res;
			respond(&req, &lim_default, &res);
			tried++;
			if (!is_message(&res, want, sizeof want)) {
				diag("for U+%05lX", cp);
				failed++;
			}
			chat_response_free(&res);
		}
	}
	ok(!failed, "echo: every surrogate pair comes back as its code point (%u pairs)", tried);
}

/* A long message of units (escaped form, decoded form) in turn, after a
 * member of pad bytes: the message is read from the body, not by json-c,
 * and echoed by a copy when its escapes are the reply's own. */
static void long_message(const char *const (*units)[2], size_t n_units, size_t pad,
			 const char *name)
{
	size_t cap = pad + 64 + 200000;
	char *body = malloc(cap), *want = malloc(cap);
	if (!body || !want)
		abort();
	size_t b = (size_t)sprintf(body, "{\"pad\":\"");
	memset(body + b, 'p', pad);
	b += pad;
	b += (size_t)sprintf(body + b, "\",\"message\":\"");
	size_t w = 0;
	for (size_t i = 0; b < 60000; i++) {
		const char *e = units[i % n_units][0], *d = units[i % n_units][1];
		size_t dl = *d ? strlen(d) : 1; /* "" stands for one NUL */
		memcpy(body + b, e, strlen(e));
		b += strlen(e);
		memcpy(want + w, d, dl);
		w += dl;
	}
	b += (size_t)sprintf(body + b, "\",\"n\":[1,{\"message\":2}]}");
	post_ok(JSON, body, b, want, w, name);
	free(body);
	free(want);
}

static void test_long_messages(void)
{
	static const char *const as_reply[][2] = {
	    {"a", "a"},
	    {"\\\"", "\""},
	    {"\\\\", "\\"},
	    {"\\n", "\n"},
	    {"\\t", "\t"},
	    {"\\b", "\b"},
	    {"\\f", "\f"},
	    {"\\r", "\r"},
	    {"\\u0001", "\x01"},
	    {"\\u0000", ""},
	    {"\xc3\xa9", "\xc3\xa9"},
	    {"/", "/"},
	    {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},
	    {"\\u001f", "\x1f"},
	    {" xyz ", " xyz "},
	};
	static const char *const others[][2] = {
	    {"\\/", "/"},
	    {"\\u0041", "A"},
	    {"\\u00e9", "\xc3\xa9"},
	    {"\\u001F", "\x1f"},
	    {"\\u000a", "\n"},
	    {"\\ud836\\udc00", "\xf0\x9d\xa0\x80"},
	    {"\\uFFFF", "\xef\xbf\xbf"},
	    {"\\\"", "\""},
	    {"\xec\x95\x88", "\xec\x95\x88"},
	};
	size_t na = sizeof as_reply / sizeof as_reply[0], no = sizeof others / sizeof others[0];
	long_message(as_reply, na, 10, "long message, escapes all the reply's, short rest");
	long_message(as_reply, na, 1000, "long message, escapes all the reply's, long rest");
	long_message(others, no, 10, "long message with escapes to decode, short rest");
	long_message(others, no, 1000, "long message with escapes to decode, long rest");
	long_message(as_reply + na - 1, 1, 1000, "long message without escapes");
}

int main(void)
{
	test_success();
	test_content_types();
	test_echo();
	test_surrogate_pairs();
	test_long_messages();
	test_members();
	test_whitespace();
	test_strings();
	test_values();
	test_utf8();
	test_depth();
	test_form();
	test_size();
	test_content_length();
	test_methods();
	test_paths();
	test_nulls();
	return done_testing();
}
