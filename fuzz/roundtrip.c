/*
 * Any valid message comes back exactly: the input, made valid UTF-8, is
 * sent as {"message": ...} (JSON-encoded in one of several ways) and as a
 * form field, through chat_respond; the reply, read with json-c, must hold
 * "received " + the message, byte for byte.
 *
 * Input: one byte choosing the encodings, then the message.
 */
#include "chat.h"
#include "fuzz.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <string.h>

/* A growing byte buffer. */
struct buf {
	char *p;
	size_t len, cap;
};

/* Never NULL, even when empty: memcpy and memcmp want real pointers. */
static void buf_init(struct buf *b)
{
	b->cap = 64;
	b->len = 0;
	b->p = fuzz_alloc(b->cap);
}

static void put(struct buf *b, const void *s, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		char *p = realloc(b->p, b->cap);
		if (!p)
			abort();
		b->p = p;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void put_u_escape(struct buf *b, unsigned v, bool upper)
{
	char e[7];
	snprintf(e, sizeof e, upper ? "\\u%04X" : "\\u%04x", v);
	put(b, e, 6);
}

/* The length of the valid UTF-8 sequence at s, or 0. */
static size_t sequence_length(const uint8_t *s, size_t n)
{
	for (size_t len = 1; len <= 4 && len <= n; len++)
		if (utf8_valid((const char *)s, len))
			return len;
	return 0;
}

/* The input made valid UTF-8: a byte that starts no valid sequence
 * becomes its low seven bits. */
static void make_message(const uint8_t *in, size_t n, struct buf *msg)
{
	for (size_t i = 0; i < n;) {
		size_t len = sequence_length(in + i, n - i);
		if (len) {
			put(msg, in + i, len);
			i += len;
		} else {
			char c = (char)(in[i] & 0x7F);
			put(msg, &c, 1);
			i++;
		}
	}
}

static uint32_t decode(const uint8_t *s, size_t len)
{
	if (len == 1)
		return s[0];
	uint32_t cp = s[0] & (0x7Fu >> len);
	for (size_t k = 1; k < len; k++)
		cp = cp << 6 | (s[k] & 0x3Fu);
	return cp;
}

/* The message as a JSON string, written by the harness itself: every
 * character escaped as \uXXXX (surrogate pairs above U+FFFF) when
 * all_escaped, else only what must be, with the short escapes. */
static void json_string(const struct buf *msg, bool all_escaped, bool upper, struct buf *out)
{
	const uint8_t *s = (const uint8_t *)msg->p;
	puts_(out, "\"");
	for (size_t i = 0; i < msg->len;) {
		size_t len = sequence_length(s + i, msg->len - i);
		uint32_t cp = decode(s + i, len);
		if (all_escaped) {
			if (cp >= 0x10000) {
				put_u_escape(out, 0xD800 + ((cp - 0x10000) >> 10), upper);
				put_u_escape(out, 0xDC00 + ((cp - 0x10000) & 0x3FF), upper);
			} else {
				put_u_escape(out, cp, upper);
			}
		} else if (cp == '"' || cp == '\\') {
			char e[2] = {'\\', (char)cp};
			put(out, e, 2);
		} else if (cp == '\n') {
			puts_(out, "\\n");
		} else if (cp == '\t') {
			puts_(out, "\\t");
		} else if (cp == '/') {
			puts_(out, "\\/");
		} else if (cp < 0x20) {
			put_u_escape(out, cp, upper);
		} else {
			put(out, s + i, len);
		}
		i += len;
	}
	puts_(out, "\"");
}

static void form_value(const struct buf *msg, bool plus_for_space, bool upper, struct buf *out)
{
	static const char unreserved[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					 "0123456789-._~";
	for (size_t i = 0; i < msg->len; i++) {
		unsigned char c = (unsigned char)msg->p[i];
		if (c && strchr(unreserved, c)) {
			put(out, &msg->p[i], 1);
		} else if (c == ' ' && plus_for_space) {
			puts_(out, "+");
		} else {
			char e[4];
			snprintf(e, sizeof e, upper ? "%%%02X" : "%%%02x", c);
			put(out, e, 3);
		}
	}
}

static void expect_echo(const char *content_type, const struct buf *body, const struct buf *msg)
{
	char length[32];
	int w = snprintf(length, sizeof length, "%zu", body->len);
	FUZZ_CHECK(w > 0 && (size_t)w < sizeof length, "snprintf");
	struct chat_request req = {
	    .method = "POST",
	    .path = "/chat/",
	    .content_type = content_type,
	    .content_length = length,
	    .body = body->p,
	    .body_len = body->len,
	};
	struct chat_limits lim = {.max_body = 16 * 1024 * 1024};
	struct chat_response res;
	chat_respond(&req, &lim, &res);
	FUZZ_CHECK(res.status == 200, "status %d (%s) for %s body: %.*s", res.status,
		   res.reason ? res.reason : "", content_type, (int)body->len, body->p);

	json_object *reply = json_tokener_parse(res.body);
	json_object *member;
	FUZZ_CHECK(reply && json_object_object_get_ex(reply, "message", &member) &&
		       json_object_is_type(member, json_type_string),
		   "reply without a message: %s", res.body);
	size_t got_len = (size_t)json_object_get_string_len(member);
	const char *got = json_object_get_string(member);
	FUZZ_CHECK(got_len == 9 + msg->len && memcmp(got, "received ", 9) == 0 &&
		       memcmp(got + 9, msg->p, msg->len) == 0,
		   "%s: the reply's message differs: %s", content_type, res.body);
	json_object_put(reply);
	chat_response_free(&res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned mode = data[0];
	struct buf msg, json, form;
	buf_init(&msg);
	buf_init(&json);
	buf_init(&form);
	make_message(data + 1, size - 1, &msg);
	FUZZ_CHECK(utf8_valid(msg.p, msg.len), "the harness made bad UTF-8");
	bool upper = mode & 4;

	switch (mode % 3) {
	case 0: { /* json-c's own encoder */
		json_object *obj = json_object_new_object();
		json_object *str = json_object_new_string_len(msg.p, (int)msg.len);
		FUZZ_CHECK(obj && str, "out of memory");
		json_object_object_add(obj, "message", str);
		size_t len;
		const char *text =
		    json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
		put(&json, text, len);
		json_object_put(obj);
		break;
	}
	case 1: /* every character as \u escapes */
		puts_(&json, "{\"message\":");
		json_string(&msg, true, upper, &json);
		puts_(&json, "}");
		break;
	default: /* raw text, white space and other members around it */
		puts_(&json,
		      " {\r\n\t\"other\" : [1, -0.5e+3, {\"a\": null}, true],\n \"message\" : ");
		json_string(&msg, false, upper, &json);
		puts_(&json, " , \"z\":\"message\" } ");
		break;
	}
	expect_echo("application/json", &json, &msg);

	if (mode & 8)
		puts_(&form, "a=1&message=ignored&");
	puts_(&form, mode & 16 ? "%6Dessage=" : "message=");
	form_value(&msg, mode & 32, upper, &form);
	if (mode & 64)
		puts_(&form, "&b=%41&message2=x&=");
	expect_echo("application/x-www-form-urlencoded; charset=UTF-8", &form, &msg);

	free(form.p);
	free(json.p);
	free(msg.p);
	return 0;
}
