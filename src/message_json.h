/* The "message" member of an application/json body, parsed with json-c
 * under the strict rules of RFC 8259. */
#ifndef MESSAGE_JSON_H
#define MESSAGE_JSON_H

#include <stddef.h>

struct json_object;

/*
 * Parses body as one JSON object and finds its "message" member.
 * Returns 0 with *text and *len pointing into *root (release it with
 * json_object_put after use; *root may be set even for an empty message),
 * or -1 for a bad body (400), -2 when out of memory, with *why set to a
 * sentence for the client and *root NULL.
 * A missing "message" gives the empty string; a non-string one is an error.
 */
int message_from_json(const char *body, size_t body_len, struct json_object **root,
		      const char **text, size_t *len, const char **why);

/*
 * An optional string member of the object message_from_json returned, such
 * as "room": 1 with *s and *len pointing into root, 0 when absent, -1 when
 * it is not a string.
 */
int message_json_member(struct json_object *root, const char *name, const char **s, size_t *len);

#endif
