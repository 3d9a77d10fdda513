/* The JSON bodies the backend sends. */
#ifndef REPLY_H
#define REPLY_H

#include <stddef.h>

/* The reply prefix, as the tutorial's server writes it. */
#define REPLY_PREFIX "received "

/*
 * Builds {"message":"received <text>"} with text escaped as JSON (control
 * characters as \uXXXX or short escapes, '"' and '\\' escaped, everything
 * else, '/' and non-ASCII included, copied as is). text must be valid UTF-8.
 * Returns a malloc'd buffer (NUL-terminated) with its length in *out_len,
 * or NULL when out of memory.
 */
char *reply_message(const char *text, size_t len, size_t *out_len);

/* reply_message for a text already escaped as reply_escape writes it. */
char *reply_message_escaped(const char *escaped, size_t len, size_t *out_len);

/* Bytes that text takes once escaped inside a JSON string. */
size_t reply_escaped_len(const char *text, size_t len);

/* Writes the escaped form of text to out, which has room for
 * reply_escaped_len(text, len) bytes; returns the end of what it wrote. */
char *reply_escape(char *out, const char *text, size_t len);

#endif
