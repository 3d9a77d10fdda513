/*
 * message_from_form against a plain reference: every %XX in the body well
 * formed, then the value of the last field whose decoded name is "message",
 * decoded, which must be UTF-8.
 */
#include "fuzz.h"
#include "message_form.h"
#include "utf8.h"

#include <stdbool.h>
#include <string.h>

static int hex_digit(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20; /* lower case */
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes s[0..len) into out; every escape was checked beforehand. */
static size_t decode(const uint8_t *s, size_t len, uint8_t *out)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '%') {
			out[o++] = (uint8_t)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
			i += 2;
		} else {
			out[o++] = s[i] == '+' ? ' ' : s[i];
		}
	}
	return o;
}

/* 0 with the message in out/out_len, or -1 for a bad body. */
static int reference_message(const uint8_t *body, size_t len, uint8_t *out, size_t *out_len)
{
	for (size_t i = 0; i < len; i++)
		if (body[i] == '%' &&
		    (len - i < 3 || hex_digit(body[i + 1]) < 0 || hex_digit(body[i + 2]) < 0))
			return -1;

	uint8_t *name = fuzz_alloc(len);
	const uint8_t *value = NULL;
	size_t value_len = 0;
	size_t start = 0;
	while (start <= len) {
		size_t end = start;
		while (end < len && body[end] != '&')
			end++;
		size_t eq = start;
		while (eq < end && body[eq] != '=')
			eq++;
		if (decode(body + start, eq - start, name) == 7 &&
		    memcmp(name, "message", 7) == 0) {
			value = eq < end ? body + eq + 1 : body + end;
			value_len = eq < end ? end - eq - 1 : 0;
		}
		start = end + 1;
	}
	free(name);

	*out_len = value ? decode(value, value_len, out) : 0;
	return utf8_valid((const char *)out, *out_len) ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = NULL;
	size_t len = 0;
	const char *why = NULL;
	int rc = message_from_form((const char *)data, size, &text, &len, &why);

	uint8_t *want = fuzz_alloc(size);
	size_t want_len = 0;
	int want_rc = reference_message(data, size, want, &want_len);

	FUZZ_CHECK(rc == want_rc, "returned %d, want %d", rc, want_rc);
	if (rc == 0) {
		FUZZ_CHECK(text != NULL, "no text");
		FUZZ_CHECK(len == want_len && memcmp(text, want, len) == 0,
			   "decoded %zu bytes, want %zu", len, want_len);
		FUZZ_CHECK(text[len] == '\0', "not NUL-terminated");
		free(text);
	} else {
		FUZZ_CHECK(why != NULL && why[0] != '\0', "no reason given");
	}
	free(want);
	return 0;
}
