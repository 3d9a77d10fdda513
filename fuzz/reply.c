/*
 * The reply encoder: for any text, reply_message gives a JSON text of the
 * announced length that passes the strict RFC 8259 check and that json-c
 * reads back as exactly "received " + text; nothing is escaped that need not
 * be, and nothing raw is left that must be.
 */
#include "fuzz.h"
#include "json_strict.h"
#include "reply.h"
#include "utf8.h"

#include <json-c/json.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	size_t out_len = 0;
	char *out = reply_message(text, size, &out_len);
	FUZZ_CHECK(out != NULL, "out of memory");
	FUZZ_CHECK(strlen(out) <= out_len && out[out_len] == '\0', "length or terminator wrong");

	static const char head[] = "{\"message\":\"" REPLY_PREFIX;
	FUZZ_CHECK(out_len >= sizeof head + 1 && memcmp(out, head, sizeof head - 1) == 0,
		   "bad head");
	FUZZ_CHECK(memcmp(out + out_len - 2, "\"}", 2) == 0, "bad tail");
	size_t escaped = out_len - (sizeof head - 1) - 2;
	FUZZ_CHECK(escaped == reply_escaped_len(text, size), "escaped length %zu, said %zu",
		   escaped, reply_escaped_len(text, size));

	/* Only what JSON requires is escaped: control characters, '"', '\'. */
	size_t must = 0;
	for (size_t i = 0; i < size; i++)
		must += data[i] < 0x20 || data[i] == '"' || data[i] == '\\';
	FUZZ_CHECK(escaped >= size + must && escaped <= size + 5 * must, "%zu escapes in %zu bytes",
		   must, escaped);
	for (size_t i = 0; i < out_len; i++)
		FUZZ_CHECK((unsigned char)out[i] >= 0x20, "raw control byte at %zu", i);

	/* The contract holds for UTF-8 text only; then the reply is strict
	 * JSON and reads back exactly. */
	if (utf8_valid(text, size)) {
		const char *why = NULL;
		FUZZ_CHECK(json_strict_check(out, out_len, 1, &why), "not strict JSON: %s", why);
		json_tokener *tok = json_tokener_new();
		FUZZ_CHECK(tok != NULL, "out of memory");
		json_object *obj = json_tokener_parse_ex(tok, out, (int)out_len);
		FUZZ_CHECK(obj != NULL && json_tokener_get_error(tok) == json_tokener_success,
			   "json-c cannot read the reply");
		json_object *message;
		FUZZ_CHECK(json_object_object_get_ex(obj, "message", &message) &&
			       json_object_is_type(message, json_type_string),
			   "no message string");
		size_t got_len = (size_t)json_object_get_string_len(message);
		const char *got = json_object_get_string(message);
		size_t prefix = sizeof REPLY_PREFIX - 1;
		FUZZ_CHECK(got_len == prefix + size && memcmp(got, REPLY_PREFIX, prefix) == 0 &&
			       memcmp(got + prefix, text, size) == 0,
			   "message read back differs (%zu bytes, want %zu)", got_len,
			   prefix + size);
		json_object_put(obj);
		json_tokener_free(tok);
	}
	free(out);
	return 0;
}
