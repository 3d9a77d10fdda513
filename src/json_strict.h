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

#endif
