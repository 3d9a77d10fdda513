/* Rooms: a POST /chat/ with a "room" stores the exchange, and
 * GET /chat/messages reads a room's history or waits for its next entry.
 * It knows the store and the response, not the router (chat.h) nor the
 * event streams built on its reads. */
#ifndef ROOMS_H
#define ROOMS_H

#include "response.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* GET /chat/messages: limit's default and maximum, wait's maximum (seconds;
 * nginx's fastcgi_read_timeout for the location is above it). */
#define ROOMS_LIMIT_DEFAULT 100u
#define ROOMS_LIMIT_MAX     500u
#define ROOMS_WAIT_MAX      30u
/* A page of history stops taking entries once its entries hold this many
 * bytes (it always holds at least one): with limit=500 and entries of up
 * to ~131 KiB escaped, a page would otherwise be tens of MB. Its "next" is
 * then the last entry it holds, and the rest follows from there. */
#define ROOMS_PAGE_MAX ((size_t)256 * 1024)
/* A client id: 1 to this many Unicode characters. */
#define ROOMS_CLIENT_ID_MAX 64u

/* The answer of the room endpoints under --store none. */
#define ROOMS_OFF_BODY "{\"error\":\"History is off on this server.\"}"

/* 1 to CHAT_ROOM_MAX characters from [A-Za-z0-9_-]. */
bool room_name_valid(const char *s, size_t len);
/* 1 to ROOMS_CLIENT_ID_MAX characters of valid UTF-8, no control character. */
bool room_client_id_valid(const char *s, size_t len);

/* Stores text and its reply in room (valid, NUL-terminated) and answers
 * with both entries; a repeated (room, client_id) gets the first answer.
 * With lim->defer_posts, res is instead the CHAT_POST of the post to
 * store. */
void rooms_post(const struct chat_limits *lim, const char *room, const char *client_id,
		size_t client_id_len, const char *text, size_t text_len, struct chat_response *res);

/* A post of rooms_post is one allocation, so that chat_response_free can
 * release it with free() (response.h). These are the calls of chat.h's
 * chat_post_queue, chat_post_store and chat_post_free. */
void rooms_post_queue(const struct chat_limits *lim, struct chat_post *post,
		      void (*done)(void *cookie), void *cookie);
void rooms_post_store(const struct chat_limits *lim, struct chat_post *post);
void rooms_post_free(struct chat_post *post);

/* The answer to a post once stored (or failed): res as rooms_post fills
 * it. Frees post. */
void rooms_post_answer(struct chat_post *post, struct chat_response *res);

/* The query of GET /chat/messages (and /chat/events). */
struct rooms_query {
	char room[CHAT_ROOM_MAX + 1];
	int64_t after; /* -1: not given */
	unsigned limit;
	unsigned wait;
	unsigned seen; /* bit per parameter, to refuse repeats */
};

/* Reads QUERY_STRING (undecoded, may be NULL) into q: room (required),
 * after, limit, wait; unknown names are ignored. NULL, or the constant
 * error body to answer 400 with. */
const char *rooms_parse_query(const char *qs, struct rooms_query *q);

/* Clears res and reads the query of a room endpoint into q: false, with
 * res the answer (404 under --store none, 400 for a bad query), when there
 * is nothing to read. */
bool rooms_read_query(const struct chat_request *req, const struct chat_limits *lim,
		      struct chat_response *res, struct rooms_query *q);

/* The answer when the store failed: 503 (or the out-of-memory one), with
 * a Retry-After. */
void rooms_store_failed(struct chat_response *res, enum store_result r, const char *why);

/* GET or HEAD /chat/messages?room=R&after=SEQ&limit=N&wait=S, its head
 * judged: the entries, or a CHAT_HOLD. */
void rooms_messages(const struct chat_request *req, const struct chat_limits *lim,
		    struct chat_response *res);

#endif
