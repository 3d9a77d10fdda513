#include "message_json.h"

#include "json_strict.h"
#include "response.h"

#include "hex.h"

#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/*
 * json-c 0.16 decodes a surrogate-pair escape to U+FFFD whenever the low 16
 * bits of the code point fall in D800..DFFF: U+1D800..U+1DFFF (SignWriting),
 * U+2D800..U+2DFFF (CJK Extension F) and so on in every plane. Raw UTF-8 it
 * copies as is, so such pairs are rewritten as UTF-8 before it parses.
 */

/* The value of the four hex digits at s (checked already). */
static unsigned u_escape_value(const char *s)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++)
		v = v << 4 | (unsigned)hex_value((unsigned char)s[i]);
	return v;
}

/* Whether text may hold a \uD800..\uDBFF escape; a cheap test that may say
 * yes wrongly (after an escaped backslash), never no wrongly. */
static bool may_have_surrogate_escape(const char *text, size_t len)
{
	for (const char *p = text, *end = text + len; end - p >= 6;) {
		p = memchr(p, '\\', (size_t)(end - p - 5));
		if (!p)
			return false;
		if (p[1] == 'u' && (p[2] == 'd' || p[2] == 'D') && p[3] != '\0' &&
		    strchr("89abAB", p[3]))
			return true;
		p += 2;
	}
	return false;
}

/* The code point of a surrogate pair (hi D800..DBFF, lo DC00..DFFF). */
static unsigned long surrogate_pair(unsigned long hi, unsigned long lo)
{
	return 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
}

/* Writes the UTF-8 of cp (at most U+10FFFF) at o; returns the end. */
static char *put_utf8(char *o, unsigned long cp)
{
	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xC0 | cp >> 6);
		*o++ = (char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xE0 | cp >> 12);
		*o++ = (char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (char)(0x80 | (cp & 0x3F));
	} else {
		*o++ = (char)(0xF0 | cp >> 18);
		*o++ = (char)(0x80 | (cp >> 12 & 0x3F));
		*o++ = (char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (char)(0x80 | (cp & 0x3F));
	}
	return o;
}

/* Copies text, strict JSON, to out (room for len bytes) with every
 * surrogate-pair escape as the UTF-8 of its code point; returns the length
 * written. The strict check has made sure that each high surrogate escape
 * is followed by a low one. */
static size_t join_surrogate_escapes(const char *text, size_t len, char *out)
{
	size_t i = 0;
	char *o = out;
	bool in_string = false;
	while (i < len) {
		char c = text[i];
		if (c == '"') {
			in_string = !in_string;
		} else if (c == '\\' && in_string) {
			if (text[i + 1] == 'u' && len - i >= 12) {
				unsigned hi = u_escape_value(text + i + 2);
				if (hi >= 0xD800 && hi <= 0xDBFF) {
					o = put_utf8(
					    o, surrogate_pair(hi, u_escape_value(text + i + 8)));
					i += 12;
					continue;
				}
			}
			/* Any other escape is copied whole, so that the backslash
			 * of "\\" does not start another. */
			*o++ = text[i++];
		}
		*o++ = text[i++];
	}
	return (size_t)(o - out);
}

/* Decodes raw, the inside of a string the strict check passed, to out
 * (room for n bytes: nothing decodes longer than its escape); returns the
 * length written. Surrogate pairs become the UTF-8 of their code point. */
static size_t decode_string(const char *raw, size_t n, char *out)
{
	static const char unescape[128] = {
	    ['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
	    ['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t',
	};
	const char *p = raw, *end = raw + n;
	char *o = out;
	for (;;) {
		const char *bs = memchr(p, '\\', (size_t)(end - p));
		size_t run = (size_t)((bs ? bs : end) - p);
		memcpy(o, p, run);
		o += run;
		if (!bs)
			return (size_t)(o - out);
		if (bs[1] != 'u') {
			*o++ = unescape[(unsigned char)bs[1]];
			p = bs + 2;
			continue;
		}
		unsigned long cp = u_escape_value(bs + 2);
		p = bs + 6;
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			cp = surrogate_pair(cp, u_escape_value(p + 2));
			p += 6;
		}
		o = put_utf8(o, cp);
	}
}

/*
 * Each thread keeps a tokener for short texts and resets it for the next:
 * making and freeing one took about a sixth of a small request's
 * instructions (bench/run --cost). A long text gets a tokener of its own,
 * so that none keeps a large buffer between requests.
 */
#define TOKENER_KEPT_MAX ((size_t)4096)

static pthread_key_t kept_key;
static bool kept_key_made;

static void kept_free(void *tok)
{
	json_tokener_free(tok);
}

static void kept_key_make(void)
{
	kept_key_made = pthread_key_create(&kept_key, kept_free) == 0;
}

/* A tokener for len bytes; *kept says whether it is the thread's own. */
static json_tokener *tokener_for(size_t len, bool *kept)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	*kept = false;
	if (len <= TOKENER_KEPT_MAX && pthread_once(&once, kept_key_make) == 0 && kept_key_made) {
		json_tokener *tok = pthread_getspecific(kept_key);
		if (tok) { /* reset after its last parse */
			*kept = true;
			return tok;
		}
		tok = json_tokener_new_ex(CHAT_JSON_MAX_DEPTH + 1);
		if (tok && pthread_setspecific(kept_key, tok) == 0) {
			*kept = true;
			return tok;
		}
		return tok; /* freed by the caller */
	}
	return json_tokener_new_ex(CHAT_JSON_MAX_DEPTH + 1);
}

/* Runs json-c on text; NULL with *why and *rc set when it fails. */
static json_object *json_c_parse(const char *text, size_t len, const char **why, int *rc)
{
	bool kept;
	json_tokener *tok = tokener_for(len, &kept);
	if (!tok) {
		*why = "The server is out of memory.";
		*rc = -2;
		return NULL;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
	enum json_tokener_error err = json_tokener_get_error(tok);
	if (kept)
		json_tokener_reset(tok); /* lets go of what a failed parse held */
	else
		json_tokener_free(tok);
	if (!obj || err != json_tokener_success) {
		json_object_put(obj);
		/* Either memory ran out or json-c disagrees with RFC 8259 on a
		 * text we passed; both are refusals, not crashes. */
		*why = "The body is not valid JSON.";
		*rc = -1;
		return NULL;
	}
	return obj;
}

/* The rest of the body, when this short, is copied on the stack. */
#define REST_ON_STACK ((size_t)512)

int message_from_json(const char *body, size_t body_len, struct json_object **root,
		      struct message_text *m, const char **why)
{
	*root = NULL;
	*m = (struct message_text){.text = "", .len = 0};
	struct json_strict_message msg;
	if (!json_strict_scan(body, body_len, CHAT_JSON_MAX_DEPTH, &msg, why))
		return -1;
	if (body_len > INT_MAX) { /* json-c takes an int length */
		*why = "The body is too large.";
		return -1;
	}

	/*
	 * The message's string, already checked, is kept from json-c, which
	 * would spend tens of instructions a byte on it: json-c builds the
	 * object of a copy of the body with an empty string there, and the
	 * text comes from the body (decoded only when asked, and echoed as it
	 * is when its escapes are the reply's). One copy costs less than a
	 * second call of json-c, which makes a locale each time. The rest must
	 * hold no surrogate pair (see above); else the whole body goes the
	 * slow way.
	 */
	size_t head = msg.raw ? (size_t)(msg.raw - body) : 0;
	size_t tail = msg.raw ? head + msg.raw_len : 0;
	bool quick = msg.raw && !may_have_surrogate_escape(body, head) &&
		     !may_have_surrogate_escape(body + tail, body_len - tail);
	char stack[REST_ON_STACK], *copy = NULL;
	size_t text_len = body_len;
	if (quick) {
		text_len = head + (body_len - tail);
		copy = text_len <= sizeof stack ? stack : malloc(text_len);
		if (copy) {
			memcpy(copy, body, head);
			memcpy(copy + head, body + tail, body_len - tail);
		}
	} else if (may_have_surrogate_escape(body, body_len)) {
		copy = malloc(body_len); /* UTF-8 is shorter than the escapes */
		if (copy)
			text_len = join_surrogate_escapes(body, body_len, copy);
		else
			text_len = 0;
	}
	if (!copy && text_len != body_len) {
		*why = "The server is out of memory.";
		return -2;
	}
	int rc = 0;
	json_object *obj = json_c_parse(copy ? copy : body, text_len, why, &rc);
	if (copy != stack)
		free(copy); /* json-c copied what it kept */
	if (!obj)
		return rc;
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		*why = "The body must be a JSON object, such as {\"message\": \"hello\"}.";
		return -1;
	}

	json_object *message;
	if (!json_object_object_get_ex(obj, "message", &message)) {
		*root = obj;
		return 0;
	}
	if (!json_object_is_type(message, json_type_string)) {
		json_object_put(obj);
		*why = "The \"message\" member must be a string.";
		return -1;
	}
	*root = obj;
	if (!quick) {
		m->text = json_object_get_string(message);
		m->len = (size_t)json_object_get_string_len(message);
		return 0;
	}
	m->raw = msg.raw;
	m->raw_len = msg.raw_len;
	m->escaped = msg.as_reply ? msg.raw : NULL;
	m->escaped_len = msg.as_reply ? msg.raw_len : 0;
	m->text = msg.escapes ? NULL : msg.raw;
	m->len = msg.escapes ? 0 : msg.raw_len;
	if (!m->escaped && message_text_decode(m) != 0) {
		json_object_put(obj);
		*root = NULL;
		*why = "The server is out of memory.";
		return -2;
	}
	return 0;
}

int message_text_decode(struct message_text *m)
{
	if (m->text)
		return 0;
	m->owned = malloc(m->raw_len + 1);
	if (!m->owned)
		return -2;
	m->len = decode_string(m->raw, m->raw_len, m->owned);
	m->owned[m->len] = '\0';
	m->text = m->owned;
	return 0;
}

void message_text_free(struct message_text *m)
{
	free(m->owned);
	m->owned = NULL;
}

int message_json_member(struct json_object *root, const char *name, const char **s, size_t *len)
{
	json_object *member;
	if (!root || !json_object_object_get_ex(root, name, &member))
		return 0;
	if (!json_object_is_type(member, json_type_string))
		return -1;
	*s = json_object_get_string(member);
	*len = (size_t)json_object_get_string_len(member);
	return 1;
}
