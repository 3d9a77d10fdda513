#include "message_form.h"

#include "hex.h"
#include "utf8.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

long form_value_decode(const char *s, size_t len, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '+') {
			out[o++] = ' ';
		} else if (s[i] == '%') {
			if (len - i < 3)
				return -1;
			int h = hex_value((unsigned char)s[i + 1]),
			    l = hex_value((unsigned char)s[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			out[o++] = (char)(h << 4 | l);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	return (long)o;
}

/* Longest field name looked up here ("client_id"); a name with escapes
 * takes at most three bytes per character. */
#define FIELD_NAME_MAX 9

/* Every escape in the body must be well formed, not just the wanted
 * field's: a body with a broken one is not a form. */
static bool escapes_valid(const char *body, const char *end)
{
	for (const char *p = body; p < end; p++) {
		p = memchr(p, '%', (size_t)(end - p));
		if (!p)
			break;
		if (end - p < 3 || hex_value((unsigned char)p[1]) < 0 ||
		    hex_value((unsigned char)p[2]) < 0)
			return false;
	}
	return true;
}

/* Finds the last field called name (name_len <= FIELD_NAME_MAX) and points
 * *value at its undecoded value; false when there is none. The escapes are
 * known to be valid. */
static bool find_field(const char *body, const char *end, const char *name, size_t name_len,
		       const char **value, size_t *value_len)
{
	bool found = false;
	/* Names are compared undecoded first to skip decoding most of them; a
	 * name with escapes is decoded into a small buffer to compare. */
	for (const char *p = body; p && p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *field_end = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(field_end - p));
		const char *name_end = eq ? eq : field_end;
		size_t n_len = (size_t)(name_end - p);
		bool same;

		if (n_len == name_len && memcmp(p, name, name_len) == 0) {
			same = true;
		} else if (n_len >= name_len && n_len <= 3 * name_len &&
			   (memchr(p, '%', n_len) || memchr(p, '+', n_len))) {
			char decoded[3 * FIELD_NAME_MAX];
			long n = form_value_decode(p, n_len, decoded);
			same = n == (long)name_len && memcmp(decoded, name, name_len) == 0;
		} else {
			same = false;
		}
		if (same) {
			*value = eq ? eq + 1 : field_end;
			*value_len = (size_t)(field_end - *value);
			found = true;
		}
		p = amp ? amp + 1 : NULL;
	}
	return found;
}

int message_form_field(const char *body, size_t body_len, const char *name, char **text,
		       size_t *len, const char **why)
{
	static const char bad_escape[] = "The form has a bad percent-encoding.";
	const char *value = "";
	size_t value_len = 0;
	if (!body)
		body = "";
	const char *end = body + body_len;
	size_t name_len = strlen(name);

	*text = NULL;
	*len = 0;
	if (!escapes_valid(body, end)) {
		*why = bad_escape;
		return -1;
	}
	if (name_len > FIELD_NAME_MAX)
		return 0;
	bool found = find_field(body, end, name, name_len, &value, &value_len);

	char *out = malloc(value_len + 1);
	if (!out) {
		*why = "The server is out of memory.";
		return -2;
	}
	long n = form_value_decode(value, value_len, out);
	if (n < 0) {
		free(out);
		*why = bad_escape;
		return -1;
	}
	if (!utf8_valid(out, (size_t)n)) {
		free(out);
		*why = strcmp(name, "message") == 0 ? "The message is not valid UTF-8."
						    : "A form field is not valid UTF-8.";
		return -1;
	}
	out[n] = '\0';
	*text = out;
	*len = (size_t)n;
	return found ? 1 : 0;
}

int message_from_form(const char *body, size_t body_len, char **text, size_t *len, const char **why)
{
	int r = message_form_field(body, body_len, "message", text, len, why);
	return r < 0 ? r : 0;
}
