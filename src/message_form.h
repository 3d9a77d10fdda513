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

/*
 * The last field called name (at most 9 characters), decoded as above:
 * returns 1 with *text (malloc'd, NUL-terminated; caller frees) and *len, 0
 * when absent (*text then holds ""), -1 for a bad body, -2 when out of memory.
 */
int message_form_field(const char *body, size_t body_len, const char *name, char **text,
		       size_t *len, const char **why);

/* Decodes len bytes of an urlencoded name or value ('+' is a space) into
 * out, which has room for len bytes; returns the decoded length, or -1 on a
 * bad %XX. */
long form_value_decode(const char *s, size_t len, char *out);

#endif
