#include "message_json.h"

#include "chat.h"
#include "json_strict.h"

#include "hex.h"

#include <json-c/json.h>
#include <limits.h>
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

/* Copies text, strict JSON, to out (room for len bytes) with every
 * surrogate-pair escape as the UTF-8 of its code point; returns the length
 * written. The strict check has made sure that each high surrogate escape
 * is followed by a low one. */
static size_t join_surrogate_escapes(const char *text, size_t len, char *out)
{
	size_t i = 0, o = 0;
	bool in_string = false;
	while (i < len) {
		char c = text[i];
		if (c == '"') {
			in_string = !in_string;
		} else if (c == '\\' && in_string) {
			if (text[i + 1] == 'u' && len - i >= 12) {
				unsigned hi = u_escape_value(text + i + 2);
				if (hi >= 0xD800 && hi <= 0xDBFF) {
					unsigned lo = u_escape_value(text + i + 8);
					unsigned long cp = 0x10000 +
							   ((unsigned long)(hi - 0xD800) << 10) +
							   (lo - 0xDC00);
					out[o++] = (char)(0xF0 | cp >> 18);
					out[o++] = (char)(0x80 | (cp >> 12 & 0x3F));
					out[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
					out[o++] = (char)(0x80 | (cp & 0x3F));
					i += 12;
					continue;
				}
			}
			/* Any other escape is copied whole, so that the backslash
			 * of "\\" does not start another. */
			out[o++] = text[i++];
		}
		out[o++] = text[i++];
	}
	return o;
}

int message_from_json(const char *body, size_t body_len, struct json_object **root,
		      const char **text, size_t *len, const char **why)
{
	*root = NULL;
	if (!json_strict_check(body, body_len, CHAT_JSON_MAX_DEPTH, why))
		return -1;
	if (body_len > INT_MAX) { /* json-c takes an int length */
		*why = "The body is too large.";
		return -1;
	}

	char *joined = NULL;
	if (may_have_surrogate_escape(body, body_len)) {
		joined = malloc(body_len); /* UTF-8 is shorter than the escapes */
		if (!joined) {
			*why = "The server is out of memory.";
			return -2;
		}
		body_len = join_surrogate_escapes(body, body_len, joined);
		body = joined;
	}

	/* The text is valid JSON now, so json-c only has to build the tree. */
	json_tokener *tok = json_tokener_new_ex(CHAT_JSON_MAX_DEPTH + 1);
	if (!tok) {
		free(joined);
		*why = "The server is out of memory.";
		return -2;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	json_object *obj = json_tokener_parse_ex(tok, body, (int)body_len);
	enum json_tokener_error err = json_tokener_get_error(tok);
	json_tokener_free(tok);
	free(joined); /* json-c copied what it kept */
	if (!obj || err != json_tokener_success) {
		json_object_put(obj);
		/* Either memory ran out or json-c disagrees with RFC 8259 on a
		 * text we passed; both are refusals, not crashes. */
		*why = "The body is not valid JSON.";
		return -1;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		*why = "The body must be a JSON object, such as {\"message\": \"hello\"}.";
		return -1;
	}

	json_object *message;
	if (!json_object_object_get_ex(obj, "message", &message)) {
		*root = obj;
		*text = "";
		*len = 0;
		return 0;
	}
	if (!json_object_is_type(message, json_type_string)) {
		json_object_put(obj);
		*why = "The \"message\" member must be a string.";
		return -1;
	}
	*root = obj;
	*text = json_object_get_string(message);
	*len = (size_t)json_object_get_string_len(message);
	return 0;
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
