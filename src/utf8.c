#include "utf8.h"

#include <string.h>

/* The well-formed byte sequences of RFC 3629, section 4 (see utf8.h). */
bool utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		if (s[i] < 0x80) {
			/* ASCII runs dominate chat text: skip them eight at a time. */
			while (i + 8 <= len) {
				unsigned long long w;
				memcpy(&w, s + i, sizeof w);
				if (w & 0x8080808080808080ULL)
					break;
				i += 8;
			}
			while (i < len && s[i] < 0x80)
				i++;
			continue;
		}
		size_t n = utf8_sequence(s + i, len - i);
		if (!n)
			return false;
		i += n;
	}
	return true;
}
