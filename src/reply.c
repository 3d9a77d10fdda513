#include "reply.h"

#include "swar.h"

#include <stdlib.h>
#include <string.h>

/*
 * Escaping is table-driven: one lookup per byte says how many bytes the byte
 * becomes. 0 marks the common case (copied as is), so the loops below skip
 * runs of plain text with a single test.
 */
// clang-format off
static const unsigned char escaped_size[256] = {
    /* 0x00-0x1f: \b \t \n \f \r take two bytes, the rest six (\u00XX). */
    6, 6, 6, 6, 6, 6, 6, 6, 2, 2, 2, 6, 2, 2, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    ['"'] = 2,
    ['\\'] = 2,
};
// clang-format on

static const char short_escape[32] = {
    ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r',
};

size_t reply_escaped_len(const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t out = len;
	size_t i = 0;
	for (; len - i >= 8; i += 8) {
		uint64_t m = swar_json_special(swar_load(s + i));
		if (m)
			for (size_t k = i + swar_first(m); k < i + 8; k++)
				if (escaped_size[s[k]])
					out += escaped_size[s[k]] - 1u;
	}
	for (; i < len; i++)
		if (escaped_size[s[i]])
			out += escaped_size[s[i]] - 1u;
	return out;
}

char *reply_escape(char *out, const char *text, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0;

	while (i < len) {
		size_t run = i;
		while (len - run >= 8) {
			uint64_t m = swar_json_special(swar_load(s + run));
			if (m) {
				run += swar_first(m);
				break;
			}
			run += 8;
		}
		while (run < len && !escaped_size[s[run]])
			run++;
		memcpy(out, s + i, run - i);
		out += run - i;
		if (run == len)
			break;

		unsigned char c = s[run];
		*out++ = '\\';
		if (c == '"' || c == '\\') {
			*out++ = (char)c;
		} else if (short_escape[c]) {
			*out++ = short_escape[c];
		} else {
			memcpy(out, "u00", 3);
			out[3] = hex[c >> 4];
			out[4] = hex[c & 0xf];
			out += 5;
		}
		i = run + 1;
	}
	return out;
}

/* The head and tail of every message reply around the escaped text. */
static const char head[] = "{\"message\":\"" REPLY_PREFIX;
static const char tail[] = "\"}";

static char *reply_around(size_t body, char **text)
{
	char *buf = malloc(sizeof head - 1 + body + sizeof tail);
	if (!buf)
		return NULL;
	memcpy(buf, head, sizeof head - 1);
	*text = buf + sizeof head - 1;
	memcpy(*text + body, tail, sizeof tail);
	return buf;
}

char *reply_message(const char *text, size_t len, size_t *out_len)
{
	size_t body = reply_escaped_len(text, len);
	char *p, *buf = reply_around(body, &p);
	if (!buf)
		return NULL;
	reply_escape(p, text, len);
	*out_len = sizeof head - 1 + body + sizeof tail - 1;
	return buf;
}

char *reply_message_escaped(const char *escaped, size_t len, size_t *out_len)
{
	char *p, *buf = reply_around(len, &p);
	if (!buf)
		return NULL;
	memcpy(p, escaped, len);
	*out_len = sizeof head - 1 + len + sizeof tail - 1;
	return buf;
}
