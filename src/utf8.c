#include "utf8.h"

#include <string.h>

/*
 * The well-formed byte sequences of RFC 3629, section 4. Second bytes are
 * narrowed for E0 (no overlong), ED (no surrogates), F0 (no overlong) and
 * F4 (nothing above U+10FFFF); C0, C1 and F5..FF never start a sequence.
 */
bool utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];

		if (c < 0x80) {
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

		unsigned char lo = 0x80, hi = 0xBF;
		size_t more;
		if (c >= 0xC2 && c <= 0xDF) {
			more = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			more = 2;
			if (c == 0xE0)
				lo = 0xA0;
			else if (c == 0xED)
				hi = 0x9F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			more = 3;
			if (c == 0xF0)
				lo = 0x90;
			else if (c == 0xF4)
				hi = 0x8F;
		} else {
			return false;
		}
		if (len - i - 1 < more)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (size_t k = 2; k <= more; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
		i += more + 1;
	}
	return true;
}
