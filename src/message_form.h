/* The "message" field of an application/x-www-form-urlencoded body. */
#ifndef MESSAGE_FORM_H
#define MESSAGE_FORM_H

#include <stddef.h>

/*
 * Finds the last "message" field in body and percent-decodes it ('+' is a
 * space). Returns 0 with *text (malloc'd, NUL-terminated, may hold NUL bytes;
 * caller frees) and *len; or -1 for a bad body (400), -2 when out of memory,
 * with *why set to a sentence for the client.
 * A missing field gives the empty string. The decoded text must be UTF-8.
 */
int message_from_form(const char *body, size_t body_len, char **text, size_t *len,
		      const char **why);

#endif
