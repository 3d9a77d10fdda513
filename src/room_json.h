/* The JSON of the room answers, built by hand: entries, "next", "busy". */
#ifndef ROOM_JSON_H
#define ROOM_JSON_H

#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growing buffer; after a failed allocation it stays failed and every
 * append is a no-op, so callers check once at the end. */
struct json_out {
	char *buf;
	size_t len, cap;
	bool failed;
};

void json_out_raw(struct json_out *o, const char *s, size_t len);
/* A JSON string: the quotes and the escaped text. */
void json_out_string(struct json_out *o, const char *s, size_t len);
void json_out_int(struct json_out *o, int64_t v);
/* One entry: {"seq":..,"role":..,"text":..,"time":..,"client_id":..}. */
void json_out_entry(struct json_out *o, const struct store_entry *e);
/* Hands over the buffer (NUL-terminated; NULL if anything failed). */
char *json_out_take(struct json_out *o, size_t *len);

/* RFC 3339 UTC with milliseconds: 2026-11-22T10:00:00.123Z (24 bytes + NUL). */
#define ROOM_TIME_LEN 24
void room_time_format(int64_t time_ms, char out[ROOM_TIME_LEN + 1]);

#endif
