/*
 * The request logic as the server calls it: a request's head judged before
 * its body is read, then the whole request answered by its route's handler
 * (routes.h), request in, response out (response.h). No libfcgi, no I/O,
 * no globals: unit tests and fuzzers call it directly.
 */
#ifndef CHAT_H
#define CHAT_H

#include "response.h"
#include "routes.h"

#include <stdbool.h>
#include <stddef.h>

enum chat_head {
	CHAT_HEAD_READ_BODY, /* read the body, then call chat_respond */
	CHAT_HEAD_REJECTED   /* *res holds the answer; drain the body unread */
};

/*
 * Judges a request from its head alone (path, method, content type and
 * announced length), before any body byte is read. On CHAT_HEAD_READ_BODY,
 * *announced holds CONTENT_LENGTH (0 when absent), at most lim->max_body.
 * The routes without a handler (the server's own) are 404 here.
 */
enum chat_head chat_check_head(const struct chat_request *req, const struct chat_limits *lim,
			       struct chat_response *res, size_t *announced);

/*
 * Answers a whole request. Always fills *res; its kind says what the
 * server is to do with it. A body longer than lim->max_body gets 413
 * whatever CONTENT_LENGTH said.
 */
void chat_respond(const struct chat_request *req, const struct chat_limits *lim,
		  struct chat_response *res);

/*
 * Does route allow req's method? If not, false with *res the answer: 405
 * with the route's Allow and {"error":"Only ... allowed here."}, or 404 for
 * ROUTE_OTHER, which allows none. For the routes the server answers itself.
 */
bool chat_check_method(enum route_id route, const struct chat_request *req,
		       struct chat_response *res);

/*
 * A post in the making (CHAT_POST): a room's entries, stored while no
 * thread waits for the commit. Holds copies of all it needs, so the
 * request's body and parsed JSON may go meanwhile (its parameters must
 * stay, for chat_post_finish).
 */

/* Queues post to be stored with others in one transaction; done(cookie) is
 * called from the store's thread once it is stored or has failed, and
 * should only hand it on to a thread that calls chat_post_finish. */
void chat_post_queue(const struct chat_limits *lim, struct chat_post *post,
		     void (*done)(void *cookie), void *cookie);

/* Stores post in the calling thread, which waits (may_block first). */
void chat_post_store(const struct chat_limits *lim, struct chat_post *post);

/* The answer to req once its post has been stored (or has failed), as
 * chat_respond would have given it; frees post. */
void chat_post_finish(const struct chat_request *req, const struct chat_limits *lim,
		      struct chat_post *post, struct chat_response *res);

/* Frees a post never stored. */
void chat_post_free(struct chat_post *post);

/*
 * A read in the making (CHAT_READ): the read of a room's entries that a
 * GET /chat/messages or /chat/events needs, made by the store's threads
 * while no thread of the server waits. It keeps all it needs of the
 * request as it was asked.
 */

/* Queues read; done(cookie) is called from the store's thread once it is
 * made (or at once, on this thread, when the store refuses it), and should
 * only hand it on to a thread that calls chat_read_finish. */
void chat_read_queue(const struct chat_limits *lim, struct chat_read *read,
		     void (*done)(void *cookie), void *cookie);

/* The answer once read is made, as chat_respond would have given it
 * without the deferral (possibly another CHAT_HOLD or CHAT_STREAM); frees
 * read. */
void chat_read_finish(const struct chat_limits *lim, struct chat_read *read,
		      struct chat_response *res);

#endif
