/*
 * POST /chat/: the message of a JSON or form body and its reply; with a
 * "room", the exchange stored through rooms.h; with Accept:
 * text/event-stream, the reply streamed through events.h. It knows nothing
 * of routing, of the request's head (chat.c judges it first) or of libfcgi.
 */
#ifndef MESSAGE_H
#define MESSAGE_H

#include "response.h"

/* Answers a post whose head has been judged (its Content-Type is JSON or a
 * form, its body as long as it says). */
void message_respond(const struct chat_request *req, const struct chat_limits *lim,
		     struct chat_response *res);

/* The answer to req once its post has been stored (or has failed), as
 * message_respond would have given it; frees post. */
void message_post_finish(const struct chat_request *req, const struct chat_limits *lim,
			 struct chat_post *post, struct chat_response *res);

#endif
