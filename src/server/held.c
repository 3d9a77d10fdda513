/*
 * Held connections: those that wait with a deadline or for their room.
 *
 * A connection let go while it waits for something other than its peer's
 * next request is put in srv->held: a long-poll or an event stream until
 * its room changes or its time is up, a request still arriving until its
 * receive deadline, a slow reader until its send deadline, a paced reply
 * until its next event. One timer (a timerfd) fires at the earliest
 * deadline, and every STORE_POLL_MS while requests wait on a store that
 * other processes write to. A post to a room moves that room's waiters to
 * the run queue with their answers queued: the post's thread computes them
 * (once for all who ask the same) but never writes to their sockets.
 */
#include "internal.h"

#include "events.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

void timer_by_locked(struct server *srv, uint64_t due_ms)
{
	if (srv->timer_due_ms != 0 && srv->timer_due_ms <= due_ms)
		return;
	uint64_t now = now_ms();
	uint64_t in = due_ms > now ? due_ms - now : 1;
	struct itimerspec its = {
	    .it_value = {.tv_sec = (time_t)(in / 1000), .tv_nsec = (long)(in % 1000) * 1000000L}};
	if (timerfd_settime(srv->timer_fd, 0, &its, NULL) != 0) {
		log_msg(LOG_ERROR, "timerfd_settime: %s", strerror(errno));
		return;
	}
	srv->timer_due_ms = due_ms;
}

/* Waits on its room, and so on a store other processes may write to. */
static bool waits_for_room(const struct conn *c)
{
	return c->task == TASK_POLL || c->task == TASK_STREAM;
}

/* A stream or paced reply whose last part is still being written: what
 * comes next waits until it is. */
static bool writing(const struct conn *c)
{
	return (c->task == TASK_STREAM || c->task == TASK_PACED) && c->out.bytes > 0;
}

/* When the timer must look at c next. */
static uint64_t due_of(const struct server *srv, const struct conn *c, uint64_t now)
{
	uint64_t due = conn_deadline(c);
	if (srv->cfg.store_version && waits_for_room(c) && (!due || now + STORE_POLL_MS < due))
		due = now + STORE_POLL_MS;
	return due;
}

bool held_insert_locked(struct server *srv, struct conn *c)
{
	/* A post since its answer was computed: wake_room, which counts the
	 * change before it looks at the list, may have looked already. */
	if (waits_for_room(c) && !writing(c) && c->seen_change != atomic_load(&srv->changes)) {
		c->stale = true;
		return false;
	}
	/* Let go into CONN_HELD; an event meanwhile (ST_MISSED) keeps it. */
	uint64_t cur = atomic_load(&c->st);
	for (;;) {
		if (cur & ST_MISSED) {
			if (atomic_compare_exchange_weak(&c->st, &cur, cur & ~(uint64_t)ST_MISSED))
				return false;
			continue;
		}
		if (atomic_compare_exchange_weak(&c->st, &cur, st_make(st_gen(cur), CONN_HELD)))
			break;
	}
	c->prev = NULL;
	c->next = srv->held;
	if (srv->held)
		srv->held->prev = c;
	srv->held = c;
	uint64_t due = due_of(srv, c, now_ms());
	if (due)
		timer_by_locked(srv, due);
	return true;
}

void held_remove_locked(struct server *srv, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->held = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
}

/* Takes c out of the held list for the calling thread. */
static void take_locked(struct server *srv, struct conn *c, struct conn **list)
{
	held_remove_locked(srv, c);
	set_state(c, CONN_BUSY);
	c->next = *list;
	*list = c;
}

/* The last answer answer_again computed, to give every request that would
 * get the same one (a fan-out: many waiters on one room, at one cursor)
 * without asking the store again. */
struct shared_answer {
	bool valid;
	bool streaming;
	int64_t stream_after;
	enum chat_hold_mode mode;
	char *query;
	uint64_t seen_change; /* srv->changes before it was computed */
	struct chat_response res;
};

static void shared_clear(struct shared_answer *sh)
{
	if (sh->valid) {
		free(sh->query);
		chat_response_free(&sh->res);
	}
	sh->valid = false;
}

/* A copy of the shared answer for creq, if it is the same question. */
static bool shared_take(struct shared_answer *sh, const struct chat_request *creq,
			struct chat_response *res, uint64_t *seen_change)
{
	if (!sh->valid || sh->streaming != creq->stream_open ||
	    sh->stream_after != creq->stream_after || sh->mode != creq->hold_mode ||
	    strcmp(sh->query, creq->query ? creq->query : "") != 0)
		return false;
	*res = sh->res;
	if (sh->res.body_len) {
		res->body = malloc(sh->res.body_len);
		if (!res->body)
			return false;
		memcpy(res->body, sh->res.body, sh->res.body_len);
		res->body_owned = true;
	}
	*seen_change = sh->seen_change;
	return true;
}

/* Keeps res as the shared answer when others may get it too: a read's
 * answer, which depends on nothing but the question. */
static void shared_keep(struct shared_answer *sh, const struct chat_request *creq,
			const struct chat_response *res, uint64_t seen_change)
{
	shared_clear(sh);
	if ((res->kind != CHAT_HOLD && res->status != 200) || res->store_error ||
	    res->changed_room[0] || res->kind == CHAT_PACED || res->kind == CHAT_POST ||
	    res->kind == CHAT_READ)
		return;
	sh->query = strdup(creq->query ? creq->query : "");
	if (!sh->query)
		return;
	sh->res = *res;
	sh->res.body_owned = false;
	sh->res.body = NULL;
	if (res->body_len) {
		sh->res.body = malloc(res->body_len);
		if (!sh->res.body) {
			free(sh->query);
			return;
		}
		memcpy(sh->res.body, res->body, res->body_len);
		sh->res.body_owned = true;
	}
	sh->streaming = creq->stream_open;
	sh->stream_after = creq->stream_after;
	sh->mode = creq->hold_mode;
	sh->seen_change = seen_change;
	sh->valid = true;
}

void answer_again(struct server *srv, struct conn *list, enum chat_hold_mode mode)
{
	struct shared_answer shared = {.valid = false};
	struct read_group *group = NULL;
	while (list) {
		struct conn *c = list;
		list = c->next;
		c->next = NULL;
		if (c->task == TASK_PACED ||
		    (c->task == TASK_STREAM && atomic_load(&srv->stopping))) {
			/* Its next event, or its end, once its queue has drained. */
			c->stream_more = true;
			conn_continue(c);
			continue;
		}
		struct chat_request creq;
		struct chat_response res;
		request_asked(c, &creq, mode);
		if (group && group_takes(group, c, &creq))
			continue;
		if (!shared_take(&shared, &creq, &res, &c->seen_change)) {
			if (group) {
				group_start(group);
				group = NULL;
			}
			c->seen_change = atomic_load(&srv->changes);
			chat_respond(&creq, &srv->cfg.limits, &res);
			if (res.kind == CHAT_READ &&
			    (group = group_new(c, &creq, res.read)) != NULL)
				continue; /* the others asking the same join it */
			shared_keep(&shared, &creq, &res, c->seen_change);
		}
		tl_away = false;
		answer_request(c, &creq, &res);
		if (tl_away)
			tl_away = false; /* the store has it */
		else
			conn_continue(c);
	}
	if (group)
		group_start(group);
	shared_clear(&shared);
}

void wake_room(struct server *srv, const char *room)
{
	struct conn *list = NULL;
	atomic_fetch_add(&srv->changes, 1);
	pthread_mutex_lock(&srv->lock);
	for (struct conn *c = srv->held, *next; c; c = next) {
		next = c->next;
		if (!waits_for_room(c) || strcmp(c->room, room) != 0)
			continue;
		if (writing(c)) {
			/* A stream still writing its last part reads on from its
			 * cursor once that is done. */
			c->stream_more = true;
			continue;
		}
		take_locked(srv, c, &list);
	}
	pthread_mutex_unlock(&srv->lock);
	bool before = tl_run_later;
	tl_run_later = true;
	answer_again(srv, list, CHAT_HOLD_ALLOWED);
	tl_run_later = before;
}

/* Did another process post to room? */
static bool room_changed(const struct store_changes *rooms, const char *room)
{
	if (rooms->all)
		return true;
	for (size_t i = 0; i < rooms->n; i++)
		if (strcmp(rooms->room[i], room) == 0)
			return true;
	return false;
}

/* Why c, whose deadline has passed, is closed; NULL when it is not. */
static const char *expired(const struct server *srv, const struct conn *c, uint64_t now, char *why,
			   size_t size, int *reason)
{
	if (c->receive_by && c->receive_by <= now) {
		snprintf(why, size,
			 "a request did not arrive whole within the receive timeout "
			 "(--receive-timeout %u s)",
			 srv->cfg.receive_timeout_ms / 1000);
		*reason = METRICS_CLOSE_RECEIVE_TIMEOUT;
		return why;
	}
	if (c->send_by && c->send_by <= now) {
		snprintf(why, size,
			 "its reader took nothing within the send timeout (--send-timeout %u s)",
			 srv->cfg.send_timeout_ms / 1000);
		*reason = METRICS_CLOSE_SEND_TIMEOUT;
		return why;
	}
	return NULL;
}

void timer_event(struct server *srv)
{
	uint64_t ticks;
	if (read(srv->timer_fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
		log_msg(LOG_ERROR, "timerfd read: %s", strerror(errno));

	bool changed = false;
	/* Static: a few KiB, and only the thread that got the one-shot timer
	 * event runs this. */
	static struct store_changes rooms;
	if (srv->cfg.store_version) {
		uint64_t v;
		if (srv->cfg.store_version(srv->cfg.store_ctx, &v) == 0) {
			pthread_mutex_lock(&srv->lock);
			changed = v != srv->store_version;
			srv->store_version = v;
			pthread_mutex_unlock(&srv->lock);
		}
		rooms.all = true;
		if (changed && srv->cfg.store_rooms)
			srv->cfg.store_rooms(srv->cfg.store_ctx, &rooms);
	}

	struct conn *over = NULL, *woken = NULL, *closed = NULL;
	pthread_mutex_lock(&srv->lock);
	if (changed)
		atomic_fetch_add(&srv->changes, 1);
	uint64_t now = now_ms();
	uint64_t next = 0;
	for (struct conn *c = srv->held, *n; c; c = n) {
		n = c->next;
		uint64_t d = conn_deadline(c);
		if (d && d <= now) {
			if ((c->receive_by && c->receive_by <= now) ||
			    (c->send_by && c->send_by <= now)) {
				take_locked(srv, c, &closed);
				continue;
			}
			if (!writing(c)) {
				take_locked(srv, c, &over);
				continue;
			}
			/* Its hold is up, but its last part is not yet written:
			 * what is due goes once it is. */
			c->hold_until = 0;
			c->stream_more = true;
		} else if (changed && waits_for_room(c) && room_changed(&rooms, c->room)) {
			if (!writing(c)) {
				take_locked(srv, c, &woken);
				continue;
			}
			c->stream_more = true;
		}
		uint64_t due = due_of(srv, c, now);
		if (due && (next == 0 || due < next))
			next = due;
	}
	srv->timer_due_ms = 0;
	if (next != 0)
		timer_by_locked(srv, next);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = TAG_TIMER};
	if (epoll_ctl(srv->ep, EPOLL_CTL_MOD, srv->timer_fd, &ev) != 0)
		log_msg(LOG_ERROR, "cannot watch the timer: %s", strerror(errno));
	pthread_mutex_unlock(&srv->lock);

	while (closed) {
		struct conn *c = closed;
		closed = c->next;
		c->next = NULL;
		char why[160];
		int reason = -1;
		const char *what = expired(srv, c, now, why, sizeof why, &reason);
		conn_close_for(c, what, reason);
	}
	answer_again(srv, over, CHAT_HOLD_OVER);
	answer_again(srv, woken, CHAT_HOLD_ALLOWED);
}
