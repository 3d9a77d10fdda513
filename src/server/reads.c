/*
 * Reads waiting for the store: parked connections, not parked threads.
 *
 * Where a store's reads wait on a network (PostgreSQL), the chat logic
 * hands a request's read back (CHAT_READ) instead of making it; the read is
 * queued for the store's own threads, the connection waits as AWAY_READ with
 * no thread on it, and a poller answers it once the read is made. Requests
 * woken together that ask the same question (a fan-out: many waiters on one
 * room, at one cursor) form a group that one read answers.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct read_group {
	struct chat_read *read;
	struct conn *members, **tail; /* linked by group_next; the first leads */
	/* The question its members ask. */
	char *query;
	bool stream_open;
	int64_t stream_after;
	enum chat_hold_mode mode;
};

/* Called on the store's thread (or at once on the queueing one). */
static void read_stored(void *cookie)
{
	conn_store_done(cookie);
}

static void queue_read(struct conn *c)
{
	struct chat_read *read = c->group ? c->group->read : c->read;
	chat_read_queue(&c->srv->cfg.limits, read, read_stored, c);
}

void read_start(struct conn *c, struct chat_response *res)
{
	c->read = res->read;
	res->read = NULL;
	chat_response_free(res);
	c->group = NULL;
	c->away = AWAY_READ;
	conn_to_store(c, queue_read);
}

/* A copy of res for another member of a group; false when memory ran out. */
static bool response_copy(struct chat_response *to, const struct chat_response *from)
{
	*to = *from;
	if (!from->body_owned || from->body_len == 0)
		return true;
	to->body = malloc(from->body_len);
	if (!to->body)
		return false;
	memcpy(to->body, from->body, from->body_len);
	return true;
}

/* The group's read is made: each member gets its answer. The leader (the
 * caller's) is answered last, and tl_away says what became of it. */
static void group_answer(struct read_group *g)
{
	struct conn *leader = g->members;
	struct server *srv = leader->srv;
	struct chat_response res;
	chat_read_finish(&srv->cfg.limits, g->read, &res);
	for (struct conn *m = leader->group_next, *next; m; m = next) {
		next = m->group_next;
		m->group = NULL;
		m->group_next = NULL;
		m->away = AWAY_NONE;
		m->store_done = false;
		struct chat_response copy;
		if (!response_copy(&copy, &res))
			chat_out_of_memory(&copy, "out of memory for a shared answer");
		struct chat_request creq;
		request_asked(m, &creq, g->mode);
		tl_away = false;
		answer_request(m, &creq, &copy);
		if (tl_away)
			tl_away = false; /* another read: the store has it */
		else
			conn_continue(m);
	}
	leader->group = NULL;
	leader->group_next = NULL;
	struct chat_request creq;
	request_asked(leader, &creq, g->mode);
	free(g->query);
	free(g);
	tl_away = false;
	answer_request(leader, &creq, &res);
}

void read_answer(struct conn *c)
{
	if (c->group) {
		group_answer(c->group);
		return;
	}
	struct chat_read *read = c->read;
	c->read = NULL;
	struct chat_request creq;
	struct chat_response res;
	request_asked(c, &creq, CHAT_HOLD_ALLOWED);
	chat_read_finish(&c->srv->cfg.limits, read, &res);
	answer_request(c, &creq, &res);
}

struct read_group *group_new(struct conn *leader, const struct chat_request *creq,
			     struct chat_read *read)
{
	struct read_group *g = calloc(1, sizeof *g);
	if (!g)
		return NULL;
	g->query = strdup(creq->query ? creq->query : "");
	if (!g->query) {
		free(g);
		return NULL;
	}
	g->read = read;
	g->stream_open = creq->stream_open;
	g->stream_after = creq->stream_after;
	g->mode = creq->hold_mode;
	g->members = leader;
	g->tail = &leader->group_next;
	leader->group_next = NULL;
	leader->group = g;
	leader->away = AWAY_READ;
	return g;
}

bool group_takes(struct read_group *g, struct conn *c, const struct chat_request *creq)
{
	if (g->stream_open != creq->stream_open || g->stream_after != creq->stream_after ||
	    g->mode != creq->hold_mode || strcmp(g->query, creq->query ? creq->query : "") != 0)
		return false;
	c->group = g;
	c->group_next = NULL;
	c->away = AWAY_READ;
	c->store_done = false;
	c->seen_change = g->members->seen_change;
	*g->tail = c;
	g->tail = &c->group_next;
	return true;
}

void group_start(struct read_group *g)
{
	struct conn *leader = g->members;
	tl_away = false;
	conn_to_store(leader, queue_read);
	if (tl_away) {
		tl_away = false;
		return;
	}
	/* The store answered at once (it refused the read). */
	conn_continue(leader);
}
