/*
 * A strict RFC 8259 check of a JSON text, run before json-c parses it:
 * json-c 0.16 accepts NaN, Infinity, "1.", "01", single quotes, raw control
 * characters in strings, overlong UTF-8 and unpaired surrogate escapes.
 */
#ifndef JSON_STRICT_H
#define JSON_STRICT_H

#include <stdbool.h>
#include <stddef.h>

/* Returns true when text is exactly one JSON value, with optional white
 * space around it, nested at most max_depth deep. Otherwise false, with *why
 * set to a sentence for the client. Work is linear and stack use bounded. */
bool json_strict_check(const char *text, size_t len, unsigned max_depth, const char **why);

/* The "message" member of a top-level object, as the check saw it in
 * passing, so that the caller need not look at those bytes again. */
struct json_strict_message {
	/* The bytes between the quotes of the string json-c would take as
	 * the member (the last of duplicates); NULL when there is none, the
	 * member is not a string, or some top-level key has an escape (so
	 * that which key is "message" is not known without decoding). */
	const char *raw;
	size_t raw_len;
	bool escapes;  /* raw holds a backslash escape */
	bool as_reply; /* raw is exactly what reply_escape writes for its value */
};

/* json_strict_check, also filling *msg (which may be NULL). */
bool json_strict_scan(const char *text, size_t len, unsigned max_depth,
		      struct json_strict_message *msg, const char **why);

#endif
