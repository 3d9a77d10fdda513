/*
 * The quick JSON path against json-c alone. message_from_json keeps the
 * message's bytes from json-c and decodes them itself (src/message_json.c);
 * for any body it must agree with json-c parsing the whole body after the
 * strict check: the same verdict, and the same message byte for byte. A
 * message it hands over already escaped must be exactly what reply_escape
 * writes for the decoded text.
 *
 * Input: the body.
 */
#include "chat.h"
#include "fuzz.h"
#include "json_strict.h"
#include "message_json.h"
#include "reply.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <string.h>

/* json-c 0.16 decodes some surrogate pairs wrongly (see message_json.c), so
 * bodies with a high-surrogate escape have no reference here; the round-trip
 * harness checks those messages. */
static bool has_high_surrogate_escape(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 3 < n; i++)
		if (p[i] == '\\' && p[i + 1] == 'u' && (p[i + 2] | 0x20) == 'd' &&
		    p[i + 3] != '\0' && strchr("89abAB", p[i + 3]))
			return true;
	return false;
}

/* What json-c alone makes of the body: 1 with the message (possibly
 * absent, then *s is "" and *len 0), 0 when the body is refused. */
static int reference(const char *body, size_t size, json_object **obj, const char **s, size_t *len)
{
	json_tokener *tok = json_tokener_new_ex(CHAT_JSON_MAX_DEPTH + 1);
	if (!tok)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	*obj = json_tokener_parse_ex(tok, body, (int)size);
	enum json_tokener_error err = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (!*obj || err != json_tokener_success || !json_object_is_type(*obj, json_type_object))
		return 0;
	json_object *message;
	*s = "";
	*len = 0;
	if (!json_object_object_get_ex(*obj, "message", &message))
		return 1;
	if (!json_object_is_type(message, json_type_string))
		return 0;
	*s = json_object_get_string(message);
	*len = (size_t)json_object_get_string_len(message);
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > CHAT_MAX_BODY_DEFAULT)
		return 0;
	/* A copy of exactly size bytes, so that reading past the body shows. */
	char *body = fuzz_alloc(size);
	memcpy(body, data, size);

	const char *why = NULL;
	bool strict = json_strict_check(body, size, CHAT_JSON_MAX_DEPTH, &why);
	json_object *root = NULL;
	struct message_text m;
	const char *why2 = NULL;
	int rc = message_from_json(body, size, &root, &m, &why2);
	FUZZ_CHECK(rc == 0 || rc == -1, "message_from_json returned %d", rc);
	FUZZ_CHECK(rc != 0 || strict, "the quick path took a body the strict check refuses");
	FUZZ_CHECK(rc == 0 || why2, "a refusal without a reason");

	if (strict && !has_high_surrogate_escape(data, size)) {
		json_object *obj = NULL;
		const char *want = NULL;
		size_t want_len = 0;
		int ok = reference(body, size, &obj, &want, &want_len);
		FUZZ_CHECK((rc == 0) == (ok == 1), "quick path %s, json-c %s",
			   rc == 0 ? "took it" : "refused", ok ? "takes it" : "refuses");
		if (rc == 0) {
			FUZZ_CHECK(message_text_decode(&m) == 0, "decoding ran out of memory");
			FUZZ_CHECK(m.len == want_len && memcmp(m.text, want, want_len) == 0,
				   "message of %zu bytes, json-c's %zu", m.len, want_len);
			if (m.escaped) {
				size_t n = reply_escaped_len(m.text, m.len);
				char *e = fuzz_alloc(n);
				FUZZ_CHECK(reply_escape(e, m.text, m.len) == e + n,
					   "reply_escape's length");
				FUZZ_CHECK(
				    n == m.escaped_len && memcmp(e, m.escaped, n) == 0,
				    "the message passed on as escaped is not reply_escape's");
				free(e);
			}
		}
		json_object_put(obj);
	}
	if (rc == 0) {
		message_text_free(&m);
		json_object_put(root);
	}
	free(body);
	return 0;
}
