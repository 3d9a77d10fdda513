/* Server-sent events: GET /chat/events streams a room's entries as they
 * are stored, and a POST /chat/ that accepts text/event-stream gets its
 * reply in parts (delta events) before the whole answer (a done event).
 * It reads rooms through rooms.h; it knows nothing of the router (chat.h)
 * nor of how the server sends the parts. */
#ifndef EVENTS_H
#define EVENTS_H

#include "response.h"

#include <stdbool.h>
#include <stddef.h>

#define EVENTS_CONTENT_TYPE "text/event-stream; charset=utf-8"
/* A comment goes out after this much silence, so that proxies and
 * nginx's fastcgi_read_timeout (60 s for the location) keep the stream. */
#define EVENTS_HEARTBEAT_MS 15000u
/* How long a browser waits before it reconnects a stream that ended. */
#define EVENTS_RETRY_MS 2000u
/* Entries sent in one part at most; a longer backlog follows at once. */
#define EVENTS_BATCH 500u
/* A part takes no more entries once it holds this many bytes (it takes
 * one at least), so a long backlog of long entries is never built in
 * memory whole: a part is at most this and one entry. */
#define EVENTS_PART_MAX ((size_t)256 * 1024)
/* A delta of a streamed reply carries at most this many bytes of text. */
#define EVENTS_DELTA_MAX 48u

#define EVENTS_FULL_BODY                                                                           \
	"{\"error\":\"Too many event streams are open; poll /chat/messages instead.\"}"

/* Does an Accept header ask for text/event-stream? */
bool events_accepted(const char *accept);

/* GET or HEAD /chat/events?room=R[&after=SEQ], with Last-Event-ID: SEQ
 * taking the place of after. The head has been judged. A GET is a
 * CHAT_STREAM part; with stream_open, a failure ends the stream with an
 * empty CHAT_ANSWER. */
void events_respond(const struct chat_request *req, const struct chat_limits *lim,
		    struct chat_response *res);

/*
 * Turns the JSON answer of a post (res, status 200) into a streamed reply:
 * delta events carrying the pieces of its "message", then a done event
 * carrying the answer itself; a CHAT_PACED one with lim->stream_pace_ms,
 * else a CHAT_ANSWER. On failure res becomes the 503 of chat_out_of_memory.
 */
void events_stream_reply(const struct chat_limits *lim, struct chat_response *res);

#endif
