/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF. json-c's own check lets the first two through. */
#ifndef UTF8_H
#define UTF8_H

#include <stdbool.h>
#include <stddef.h>

bool utf8_valid(const char *s, size_t len);

/*
 * Lead bytes 0x80..0xFF, from 0x80: the count of continuation bytes in the
 * low two bits (0: no sequence starts so: continuation bytes, C0, C1,
 * F5..FF), and above them the range the second byte must fall in, narrowed
 * for E0 (no overlong), ED (no surrogates), F0 (no overlong) and F4
 * (nothing above U+10FFFF).
 */
// clang-format off
static const unsigned char utf8_lead[128] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 80-8F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 90-9F */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* A0-AF */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* B0-BF */
     0,  0,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1, /* C0-CF */
     1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1, /* D0-DF */
     6,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 10,  2,  2, /* E0-EF */
    15,  3,  3,  3, 19,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* F0-FF */
};
// clang-format on
static const unsigned char utf8_second_lo[5] = {0x80, 0xA0, 0x80, 0x90, 0x80};
static const unsigned char utf8_second_hi[5] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};

/* The length (2 to 4) of the well-formed multi-byte sequence at s, which
 * has n > 0 bytes and starts with a byte of 0x80 or more; 0 if it is not
 * one. A table, not a chain of range tests: non-ASCII text meets this at
 * every character. */
static inline size_t utf8_sequence(const unsigned char *s, size_t n)
{
	unsigned lead = utf8_lead[s[0] - 0x80];
	size_t more = lead & 3;
	if (!more || n - 1 < more)
		return 0;
	unsigned range = lead >> 2;
	if (s[1] < utf8_second_lo[range] || s[1] > utf8_second_hi[range])
		return 0;
	if (more >= 2 && (s[2] & 0xC0) != 0x80)
		return 0;
	if (more == 3 && (s[3] & 0xC0) != 0x80)
		return 0;
	return more + 1;
}

#endif
