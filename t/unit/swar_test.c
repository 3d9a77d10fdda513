/* The word-at-a-time test of src/swar.h against the byte-by-byte rule, for
 * every byte at every position and every pair of neighbouring bytes (the
 * trick's borrows run from one byte into the next). */
#include "swar.h"
#include "tap.h"

#include <stdbool.h>

static bool special(unsigned char c)
{
	return c < 0x20 || c == '"' || c == '\\';
}

static uint64_t word(const unsigned char b[8])
{
	return swar_load(b);
}

int main(void)
{
	unsigned long wrong = 0;
	for (unsigned pos = 0; pos < 8; pos++)
		for (unsigned v = 0; v < 256; v++) {
			unsigned char b[8] = {'a', 'b', 0xc3, 0xa9, ' ', '~', 0x7f, 0xff};
			b[pos] = (unsigned char)v;
			bool want = false;
			for (unsigned k = 0; k < 8; k++)
				want |= special(b[k]);
			if ((swar_json_special(word(b)) != 0) != want)
				wrong++;
		}
	is_int(wrong, 0, "every byte value at every position");

	wrong = 0;
	for (unsigned pos = 0; pos < 7; pos++)
		for (unsigned v = 0; v < 256; v++)
			for (unsigned u = 0; u < 256; u++) {
				unsigned char b[8] = {'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'};
				b[pos] = (unsigned char)v;
				b[pos + 1] = (unsigned char)u;
				bool want = special(b[pos]) || special(b[pos + 1]);
				if ((swar_json_special(word(b)) != 0) != want)
					wrong++;
			}
	is_int(wrong, 0, "every pair of neighbouring bytes at every position");

	/* swar_string_stop also flags bytes of 0x80 and above, and its first
	 * flagged byte is the first such or special byte. */
	wrong = 0;
	for (unsigned pos = 0; pos < 7; pos++)
		for (unsigned v = 0; v < 256; v++)
			for (unsigned u = 0; u < 256; u++) {
				unsigned char b[8] = {'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'};
				b[pos] = (unsigned char)v;
				b[pos + 1] = (unsigned char)u;
				size_t want = 8;
				for (size_t k = 8; k-- > 0;)
					if (special(b[k]) || b[k] >= 0x80)
						want = k;
				uint64_t m = swar_string_stop(word(b));
				if (want == 8 ? m != 0 : m == 0 || swar_first(m) != want)
					wrong++;
			}
	is_int(wrong, 0, "swar_string_stop finds the first stop of every pair at every position");

	unsigned char zero[8] = {1, 2, 3, 0, 5, 6, 7, 8}, none[8] = {1, 2, 3, 4, 5, 6, 7, 0x80};
	ok(swar_has_zero(word(zero)), "a zero byte is found");
	ok(!swar_has_zero(word(none)), "no zero byte, no answer");
	return done_testing();
}
