/* The "message" member of an application/json body, parsed with json-c
 * under the strict rules of RFC 8259. */
#ifndef MESSAGE_JSON_H
#define MESSAGE_JSON_H

#include <stddef.h>

struct json_object;

/* The message of a body; text is NULL until message_text_decode when
 * escaped holds all the reply needs. */
struct message_text {
	const char *text; /* decoded, len bytes */
	size_t len;
	/* The message as reply_escape would write it, escaped_len bytes, or
	 * NULL: then text is already set. */
	const char *escaped;
	size_t escaped_len;
	const char *raw; /* the string in the body, undecoded */
	size_t raw_len;
	char *owned;
};

/*
 * Parses body as one JSON object and finds its "message" member.
 * Returns 0 with *m describing it (pointing into body, *root, or m->owned:
 * release with message_text_free and json_object_put after use; *root may
 * be set even for an empty message, and its own "message" member is not
 * to be read), or -1 for a bad body (400), -2 when out of memory, with *why
 * set to a sentence for the client and *root NULL.
 * A missing "message" gives the empty string; a non-string one is an error.
 */
int message_from_json(const char *body, size_t body_len, struct json_object **root,
		      struct message_text *m, const char **why);

/* Sets m->text if it is not yet; 0, or -2 when out of memory. */
int message_text_decode(struct message_text *m);

void message_text_free(struct message_text *m);

/*
 * An optional string member of the object message_from_json returned, such
 * as "room": 1 with *s and *len pointing into root, 0 when absent, -1 when
 * it is not a string.
 */
int message_json_member(struct json_object *root, const char *name, const char **s, size_t *len);

#endif
