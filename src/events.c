/* The event streams' parts and the streamed replies, built as text. */
#include "events.h"

#include "room_json.h"
#include "room_read.h"
#include "rooms.h"
#include "store.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ERROR_BODY(sentence) "{\"error\":\"" sentence "\"}"
#define RAW(o, lit)          json_out_raw((o), (lit), sizeof(lit) - 1)

/* The retry: field: EVENTS_RETRY_MS, as text. */
#define RETRY_LINE "retry: 2000\n\n"
_Static_assert(EVENTS_RETRY_MS == 2000u, "RETRY_LINE spells EVENTS_RETRY_MS");

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* One media range of an Accept header, without its parameters, against
 * text/event-stream; a q of 0 refuses it (RFC 9110, 12.5.1). */
static bool range_accepts(const char *s, size_t len)
{
	static const char want[] = "text/event-stream";
	const char *semi = memchr(s, ';', len);
	size_t type_len = semi ? (size_t)(semi - s) : len;
	while (type_len && is_space(s[type_len - 1]))
		type_len--;
	if (type_len != sizeof want - 1 || strncasecmp(s, want, type_len) != 0)
		return false;
	for (const char *p = semi; p && p < s + len;) {
		p++;
		while (p < s + len && is_space(*p))
			p++;
		if (s + len - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
			/* q=0, q=0.0, q=0.000: refused; anything else accepts. */
			const char *v = p + 2;
			bool zero = v < s + len && *v == '0';
			for (v++; zero && v < s + len && *v != ';' && !is_space(*v); v++)
				if (*v != '.' && *v != '0')
					zero = false;
			return !zero;
		}
		p = memchr(p, ';', (size_t)(s + len - p));
	}
	return true;
}

bool events_accepted(const char *accept)
{
	if (!accept)
		return false;
	for (const char *p = accept;;) {
		while (is_space(*p) || *p == ',')
			p++;
		if (!*p)
			return false;
		size_t len = strcspn(p, ",");
		if (range_accepts(p, len))
			return true;
		p += len;
	}
}

/* Digits only, at least one, at most INT64_MAX. */
static bool parse_seq(const char *s, int64_t *out)
{
	uint64_t v = 0;
	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		unsigned d = (unsigned)(*s - '0');
		if (v > ((uint64_t)INT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = (int64_t)v;
	return true;
}

/* id: SEQ / event: message / data: the entry, as /chat/messages has it.
 * Stops the read (1) once the part is full; ctx is the read. */
static int add_event(void *arg, const struct store_entry *e)
{
	struct chat_read *r = arg;
	RAW(&r->out, "id: ");
	json_out_int(&r->out, e->seq);
	RAW(&r->out, "\nevent: message\ndata: ");
	json_out_entry(&r->out, e);
	RAW(&r->out, "\n\n");
	if (r->out.failed)
		return -1;
	r->count++;
	r->last_seq = e->seq;
	return r->out.len >= EVENTS_PART_MAX ? 1 : 0;
}

/* An open stream's part could not be made: it ends, empty, and the browser
 * reconnects after retry: and resumes from the last id it got. */
static void end_stream(struct chat_response *res, const char *why, bool store_error)
{
	memset(res, 0, sizeof *res);
	res->kind = CHAT_ANSWER;
	res->status = 200;
	res->content_type = EVENTS_CONTENT_TYPE;
	res->body = (char *)"";
	res->reason = why;
	res->store_error = store_error;
}

/* A part of an event stream once its read is made. */
static void events_finish(const struct chat_limits *lim, struct chat_read *r,
			  struct chat_response *res)
{
	(void)lim;
	if (r->sr.result != STORE_OK) {
		if (r->stream_open)
			end_stream(res, r->sr.why, true);
		else
			rooms_store_failed(res, r->sr.result, r->sr.why);
		return;
	}
	if (r->count == 0 && r->stream_open && r->mode == CHAT_HOLD_OVER)
		RAW(&r->out, ": keep-alive\n\n");
	size_t len = 0;
	char *body = r->out.len ? json_out_take(&r->out, &len) : NULL;
	if (r->out.failed) {
		free(body);
		if (r->stream_open)
			end_stream(res, "out of memory", false);
		else
			chat_out_of_memory(res, "out of memory");
		return;
	}
	res->status = 200;
	res->content_type = EVENTS_CONTENT_TYPE;
	res->body = body ? body : (char *)"";
	res->body_len = len;
	res->body_owned = body != NULL;
	if (r->head_only)
		return;
	int64_t after = r->sr.after;
	res->kind = CHAT_STREAM;
	res->stream_next = r->count ? r->last_seq : after >= 0 ? after : r->sr.last;
	/* The room has entries past this part (it was full, or a whole
	 * batch): the next part follows at once. */
	bool more = r->count && r->last_seq < r->sr.last;
	res->hold.ms = more ? 0 : EVENTS_HEARTBEAT_MS;
	memcpy(res->hold.room, r->room, sizeof r->room);
}

void events_respond(const struct chat_request *req, const struct chat_limits *lim,
		    struct chat_response *res)
{
	struct rooms_query q;
	if (!rooms_read_query(req, lim, res, &q))
		return;
	int64_t after = q.after;
	/* What a reconnecting EventSource sends: the id of the last event it
	 * got, which wins over the after it was first opened with. */
	if (req->last_event_id && *req->last_event_id && !parse_seq(req->last_event_id, &after)) {
		chat_set_error(res, 400,
			       ERROR_BODY("The Last-Event-ID header must be a sequence number."),
			       "bad Last-Event-ID");
		return;
	}
	if (req->stream_open)
		after = req->stream_after;
	bool head = req->method && strcmp(req->method, "HEAD") == 0;
	if (!req->stream_open && !head && req->hold_mode == CHAT_HOLD_FULL) {
		chat_set_error(res, 503, EVENTS_FULL_BODY, "no room for another event stream");
		res->retry_after = CHAT_RETRY_AFTER_S;
		return;
	}

	/* Without a cursor, the newest entries, as /chat/messages gives. */
	unsigned limit = after < 0 ? q.limit : EVENTS_BATCH;
	struct chat_read *r = room_read_new(q.room, after, limit, add_event, events_finish);
	if (!r) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	r->mode = req->hold_mode;
	r->stream_open = req->stream_open;
	r->head_only = head;
	if (!req->stream_open)
		RAW(&r->out, RETRY_LINE);
	room_read_make(lim, r, res);
}

/* The end of the next piece of text[0, len): after a word and the spaces
 * that follow it, or at EVENTS_DELTA_MAX bytes, never inside a UTF-8
 * sequence. */
static size_t piece_end(const char *text, size_t len)
{
	size_t max = len < EVENTS_DELTA_MAX ? len : EVENTS_DELTA_MAX;
	size_t i = 0;
	while (i < max && text[i] == ' ')
		i++;
	while (i < max && text[i] != ' ')
		i++;
	while (i < max && text[i] == ' ')
		i++;
	if (i == max && i < len)
		while (i > 1 && ((unsigned char)text[i] & 0xc0) == 0x80)
			i--;
	return i;
}

void events_stream_reply(const struct chat_limits *lim, struct chat_response *res)
{
	/* The answer is ours, {"message":"...",...}: its message is the text
	 * the deltas spell out, whether it was made now or replayed. */
	json_tokener *tok = json_tokener_new();
	json_object *root = tok ? json_tokener_parse_ex(tok, res->body, (int)res->body_len) : NULL;
	json_object *msg = NULL;
	if (tok)
		json_tokener_free(tok);
	if (!root || !json_object_object_get_ex(root, "message", &msg) ||
	    !json_object_is_type(msg, json_type_string)) {
		json_object_put(root);
		chat_response_free(res);
		chat_out_of_memory(res, "a streamed reply could not read its own answer");
		return;
	}
	const char *text = json_object_get_string(msg);
	size_t text_len = (size_t)json_object_get_string_len(msg);

	struct json_out o = {0};
	for (size_t at = 0; at < text_len;) {
		size_t n = piece_end(text + at, text_len - at);
		RAW(&o, "event: delta\ndata: {\"text\":");
		json_out_string(&o, text + at, n);
		RAW(&o, "}\n\n");
		at += n;
	}
	RAW(&o, "event: done\ndata: ");
	json_out_raw(&o, res->body, res->body_len);
	RAW(&o, "\n\n");
	json_object_put(root);
	size_t len;
	char *body = json_out_take(&o, &len);
	if (!body) {
		chat_response_free(res);
		chat_out_of_memory(res, "out of memory");
		return;
	}
	chat_response_free(res);
	res->body = body;
	res->body_len = len;
	res->body_owned = true;
	res->content_type = EVENTS_CONTENT_TYPE;
	/* Paced, it is sent event by event; else all at once, as any answer. */
	res->kind = lim->stream_pace_ms ? CHAT_PACED : CHAT_ANSWER;
	res->pace_ms = lim->stream_pace_ms;
}
