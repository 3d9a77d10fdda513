/*
 * Connections: the slot table, who has a connection, and conn_run, which
 * does all a connection can do without waiting.
 *
 * Every event carries its slot's index and generation, which goes up when
 * the slot is freed, so an event for a connection since closed is dropped.
 * A connection is watched edge-triggered, registered once at accept: an
 * edge may come while a thread has the connection, and the thread that
 * gets it marks the connection ST_MISSED instead of touching it; the owner
 * looks again before it lets go (conn_let_go), so no edge is lost.
 * EPOLLOUT is asked for only while output is queued: on a unix socket every
 * read by the peer would otherwise be an event.
 */
/* accept4 and memmem. */
#define _GNU_SOURCE
#include "internal.h"

#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Connections accepted per wake-up before others get a turn. */
#define ACCEPT_BATCH 32

uint64_t st_make(uint32_t gen, enum conn_state state)
{
	return (uint64_t)gen << 32 | (uint32_t)state;
}

uint32_t st_gen(uint64_t st)
{
	return (uint32_t)(st >> 32);
}

enum conn_state st_state(uint64_t st)
{
	return (enum conn_state)((uint32_t)st & ST_STATE_MASK);
}

/* Only the thread that has c (or holds the lock, for held ones) calls it. */
void set_state(struct conn *c, enum conn_state state)
{
	atomic_store(&c->st, st_make(st_gen(atomic_load(&c->st)), state));
}

uint64_t conn_deadline(const struct conn *c)
{
	uint64_t d = 0;
	const uint64_t all[] = {c->receive_by, c->send_by, c->hold_until};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		if (all[i] && (d == 0 || all[i] < d))
			d = all[i];
	return d;
}

static uint32_t events_of(bool output)
{
	return EPOLLIN | EPOLLRDHUP | EPOLLET | (output ? EPOLLOUT : 0);
}

static uint64_t tag_of(const struct conn *c)
{
	return (uint64_t)st_gen(atomic_load(&c->st)) << 32 | c->index;
}

/* Asks epoll for EPOLLOUT too, or no more; the caller has c. */
static int watch_output(struct conn *c, bool output)
{
	struct epoll_event ev = {.events = events_of(output), .data.u64 = tag_of(c)};
	if (epoll_ctl(c->srv->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
		return -1;
	c->out_watched = output;
	return 0;
}

static void arm_listener(struct server *srv)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = TAG_LISTEN};
	/* After listener_refuse() the descriptor is another, unregistered
	 * socket: ENOENT then just means "stopped accepting". */
	if (epoll_ctl(srv->ep, EPOLL_CTL_MOD, srv->cfg.listen_fd, &ev) != 0 && errno != ENOENT &&
	    errno != EBADF)
		log_msg(LOG_ERROR, "cannot watch the listening socket: %s", strerror(errno));
}

/* Callers hold srv->lock. */
void release_slot(struct server *srv, struct conn *c)
{
	/* Whatever event is still in flight for it is stale now. */
	atomic_store(&c->st, st_make(st_gen(atomic_load(&c->st)) + 1, CONN_FREE));
	atomic_fetch_sub(&srv->connections, 1);
	c->next = srv->free_slots;
	srv->free_slots = c;
	if (atomic_load(&srv->stopping))
		pthread_cond_broadcast(&srv->done);
	else if (srv->listen_paused) {
		srv->listen_paused = false;
		arm_listener(srv);
	}
}

void conn_close(struct conn *c, const char *why)
{
	struct server *srv = c->srv;
	if (why)
		log_msg(LOG_NOTICE, "closed a connection: %s", why);
	if (c->task != TASK_NONE || c->counted || c->have_params)
		request_end(c);
	out_clear(c);
	free(c->unread);
	c->unread = NULL;
	c->unread_len = c->unread_at = 0;
	free(c->params);
	c->params = NULL;
	c->params_cap = c->params_len = 0;
	if (close(c->fd) != 0)
		log_msg(LOG_DEBUG, "close: %s", strerror(errno));
	c->fd = -1;
	c->failed = c->closing = c->out_watched = false;
	c->close_why = NULL;
	c->close_reason = -1;
	pthread_mutex_lock(&srv->lock);
	release_slot(srv, c);
	pthread_mutex_unlock(&srv->lock);
}

void conn_close_for(struct conn *c, const char *why, int reason)
{
	if (reason >= 0)
		metrics_conn_closed((enum metrics_close)reason);
	if (reason == METRICS_CLOSE_PROTOCOL) {
		log_msg(LOG_NOTICE, "closed a connection that broke the FastCGI protocol: %s", why);
		why = NULL;
	}
	conn_close(c, why);
}

void conn_fail(struct conn *c, const char *why, int reason)
{
	if (c->failed)
		return;
	c->failed = true;
	c->close_why = why;
	c->close_reason = reason;
}

void conn_close_after(struct conn *c, const char *why, int reason)
{
	if (!c->close_why) {
		c->close_why = why;
		c->close_reason = reason;
	}
	c->closing = true;
}

/* Lets c go: idle, or held for a deadline. False when an event came while
 * the caller had it: c is still the caller's, to look at again. */
static bool conn_let_go(struct conn *c)
{
	struct server *srv = c->srv;
	bool output = c->out.bytes > 0;
	if (output != c->out_watched && watch_output(c, output) != 0) {
		conn_close(c, "epoll could not watch it");
		return true;
	}
	if (!conn_deadline(c)) {
		/* Idle: nothing but its peer can give it work. */
		uint64_t cur = atomic_load(&c->st);
		for (;;) {
			if (cur & ST_MISSED) {
				if (atomic_compare_exchange_weak(&c->st, &cur,
								 cur & ~(uint64_t)ST_MISSED))
					return false;
				continue;
			}
			if (atomic_compare_exchange_weak(&c->st, &cur,
							 st_make(st_gen(cur), CONN_IDLE)))
				return true;
		}
	}
	pthread_mutex_lock(&srv->lock);
	bool held = held_insert_locked(srv, c);
	pthread_mutex_unlock(&srv->lock);
	return held;
}

/* The server is stopping, and c, about to be let go, would wait: an idle
 * connection closes, a long-poll answers with what there is, a stream or a
 * paced reply ends once its queue is written. */
enum stopped { STOP_GONE, STOP_AGAIN, STOP_WAIT };

static enum stopped stop_now(struct conn *c)
{
	switch (c->task) {
	case TASK_NONE:
		if (c->out.bytes > 0)
			return STOP_WAIT;
		conn_close(c, NULL);
		return STOP_GONE;
	case TASK_POLL:
		tl_away = false;
		ask_again(c, CHAT_HOLD_OVER);
		if (tl_away) {
			tl_away = false;
			return STOP_GONE;
		}
		return STOP_AGAIN;
	case TASK_STREAM:
	case TASK_PACED:
		if (c->stream_more)
			return STOP_WAIT;
		c->stream_more = true;
		return c->out.bytes == 0 ? STOP_AGAIN : STOP_WAIT;
	case TASK_RECEIVING:
		return STOP_WAIT;
	}
	return STOP_WAIT;
}

/* c is done with, one way or another: closed, logging why. */
static void conn_end(struct conn *c)
{
	conn_close_for(c, c->close_why, c->close_reason);
}

void conn_run(struct conn *c)
{
	struct server *srv = c->srv;
	for (;;) {
		if (c->away != AWAY_NONE) {
			if (!c->store_done)
				return; /* the store has it */
			enum conn_away away = c->away;
			c->away = AWAY_NONE;
			c->store_done = false;
			tl_away = false;
			if (away == AWAY_POST)
				post_answer(c);
			else if (away == AWAY_READ)
				read_answer(c);
			else
				check_answer(c);
			if (tl_away) {
				tl_away = false;
				return; /* the store has it again */
			}
		}
		if (c->failed) {
			conn_end(c);
			return;
		}
		if (c->stale) {
			c->stale = false;
			tl_away = false;
			ask_again(c, CHAT_HOLD_ALLOWED);
			if (tl_away) {
				tl_away = false;
				return;
			}
			continue;
		}
		if (c->out.bytes > 0 && out_flush(c) != 0) {
			conn_close(c, NULL); /* the peer is gone */
			return;
		}
		if (c->out.bytes == 0) {
			if (c->closing) {
				conn_end(c);
				return;
			}
			if (c->stream_more) {
				tl_away = false;
				if (c->task == TASK_PACED)
					pace_next(c);
				else if (c->task == TASK_STREAM)
					stream_next(c);
				else
					c->stream_more = false;
				if (tl_away) {
					tl_away = false;
					return;
				}
				continue;
			}
		}
		/* Over --max-queue, the peer reads before it may send more. */
		if (!c->closing && c->out.bytes <= srv->cfg.max_queue) {
			switch (intake(c)) {
			case INTAKE_CLOSED:
			case INTAKE_AWAY:
				return;
			case INTAKE_MORE:
				continue;
			case INTAKE_DRAINED:
				break;
			}
			if (c->failed || (c->out.bytes == 0 && (c->closing || c->stream_more)))
				continue;
		}
		if (atomic_load(&srv->stopping)) {
			enum stopped st = stop_now(c);
			if (st == STOP_GONE)
				return;
			if (st == STOP_AGAIN)
				continue;
		}
		if (conn_let_go(c))
			return;
	}
}

_Thread_local bool tl_away;
/* The connection this thread is handing to the store, until the store
 * takes it: a done that comes meanwhile, on this thread, leaves it here. */
static _Thread_local struct conn *tl_queueing;

void conn_to_store(struct conn *c, void (*queue)(struct conn *c))
{
	c->store_done = false;
	tl_queueing = c;
	queue(c);
	if (tl_queueing == c) {
		/* Not done yet: the store has c, and may already have handed it
		 * to another thread. */
		tl_queueing = NULL;
		tl_away = true;
	}
}

void conn_store_done(struct conn *c)
{
	if (c == tl_queueing) {
		tl_queueing = NULL;
		c->store_done = true;
		return;
	}
	struct server *srv = c->srv;
	pthread_mutex_lock(&srv->lock);
	c->store_done = true;
	pthread_mutex_unlock(&srv->lock);
	run_push(srv, c);
}

void conn_continue(struct conn *c)
{
	if (tl_run_later)
		run_push(c->srv, c);
	else
		conn_run(c);
}

void conn_event(struct server *srv, uint64_t tag)
{
	uint32_t index = (uint32_t)tag;
	uint32_t gen = (uint32_t)(tag >> 32);
	if (index >= srv->nslots)
		return;
	struct conn *c = &srv->slots[index];
	uint64_t st = atomic_load(&c->st);
	for (;;) {
		if (st_gen(st) != gen)
			return; /* closed since: the event is stale */
		switch (st_state(st)) {
		case CONN_FREE:
			return;
		case CONN_IDLE:
			if (!atomic_compare_exchange_weak(&c->st, &st, st_make(gen, CONN_BUSY)))
				continue;
			conn_run(c);
			return;
		case CONN_BUSY:
			/* Its owner looks again before it lets go. */
			if ((st & ST_MISSED) ||
			    atomic_compare_exchange_weak(&c->st, &st, st | ST_MISSED))
				return;
			continue;
		case CONN_HELD:
			break;
		}
		/* Held: the lock guards the list. */
		pthread_mutex_lock(&srv->lock);
		bool held = atomic_load(&c->st) == st_make(gen, CONN_HELD);
		if (held) {
			held_remove_locked(srv, c);
			set_state(c, CONN_BUSY);
		}
		pthread_mutex_unlock(&srv->lock);
		if (!held) {
			st = atomic_load(&c->st);
			continue;
		}
		conn_run(c);
		return;
	}
}

/* The address of a peer, for the log. */
static void peer_name(const struct sockaddr_storage *peer, char *name, size_t size)
{
	const void *addr = NULL;
	if (peer->ss_family == AF_INET)
		addr = &((const struct sockaddr_in *)(const void *)peer)->sin_addr;
	else if (peer->ss_family == AF_INET6)
		addr = &((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr;
	if (addr && !inet_ntop(peer->ss_family, addr, name, (socklen_t)size))
		snprintf(name, size, "?");
}

void accept_event(struct server *srv)
{
	for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
		pthread_mutex_lock(&srv->lock);
		bool full = srv->free_slots == NULL && srv->used == srv->nslots;
		if (full)
			srv->listen_paused = true; /* release_slot arms it again */
		pthread_mutex_unlock(&srv->lock);
		if (full) {
			log_msg(LOG_NOTICE, "all %u connection slots are taken", srv->nslots);
			return;
		}
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof peer;
		int fd = accept4(srv->cfg.listen_fd, (struct sockaddr *)&peer, &peer_len,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (atomic_load(&srv->stopping) || errno == EINVAL || errno == EBADF)
				return; /* the socket was taken away: stop accepting */
			log_msg(LOG_ERROR, "accept failed: %s", strerror(errno));
			/* Out of descriptors or memory: back off rather than spin. */
			struct timespec pause = {0, 100 * 1000 * 1000};
			nanosleep(&pause, NULL);
			break;
		}
		if (srv->cfg.allow &&
		    !allow_match(srv->cfg.allow, (struct sockaddr *)&peer, peer_len)) {
			char name[INET6_ADDRSTRLEN] = "?";
			peer_name(&peer, name, sizeof name);
			log_msg(LOG_NOTICE, "refused a connection from %s, not in --allow-from",
				name);
			metrics_conn_closed(METRICS_CLOSE_NOT_ALLOWED);
			if (close(fd) != 0)
				log_msg(LOG_DEBUG, "close: %s", strerror(errno));
			continue;
		}
		pthread_mutex_lock(&srv->lock);
		struct conn *c = srv->free_slots;
		if (c) {
			srv->free_slots = c->next;
		} else {
			c = &srv->slots[srv->used];
			c->index = srv->used++;
		}
		c->next = NULL;
		c->fd = fd;
		c->srv = srv;
		c->close_reason = -1;
		records_init(&c->rec);
		FCGX_InitRequest(&c->req, -1, 0);
		atomic_fetch_add(&srv->connections, 1);
		uint32_t gen = st_gen(atomic_load(&c->st));
		atomic_store(&c->st, st_make(gen, CONN_IDLE));
		struct epoll_event ev = {.events = events_of(false),
					 .data.u64 = (uint64_t)gen << 32 | c->index};
		if (epoll_ctl(srv->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			log_msg(LOG_ERROR, "cannot watch a connection: %s", strerror(errno));
			close(fd);
			c->fd = -1;
			release_slot(srv, c);
		}
		pthread_mutex_unlock(&srv->lock);
	}
	if (!atomic_load(&srv->stopping))
		arm_listener(srv);
}
