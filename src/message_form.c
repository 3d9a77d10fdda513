#include "message_form.h"

#include "hex.h"
#include "utf8.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Decodes one name or value of application/x-www-form-urlencoded into out
 * (room for len bytes); returns the decoded length, or -1 on a bad %XX. */
static long form_decode(const char *s, size_t len, char *out)
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

int message_from_form(const char *body, size_t body_len, char **text, size_t *len, const char **why)
{
	static const char bad_escape[] = "The form has a bad percent-encoding.";
	const char *value = "";
	size_t value_len = 0;
	if (!body)
		body = "";
	const char *end = body + body_len;

	/* Every escape in the body must be well formed, not just the message's:
	 * a body with a broken one is not a form. */
	for (const char *p = body; p && p < end; p++) {
		p = memchr(p, '%', (size_t)(end - p));
		if (!p)
			break;
		if (end - p < 3 || hex_value((unsigned char)p[1]) < 0 ||
		    hex_value((unsigned char)p[2]) < 0) {
			*why = bad_escape;
			return -1;
		}
	}

	/* Names are checked undecoded first to skip decoding most of them; a
	 * name with escapes is decoded into a small buffer to compare. */
	for (const char *p = body; p && p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *field_end = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(field_end - p));
		const char *name_end = eq ? eq : field_end;
		size_t name_len = (size_t)(name_end - p);
		bool is_message;

		if (name_len == 7 && memcmp(p, "message", 7) == 0) {
			is_message = true;
		} else if (name_len >= 7 && name_len <= 3 * 7 &&
			   (memchr(p, '%', name_len) || memchr(p, '+', name_len))) {
			char name[3 * 7];
			long n = form_decode(p, name_len, name);
			if (n < 0) {
				*why = bad_escape;
				return -1;
			}
			is_message = n == 7 && memcmp(name, "message", 7) == 0;
		} else {
			is_message = false;
		}
		if (is_message) {
			value = eq ? eq + 1 : field_end;
			value_len = (size_t)(field_end - value);
		}
		p = amp ? amp + 1 : NULL;
	}

	char *out = malloc(value_len + 1);
	if (!out) {
		*why = "The server is out of memory.";
		return -2;
	}
	long n = form_decode(value, value_len, out);
	if (n < 0) {
		free(out);
		*why = bad_escape;
		return -1;
	}
	if (!utf8_valid(out, (size_t)n)) {
		free(out);
		*why = "The message is not valid UTF-8.";
		return -1;
	}
	out[n] = '\0';
	*text = out;
	*len = (size_t)n;
	return 0;
}
