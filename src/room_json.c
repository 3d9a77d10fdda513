#include "room_json.h"

#include "reply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool reserve(struct json_out *o, size_t more)
{
	if (o->failed)
		return false;
	if (more <= o->cap - o->len)
		return true;
	size_t cap = o->cap ? o->cap : 256;
	while (cap - o->len < more) {
		if (cap > SIZE_MAX / 2) {
			o->failed = true;
			return false;
		}
		cap *= 2;
	}
	char *grown = realloc(o->buf, cap);
	if (!grown) {
		o->failed = true;
		return false;
	}
	o->buf = grown;
	o->cap = cap;
	return true;
}

void json_out_raw(struct json_out *o, const char *s, size_t len)
{
	if (!reserve(o, len))
		return;
	memcpy(o->buf + o->len, s, len);
	o->len += len;
}

void json_out_string(struct json_out *o, const char *s, size_t len)
{
	size_t esc = reply_escaped_len(s, len);
	if (esc > SIZE_MAX - 2 || !reserve(o, esc + 2))
		return;
	char *p = o->buf + o->len;
	*p++ = '"';
	p = reply_escape(p, s, len);
	*p++ = '"';
	o->len = (size_t)(p - o->buf);
}

void json_out_int(struct json_out *o, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof num, "%" PRId64, v);
	if (n > 0 && (size_t)n < sizeof num)
		json_out_raw(o, num, (size_t)n);
	else
		o->failed = true;
}

#define RAW(o, lit) json_out_raw((o), (lit), sizeof(lit) - 1)

void json_out_entry(struct json_out *o, const struct store_entry *e)
{
	char when[ROOM_TIME_LEN + 1];
	room_time_format(e->time_ms, when);
	RAW(o, "{\"seq\":");
	json_out_int(o, e->seq);
	if (e->role == STORE_BOT)
		RAW(o, ",\"role\":\"bot\",\"text\":");
	else
		RAW(o, ",\"role\":\"user\",\"text\":");
	json_out_string(o, e->text, e->text_len);
	RAW(o, ",\"time\":\"");
	json_out_raw(o, when, ROOM_TIME_LEN);
	RAW(o, "\",\"client_id\":");
	if (e->client_id)
		json_out_string(o, e->client_id, e->client_id_len);
	else
		RAW(o, "null");
	RAW(o, "}");
}

char *json_out_take(struct json_out *o, size_t *len)
{
	if (!reserve(o, 1)) {
		free(o->buf);
		*o = (struct json_out){0};
		return NULL;
	}
	o->buf[o->len] = '\0';
	char *b = o->buf;
	*len = o->len;
	*o = (struct json_out){0};
	return b;
}

void room_time_format(int64_t time_ms, char out[ROOM_TIME_LEN + 1])
{
	time_t sec = (time_t)(time_ms / 1000);
	int ms = (int)(time_ms % 1000);
	struct tm tm;
	if (time_ms < 0 || !gmtime_r(&sec, &tm) || tm.tm_year + 1900 > 9999) {
		memcpy(out, "1970-01-01T00:00:00.000Z", ROOM_TIME_LEN + 1);
		return;
	}
	/* Fixed width, written digit by digit: every field is in range here. */
	static const unsigned char width[] = {4, 2, 2, 2, 2, 2, 3};
	static const char sep[] = "--T::.Z";
	int field[] = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		       tm.tm_min,         tm.tm_sec,     ms};
	char *p = out;
	for (size_t f = 0; f < sizeof width; f++) {
		for (int i = width[f] - 1; i >= 0; i--) {
			p[i] = (char)('0' + field[f] % 10);
			field[f] /= 10;
		}
		p += width[f];
		*p++ = sep[f];
	}
	*p = '\0';
}
