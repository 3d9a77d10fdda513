/* One hexadecimal digit, as JSON \u escapes and form %XX escapes use. */
#ifndef HEX_H
#define HEX_H

/* The digit's value, or -1 if c is not a hex digit. */
static inline int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

#endif
