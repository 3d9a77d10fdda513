/*
 * Answers: what the server does with a chat_response, by its kind.
 *
 * An answer becomes records on the connection's queue (output.c) and ends
 * the request. A hold, an open event stream and a paced reply become states
 * of the connection: conn_run lets it go with a deadline, and held.c asks
 * the chat logic again when its room changes or its time comes. Nothing
 * here waits.
 */
/* accept4 and memmem. */
#define _GNU_SOURCE
#include "internal.h"

#include "events.h"
#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rounds of asking again a request may take before it answers with what
 * it has: each follows a post made during its last query. */
#define HOLD_ROUNDS_MAX 100

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

static char *put_text(char *at, const char *text, size_t len)
{
	memcpy(at, text, len);
	return at + len;
}

#define PUT_LITERAL(at, lit) put_text((at), (lit), sizeof(lit) - 1)

static char *put_decimal(char *at, size_t v)
{
	char digits[24];
	size_t n = 0;
	do
		digits[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n)
		*at++ = digits[--n];
	return at;
}

/* The CGI head of res (RFC 3875, section 6.3) in head; its length, or 0
 * when it does not fit. Put together by hand: snprintf is a measurable part
 * of a small request's CPU. */
static size_t make_head(char *head, size_t size, const struct chat_response *res)
{
	const char *type = res->content_type ? res->content_type : CHAT_CONTENT_TYPE;
	const char *text = status_text(res->status);
	size_t type_len = strlen(type), text_len = strlen(text);
	size_t allow_len = res->allow ? strlen(res->allow) : 0;
	/* The fixed parts, a status, a length and a Retry-After of at most 20
	 * digits each. */
	if (type_len + text_len + allow_len + 192 > size || res->status < 100 || res->status > 999)
		return 0;
	char *at = PUT_LITERAL(head, "Status: ");
	at = put_decimal(at, (size_t)res->status);
	*at++ = ' ';
	at = put_text(at, text, text_len);
	at = PUT_LITERAL(at, "\r\nContent-Type: ");
	at = put_text(at, type, type_len);
	at = PUT_LITERAL(at, "\r\nContent-Length: ");
	at = put_decimal(at, res->body_len);
	at = PUT_LITERAL(at, "\r\nCache-Control: no-store\r\n");
	if (res->allow) {
		at = PUT_LITERAL(at, "Allow: ");
		at = put_text(at, res->allow, allow_len);
		at = PUT_LITERAL(at, "\r\n");
	}
	if (res->retry_after) {
		at = PUT_LITERAL(at, "Retry-After: ");
		at = put_decimal(at, res->retry_after);
		at = PUT_LITERAL(at, "\r\n");
	}
	at = PUT_LITERAL(at, "\r\n");
	return (size_t)(at - head);
}

static void log_request(struct conn *c, int status, const char *reason)
{
	enum log_level level = status == 200 ? LOG_DEBUG : LOG_NOTICE;
	if (!log_enabled(level))
		return;
	char method[16], uri[256], id[40];
	char **envp = c->have_params ? c->req.envp : NULL;
	log_clean(method, sizeof method, envp ? FCGX_GetParam("REQUEST_METHOD", envp) : NULL);
	log_clean(uri, sizeof uri, envp ? FCGX_GetParam("REQUEST_URI", envp) : NULL);
	log_clean(id, sizeof id, envp ? FCGX_GetParam("REQUEST_ID", envp) : NULL);
	/* The id is nginx's $request_id, in its access log too. */
	log_msg(level, "%d %s %s %.2f ms id=%s%s%s", status, method, uri, ms_since(&c->t0),
		id[0] ? id : "-", reason ? ": " : "", reason ? reason : "");
}

/* The request on c is answered (status): logged and counted. */
static void answered(struct conn *c, int status, const char *reason)
{
	log_request(c, status, reason);
	if (c->counted)
		metrics_request_done(c->route, status, (uint64_t)(ms_since(&c->t0) * 1000.0));
	c->counted = false;
	atomic_fetch_add(&c->srv->served, 1);
}

/* The room res added entries to ("" if none), kept past res. */
static void changed_room(const struct chat_response *res, char room[CHAT_ROOM_MAX + 1])
{
	memcpy(room, res->changed_room, CHAT_ROOM_MAX + 1);
	room[CHAT_ROOM_MAX] = '\0';
}

/* Sends res whole: head, body, end of the request. */
static void send_answer(struct conn *c, struct chat_response *res)
{
	char head[512];
	size_t n = make_head(head, sizeof head, res);
	if (n == 0) {
		chat_response_free(res);
		chat_out_of_memory(res, "an answer's head did not fit");
		n = make_head(head, sizeof head, res);
	}
	out_stdout(c, head, n, res->body, res->body_len, true);
	if (res->store_error)
		metrics_store_error();
	answered(c, res->status, res->reason);
	char room[CHAT_ROOM_MAX + 1];
	changed_room(res, room);
	chat_response_free(res);
	request_end(c);
	if (room[0])
		wake_room(c->srv, room);
}

/* The head of an event stream: no length, and nginx passes each part on at
 * once (X-Accel-Buffering: no turns its buffering off for the response). */
static size_t stream_head(char *head, size_t size, const char *content_type)
{
	int n = snprintf(head, size,
			 "Status: 200 OK\r\n"
			 "Content-Type: %s\r\n"
			 "Cache-Control: no-store\r\n"
			 "X-Accel-Buffering: no\r\n"
			 "\r\n",
			 content_type);
	return n < 0 || (size_t)n >= size ? 0 : (size_t)n;
}

/* A stream or paced reply is over: its last bytes, and the end. */
static void stream_done(struct conn *c, const char *body, size_t len, const char *reason)
{
	out_stdout(c, NULL, 0, body, len, true);
	answered(c, 200, reason);
	request_end(c);
}

/* A part of an open event stream, or the first, which opens it. */
static void stream_part(struct conn *c, struct chat_request *creq, struct chat_response *res)
{
	struct server *srv = c->srv;
	if (c->task != TASK_STREAM) {
		pthread_mutex_lock(&srv->lock);
		bool room = srv->nstreams < srv->cfg.max_streams && !atomic_load(&srv->stopping);
		if (room) {
			srv->nstreams++;
			c->task = TASK_STREAM;
		}
		pthread_mutex_unlock(&srv->lock);
		if (!room) {
			/* Full: answered at once, so the page polls instead. */
			chat_response_free(res);
			creq->hold_mode = CHAT_HOLD_FULL;
			chat_respond(creq, &srv->cfg.limits, res);
			if (res->kind != CHAT_ANSWER) {
				chat_response_free(res);
				chat_out_of_memory(res, "a stream did not take no for an answer");
			}
			send_answer(c, res);
			return;
		}
		log_msg(LOG_DEBUG, "an event stream opened");
		char head[256];
		size_t n = stream_head(head, sizeof head, res->content_type);
		out_stdout(c, head, n, res->body, res->body_len, false);
	} else if (res->body_len > 0) {
		out_stdout(c, NULL, 0, res->body, res->body_len, false);
	}
	if (res->store_error)
		metrics_store_error();
	c->stream_after = res->stream_next;
	memcpy(c->room, res->hold.room, sizeof c->room);
	c->room[sizeof c->room - 1] = '\0';
	/* Silence is measured from the last bytes sent. */
	if (res->body_len > 0 || !c->hold_until)
		c->hold_until = now_ms() + res->hold.ms;
	/* A backlog, or a post that came in during the query: the next part
	 * as soon as this one is written. */
	c->stream_more = res->hold.ms == 0 || c->seen_change != atomic_load(&srv->changes);
	c->was_held = true;
	chat_response_free(res);
}

/* A streamed reply sent one event at a time, pace_ms apart. */
static void pace_start(struct conn *c, struct chat_response *res)
{
	char head[256];
	size_t n = stream_head(head, sizeof head, res->content_type);
	if (res->body_owned) {
		c->pending = res->body;
		res->body_owned = false;
	} else if ((c->pending = malloc(res->body_len ? res->body_len : 1)) != NULL) {
		memcpy(c->pending, res->body, res->body_len);
	}
	if (!c->pending) {
		/* No copy: send it whole rather than not at all. */
		out_stdout(c, head, n, res->body, res->body_len, true);
		answered(c, 200, NULL);
		chat_response_free(res);
		request_end(c);
		return;
	}
	out_stdout(c, head, n, NULL, 0, false);
	c->task = TASK_PACED;
	c->pending_len = res->body_len;
	c->pending_at = 0;
	c->pace_ms = res->pace_ms;
	c->room[0] = '\0'; /* no room's change concerns it */
	char changed[CHAT_ROOM_MAX + 1];
	changed_room(res, changed);
	chat_response_free(res);
	pace_next(c);
	/* The post's entries are stored: others hear of them now, not once
	 * its reply has been paced out. */
	if (changed[0])
		wake_room(c->srv, changed);
}

void pace_next(struct conn *c)
{
	c->stream_more = false;
	bool stopping = atomic_load(&c->srv->stopping);
	size_t left = c->pending_len - c->pending_at;
	const char *part = c->pending + c->pending_at;
	const char *end = stopping ? NULL : memmem(part, left, "\n\n", 2);
	size_t n = end ? (size_t)(end - part) + 2 : left;
	c->pending_at += n;
	if (c->pending_at == c->pending_len) {
		stream_done(c, part, n, NULL);
		return;
	}
	out_stdout(c, NULL, 0, part, n, false);
	c->hold_until = now_ms() + c->pace_ms;
}

void ask_again(struct conn *c, enum chat_hold_mode mode)
{
	struct chat_request creq;
	struct chat_response res;
	request_asked(c, &creq, mode);
	c->seen_change = atomic_load(&c->srv->changes);
	chat_respond(&creq, &c->srv->cfg.limits, &res);
	answer_request(c, &creq, &res);
}

void stream_next(struct conn *c)
{
	c->stream_more = false;
	if (atomic_load(&c->srv->stopping)) {
		/* A clean end: the browser reconnects, to another node or to
		 * this one once it is back. */
		stream_done(c, NULL, 0, NULL);
		return;
	}
	ask_again(c, CHAT_HOLD_ALLOWED);
}

/* A request that may wait: held (its connection let go into the held list
 * by conn_run), or asked again with a mode that makes it answer now. A few
 * rounds at most: it holds, or answers FULL/OVER, or sees a change that
 * came in during its own query (and its read may be made by the store
 * meanwhile, so the rounds are counted on the connection). */
static void hold_or_ask_again(struct conn *c, struct chat_request *creq, struct chat_response *res)
{
	struct server *srv = c->srv;
	for (; res->kind == CHAT_HOLD; c->rounds++) {
		enum chat_hold_mode mode = CHAT_HOLD_OVER;
		pthread_mutex_lock(&srv->lock);
		uint64_t now = now_ms();
		/* A second hold keeps the first deadline. */
		if (!c->was_held || now + res->hold.ms < c->hold_until)
			c->hold_until = now + res->hold.ms;
		if (res->hold.ms == 0 || c->rounds > HOLD_ROUNDS_MAX ||
		    atomic_load(&srv->stopping) || now >= c->hold_until) {
			mode = CHAT_HOLD_OVER;
		} else if (c->seen_change != atomic_load(&srv->changes)) {
			mode = CHAT_HOLD_ALLOWED; /* something changed meanwhile */
		} else if (c->task != TASK_POLL && srv->nheld >= srv->cfg.max_held) {
			mode = CHAT_HOLD_FULL;
		} else {
			if (c->task != TASK_POLL) {
				srv->nheld++;
				c->task = TASK_POLL;
			}
			memcpy(c->room, res->hold.room, sizeof c->room);
			c->room[sizeof c->room - 1] = '\0';
			c->was_held = true;
			pthread_mutex_unlock(&srv->lock);
			chat_response_free(res);
			return;
		}
		c->seen_change = atomic_load(&srv->changes);
		pthread_mutex_unlock(&srv->lock);
		chat_response_free(res);
		creq->hold_mode = mode;
		chat_respond(creq, &srv->cfg.limits, res);
		if (res->kind == CHAT_HOLD && mode != CHAT_HOLD_ALLOWED) {
			chat_response_free(res);
			chat_out_of_memory(res, "the request logic held a request told to answer");
		}
	}
	answer_request(c, creq, res);
}

void answer_request(struct conn *c, struct chat_request *creq, struct chat_response *res)
{
	switch (res->kind) {
	case CHAT_HOLD:
		hold_or_ask_again(c, creq, res);
		return;
	case CHAT_STREAM:
		stream_part(c, creq, res);
		return;
	case CHAT_PACED:
		pace_start(c, res);
		return;
	case CHAT_READ:
		read_start(c, res);
		return;
	case CHAT_POST:
		/* Only a request read now posts (intake.c); never a held one. */
		chat_response_free(res);
		chat_out_of_memory(res, "a held request asked to post");
		break;
	case CHAT_ANSWER:
		break;
	}
	if (c->task == TASK_STREAM) {
		/* Mid-stream there is no status to give: the stream ends, and the
		 * browser reconnects. */
		bool ok = res->status == 200;
		const char *why = res->reason ? res->reason : ok ? NULL : "the stream failed";
		if (res->store_error)
			metrics_store_error();
		stream_done(c, ok ? res->body : NULL, ok ? res->body_len : 0, why);
		chat_response_free(res);
		return;
	}
	send_answer(c, res);
}
