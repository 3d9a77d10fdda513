#include "media_type.h"

#include <stddef.h>
#include <strings.h>

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* A parameter value: a token or a quoted string; returns its bounds. */
static const char *param_value(const char *p, const char **end)
{
	if (*p == '"') {
		const char *v = ++p;
		while (*p && *p != '"')
			p += (*p == '\\' && p[1]) ? 2 : 1;
		*end = p;
		return v;
	}
	const char *v = p;
	while (*p && *p != ';' && !is_ows(*p))
		p++;
	*end = p;
	return v;
}

enum media_match media_type_match(const char *header, const char *type)
{
	if (!header)
		return MEDIA_OTHER;
	const char *p = header;
	while (is_ows(*p))
		p++;

	size_t n = 0;
	while (type[n])
		n++;
	if (strncasecmp(p, type, n) != 0)
		return MEDIA_OTHER;
	p += n;
	while (is_ows(*p))
		p++;
	if (*p != '\0' && *p != ';')
		return MEDIA_OTHER; /* a longer type, such as application/jsonx */

	/* Parameters: only charset matters, and JSON and forms here are UTF-8. */
	while (*p == ';') {
		p++;
		while (is_ows(*p))
			p++;
		const char *name = p;
		while (*p && *p != '=' && *p != ';')
			p++;
		size_t name_len = (size_t)(p - name);
		while (name_len && is_ows(name[name_len - 1]))
			name_len--;
		if (*p != '=')
			continue;
		p++;
		const char *end;
		const char *value = param_value(p, &end);
		if (name_len == 7 && strncasecmp(name, "charset", 7) == 0) {
			size_t value_len = (size_t)(end - value);
			bool utf8 = (value_len == 5 && strncasecmp(value, "utf-8", 5) == 0) ||
				    (value_len == 4 && strncasecmp(value, "utf8", 4) == 0);
			if (!utf8)
				return MEDIA_BAD_CHARSET;
		}
		p = end;
		if (*p == '"')
			p++;
		while (*p && *p != ';')
			p++;
	}
	return MEDIA_MATCH;
}
