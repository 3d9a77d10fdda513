/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. json-c's own check lets the first two through. */
#ifndef UTF8_H
#define UTF8_H

#include <stdbool.h>
#include <stddef.h>

bool utf8_valid(const char *s, size_t len);

/*
 * The length (2 to 4) of the well-formed multi-byte sequence at s, which
 * has n > 0 bytes and starts with a byte of 0x80 or more; 0 if it is not
 * one. Second bytes are narrowed for E0 (no overlong), ED (no surrogates),
 * F0 (no overlong) and F4 (nothing above U+10FFFF); C0, C1 and F5..FF never
 * start a sequence.
 */
static inline size_t utf8_sequence(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xBF;
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
		return 0;
	}
	if (n - 1 < more || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k <= more; k++)
		if ((s[k] & 0xC0) != 0x80)
			return 0;
	return more + 1;
}

#endif
