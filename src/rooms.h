/* Rooms: a POST /chat/ with a "room" stores the exchange, and
 * GET /chat/messages reads a room's history or waits for its next entry. */
#ifndef ROOMS_H
#define ROOMS_H

#include "chat.h"

#include <stdbool.h>
#include <stddef.h>

#define ROOMS_PATH "/chat/messages"

/* GET /chat/messages: limit's default and maximum, wait's maximum (seconds;
 * nginx's fastcgi_read_timeout for the location is above it). */
#define ROOMS_LIMIT_DEFAULT 100u
#define ROOMS_LIMIT_MAX     500u
#define ROOMS_WAIT_MAX      30u
/* A client id: 1 to this many Unicode characters. */
#define ROOMS_CLIENT_ID_MAX 64u

/* The answer of the room endpoints under --store none. */
#define ROOMS_OFF_BODY "{\"error\":\"History is off on this server.\"}"

/* 1 to CHAT_ROOM_MAX characters from [A-Za-z0-9_-]. */
bool room_name_valid(const char *s, size_t len);
/* 1 to ROOMS_CLIENT_ID_MAX characters of valid UTF-8, no control character. */
bool room_client_id_valid(const char *s, size_t len);

/* Stores text and its reply in room (valid, NUL-terminated) and answers
 * with both entries; a repeated (room, client_id) gets the first answer. */
void rooms_post(const struct chat_limits *lim, const char *room, const char *client_id,
		size_t client_id_len, const char *text, size_t text_len, struct chat_response *res);

/* GET or HEAD /chat/messages?room=R&after=SEQ&limit=N&wait=S. */
void rooms_messages(const struct chat_request *req, const struct chat_limits *lim,
		    struct chat_response *res);

#endif
