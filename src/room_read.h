/*
 * A read of a room's entries, for GET /chat/messages and /chat/events:
 * made at once on the calling thread, or, where the store's reads wait on
 * a network (lim->defer_reads), handed to the server as CHAT_READ, made by
 * the store's own threads (store_read_queue), and finished once done. Both
 * ways give the same answer: each entry goes into the read's JSON as it is
 * read, and the finish, which the endpoint names, makes the answer of what
 * was read and of the request as it was asked, kept in the read.
 *
 * It knows the store and the response; not the endpoints, which give it
 * their entry and finish functions.
 */
#ifndef ROOM_READ_H
#define ROOM_READ_H

#include "response.h"
#include "room_json.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>

struct chat_read;

/* Makes the answer of a read that is done (r->sr.result and the rest are
 * set); r is freed by the caller afterwards. */
typedef void (*room_read_finish_fn)(const struct chat_limits *lim, struct chat_read *r,
				    struct chat_response *res);

struct chat_read {
	struct chat_read_head head; /* first: chat_response_free frees it by this */
	struct store_read sr;       /* sr.ctx is the read itself */
	room_read_finish_fn finish;
	/* What each entry read adds to. */
	struct json_out out;
	size_t count;
	int64_t last_seq;
	/* The request as it was asked. */
	char room[CHAT_ROOM_MAX + 1];
	enum chat_hold_mode mode;
	bool stream_open;
	bool head_only; /* HEAD */
	unsigned wait;  /* seconds a long-poll may wait */
	/* Who the store's thread tells when it is done (room_read_queue). */
	void (*done)(void *cookie);
	void *cookie;
};

/* A read of up to limit entries of room after seq after (newest limit with
 * after < 0), each given to each with the read as its ctx; NULL when out of
 * memory. */
struct chat_read *room_read_new(const char *room, int64_t after, unsigned limit,
				store_entry_fn each, room_read_finish_fn finish);

/* Makes r's read now and finishes it into *res, or, with lim->defer_reads,
 * hands it back as CHAT_READ for the server to queue. Takes over r. */
void room_read_make(const struct chat_limits *lim, struct chat_read *r, struct chat_response *res);

/* Queues r for the store's threads; done(cookie) is called on one of them
 * once it is made (or at once on this thread when the store refuses it). */
void room_read_queue(const struct chat_limits *lim, struct chat_read *r, void (*done)(void *cookie),
		     void *cookie);

/* The answer of r, done; frees r. */
void room_read_finish(const struct chat_limits *lim, struct chat_read *r,
		      struct chat_response *res);

void room_read_free(struct chat_read *r);

#endif
