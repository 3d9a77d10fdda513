/*
 * utf8_valid against a reference written another way: decode each sequence
 * to a code point from its lead byte's length class, then reject overlong
 * forms, surrogates and values above U+10FFFF (RFC 3629, section 3).
 */
#include "fuzz.h"
#include "utf8.h"

#include <stdbool.h>
#include <string.h>

static bool reference_valid(const uint8_t *s, size_t len)
{
	static const uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
	size_t i = 0;
	while (i < len) {
		uint8_t c = s[i];
		size_t n;
		uint32_t cp;
		if (c < 0x80) {
			n = 1, cp = c;
		} else if ((c & 0xE0) == 0xC0) {
			n = 2, cp = c & 0x1Fu;
		} else if ((c & 0xF0) == 0xE0) {
			n = 3, cp = c & 0x0Fu;
		} else if ((c & 0xF8) == 0xF0) {
			n = 4, cp = c & 0x07u;
		} else {
			return false; /* a continuation byte or F8..FF */
		}
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3Fu);
		}
		if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool want = reference_valid(data, size);
	FUZZ_CHECK(utf8_valid((const char *)data, size) == want, "want %d for %zu bytes", want,
		   size);

	/* The ASCII fast path reads eight bytes at a time: try every alignment
	 * and every tail, in a buffer of exactly the right size so that ASan
	 * sees any read past the end. */
	for (size_t skip = 1; skip < 8 && skip <= size; skip++) {
		uint8_t *copy = fuzz_alloc(size - skip);
		memcpy(copy, data + skip, size - skip);
		FUZZ_CHECK(utf8_valid((const char *)copy, size - skip) ==
			       reference_valid(copy, size - skip),
			   "differs at offset %zu", skip);
		free(copy);
	}
	return 0;
}
