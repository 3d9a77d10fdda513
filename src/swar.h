/* Eight bytes at a time: the loops over long strings skip plain runs with
 * one test per word instead of one per byte. */
#ifndef SWAR_H
#define SWAR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SWAR_ONES  0x0101010101010101ULL
#define SWAR_HIGHS 0x8080808080808080ULL

static inline uint64_t swar_load(const unsigned char *p)
{
	uint64_t w;
	memcpy(&w, p, sizeof w);
	return w;
}

/* Nonzero when w holds a zero byte (exact as a yes/no answer). */
static inline uint64_t swar_has_zero(uint64_t w)
{
	return (w - SWAR_ONES) & ~w & SWAR_HIGHS;
}

/* Nonzero when some byte of w is one a JSON string cannot hold as it is:
 * a control character (below 0x20), '"' or '\'. */
static inline uint64_t swar_json_special(uint64_t w)
{
	uint64_t control = (w - SWAR_ONES * 0x20) & ~w & SWAR_HIGHS;
	return control | swar_has_zero(w ^ (SWAR_ONES * '"')) |
	       swar_has_zero(w ^ (SWAR_ONES * '\\'));
}

/* swar_json_special, and bytes of 0x80 and above too: where a plain ASCII
 * run in a string ends. */
static inline uint64_t swar_string_stop(uint64_t w)
{
	return swar_json_special(w) | (w & SWAR_HIGHS);
}

/* How many bytes of a word with a nonzero swar_json_special() mask come
 * before the first special one. The lowest flagged byte is always a true
 * one (the trick's borrows only run upwards), so this is exact. */
static inline size_t swar_first(uint64_t mask)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (size_t)__builtin_ctzll(mask) / 8;
#else
	(void)mask;
	return 0; /* the caller's byte loop finds it */
#endif
}

#endif
