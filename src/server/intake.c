/*
 * Request intake: from the bytes a connection sends to a request the chat
 * logic can answer.
 *
 * One recv takes what has come; the record reader (records.c) walks it;
 * the parameters are kept until they are whole and then read by libfcgi
 * (params.c), the head is judged, and the body is kept (or dropped, for a
 * refused head) until its end. Only then is the request served. A request
 * still arriving waits as its connection's state, with a deadline for its
 * head and another for its body (--receive-timeout), never in a thread.
 */
#include "internal.h"

#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <fastcgi.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* The most one recv takes: a 64 KiB message with its record headers comes
 * in one. Smaller requests touch only what they need of it. */
#define TAKE_MAX ((size_t)72 * 1024)
/* A connection keeps a parameter buffer this small between requests; a
 * larger one is given back. */
#define PARAMS_KEEP ((size_t)4 * 1024)

static _Thread_local unsigned char *tl_take;

/* The parameters a request is made of. */
enum param {
	P_URI,
	P_METHOD,
	P_QUERY,
	P_CONTENT_TYPE,
	P_CONTENT_LENGTH,
	P_ORIGIN,
	P_SEC_FETCH_SITE,
	P_HOST,
	P_SCHEME,
	P_ACCEPT,
	P_LAST_EVENT_ID,
	P_COUNT
};

#define NAME(s)                                                                                    \
	{                                                                                          \
		s, sizeof(s) - 1                                                                   \
	}
static const struct {
	const char *name;
	size_t len;
} param_names[P_COUNT] = {
    [P_URI] = NAME("REQUEST_URI"),
    [P_METHOD] = NAME("REQUEST_METHOD"),
    [P_QUERY] = NAME("QUERY_STRING"),
    [P_CONTENT_TYPE] = NAME("CONTENT_TYPE"),
    [P_CONTENT_LENGTH] = NAME("CONTENT_LENGTH"),
    [P_ORIGIN] = NAME("HTTP_ORIGIN"),
    [P_SEC_FETCH_SITE] = NAME("HTTP_SEC_FETCH_SITE"),
    [P_HOST] = NAME("HTTP_HOST"),
    [P_SCHEME] = NAME("REQUEST_SCHEME"),
    [P_ACCEPT] = NAME("HTTP_ACCEPT"),
    [P_LAST_EVENT_ID] = NAME("HTTP_LAST_EVENT_ID"),
};
#undef NAME
/* Every name above is shorter than this. */
#define PARAM_NAME_MAX 32

/* Bit i of param_by_len[n]: param_names[i] is n bytes long. Filled by
 * intake_init, before any thread reads it. */
static uint32_t param_by_len[PARAM_NAME_MAX];

void intake_thread_end(void)
{
	free(tl_take);
	tl_take = NULL;
}

void intake_init(void)
{
	_Static_assert(P_COUNT <= 32, "param_by_len holds a bit per name");
	memset(param_by_len, 0, sizeof param_by_len);
	for (unsigned i = 0; i < P_COUNT; i++)
		param_by_len[param_names[i].len] |= 1u << i;
}

/* Finds them all in one pass over envp: FCGX_GetParam scans every
 * parameter nginx sends for each name. A parameter is looked up by the
 * length of its name, which few of ours share, so most are passed over
 * after one strchr. The first of a name wins, as with FCGX_GetParam. */
static void find_params(char **envp, const char *found[P_COUNT])
{
	for (size_t i = 0; i < P_COUNT; i++)
		found[i] = NULL;
	for (char **e = envp; e && *e; e++) {
		const char *p = *e;
		const char *eq = strchr(p, '=');
		size_t n = eq ? (size_t)(eq - p) : 0;
		if (n >= PARAM_NAME_MAX)
			continue;
		for (uint32_t m = param_by_len[n]; m; m &= m - 1) {
			unsigned i = (unsigned)__builtin_ctz(m);
			if (!found[i] && memcmp(p, param_names[i].name, n) == 0) {
				found[i] = eq + 1;
				break;
			}
		}
	}
}

/* Finds the request's parameters once, when they are whole. */
static void find_request(struct conn *c)
{
	const char *p[P_COUNT];
	find_params(c->req.envp, p);
	/* The path is REQUEST_URI without its query: nginx may have rewritten
	 * DOCUMENT_URI to the index file. */
	const char *uri = p[P_URI];
	const char *path = NULL;
	if (uri) {
		size_t n = strcspn(uri, "?");
		if (n < sizeof c->path) {
			memcpy(c->path, uri, n);
			c->path[n] = '\0';
			path = c->path;
		} else {
			path = ""; /* longer than any path served here */
		}
	}
	c->asked = (struct chat_request){
	    .method = p[P_METHOD],
	    .path = path,
	    .query = p[P_QUERY],
	    .content_type = p[P_CONTENT_TYPE],
	    .content_length = p[P_CONTENT_LENGTH],
	    .origin = p[P_ORIGIN],
	    .sec_fetch_site = p[P_SEC_FETCH_SITE],
	    .host = p[P_HOST],
	    .scheme = p[P_SCHEME],
	    .accept = p[P_ACCEPT],
	    .last_event_id = p[P_LAST_EVENT_ID],
	};
}

void build_request(struct conn *c, struct chat_request *creq)
{
	if (c->have_params)
		*creq = c->asked;
	else
		*creq = (struct chat_request){.method = NULL};
	creq->body = c->body;
	creq->body_len = c->body_len;
}

void request_asked(struct conn *c, struct chat_request *creq, enum chat_hold_mode mode)
{
	build_request(c, creq);
	creq->hold_mode = mode;
	creq->stream_open = c->task == TASK_STREAM;
	creq->stream_after = c->stream_after;
}

void request_end(struct conn *c)
{
	struct server *srv = c->srv;
	if (c->task == TASK_STREAM || c->task == TASK_POLL) {
		pthread_mutex_lock(&srv->lock);
		if (c->task == TASK_STREAM)
			srv->nstreams--;
		else
			srv->nheld--;
		pthread_mutex_unlock(&srv->lock);
	}
	if (c->counted) {
		/* Ended with no answer sent: the peer went away or aborted. */
		metrics_request_done(c->route, 499, (uint64_t)(ms_since(&c->t0) * 1000.0));
		c->counted = false;
	}
	free(c->pending);
	c->pending = NULL;
	free(c->body);
	c->body = NULL;
	c->body_len = c->body_cap = c->announced = 0;
	if (c->params_cap > PARAMS_KEEP) {
		free(c->params);
		c->params = NULL;
		c->params_cap = 0;
	}
	c->params_len = 0;
	if (c->have_params) {
		params_free(&c->req);
		c->have_params = false;
	}
	c->task = TASK_NONE;
	c->discard = c->was_held = c->stream_more = c->stale = false;
	c->rounds = 0;
	c->receive_by = c->hold_until = 0;
	c->room[0] = '\0';
	records_request_done(&c->rec);
	if (!c->keep_conn || atomic_load(&srv->stopping))
		c->closing = true;
}

/* BEGIN_REQUEST: the head has until --receive-timeout from now. */
static void request_begin(struct conn *c, const struct records_found *f)
{
	clock_gettime(CLOCK_MONOTONIC, &c->t0);
	c->task = TASK_RECEIVING;
	c->request_id = f->id;
	c->keep_conn = f->keep_conn;
	c->params_len = 0;
	c->receive_by = (uint64_t)c->t0.tv_sec * 1000u + (uint64_t)c->t0.tv_nsec / 1000000u +
			c->srv->cfg.receive_timeout_ms;
}

static bool params_add(struct conn *c, const unsigned char *data, size_t len)
{
	/* The record reader bounds the whole at RECORDS_PARAMS_MAX. */
	if (c->params_cap - c->params_len < len) {
		size_t cap = c->params_cap ? c->params_cap : 1024;
		while (cap - c->params_len < len)
			cap *= 2;
		unsigned char *grown = realloc(c->params, cap);
		if (!grown)
			return false;
		c->params = grown;
		c->params_cap = cap;
	}
	memcpy(c->params + c->params_len, data, len);
	c->params_len += len;
	return true;
}

static bool is_service(enum route_id route)
{
	return route != ROUTE_OTHER && routes[route].respond == NULL;
}

/* The parameters are whole: libfcgi reads them, the head is judged, and
 * the body has until --receive-timeout from now. False when memory ran
 * out. */
static bool head_done(struct conn *c)
{
	if (params_parse(&c->req, c->params, c->params_len) != 0)
		return false;
	c->have_params = true;
	find_request(c);
	struct chat_request creq;
	struct chat_response res;
	build_request(c, &creq);
	c->route = route_of(creq.path);
	metrics_request_started();
	c->counted = true;
	size_t announced = 0;
	if (is_service(c->route)) {
		/* Health and metrics take no body. */
		c->discard = true;
	} else {
		c->discard = chat_check_head(&creq, &c->srv->cfg.limits, &res, &announced) ==
			     CHAT_HEAD_REJECTED;
		if (c->discard)
			chat_response_free(&res);
	}
	c->announced = announced;
	c->receive_by = now_ms() + c->srv->cfg.receive_timeout_ms;
	return true;
}

/* Keeps a piece of the body: up to one byte past --max-body, which tells a
 * body over the limit (chat_respond answers 413) from one at it. False
 * when memory ran out. */
static bool body_add(struct conn *c, const unsigned char *data, size_t len)
{
	size_t limit = c->srv->cfg.limits.max_body + 1;
	if (c->discard || c->body_len >= limit)
		return true;
	if (len > limit - c->body_len)
		len = limit - c->body_len;
	if (c->body_cap - c->body_len < len) {
		size_t cap = c->body_cap ? c->body_cap * 2 : c->announced ? c->announced + 1 : 1024;
		while (cap - c->body_len < len)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		char *grown = realloc(c->body, cap);
		if (!grown)
			return false;
		c->body = grown;
		c->body_cap = cap;
	}
	memcpy(c->body + c->body_len, data, len);
	c->body_len += len;
	return true;
}

/* The request is whole: the chat logic answers it. */
static void serve(struct conn *c)
{
	struct server *srv = c->srv;
	struct chat_request creq;
	struct chat_response res;
	c->receive_by = 0;
	c->task = TASK_NONE;
	c->seen_change = atomic_load(&srv->changes);
	build_request(c, &creq);
	if (is_service(c->route)) {
		service_answer(c, &creq);
		return;
	}
	/* Reading a large message is long work: off the pollers' place. */
	if (c->body_len > BIG_BODY)
		server_may_block();
	chat_respond(&creq, &srv->cfg.limits, &res);
	if (res.kind == CHAT_POST) {
		struct chat_post *post = res.post;
		res.post = NULL;
		post_start(c, &creq, post);
		return;
	}
	answer_request(c, &creq, &res);
}

/* FCGI_ABORT_REQUEST (section 5.4): the request ends, with whatever of
 * its answer went out, and FCGI_END_REQUEST. */
static void request_abort(struct conn *c)
{
	bool answering = c->task == TASK_STREAM || c->task == TASK_PACED;
	log_msg(LOG_DEBUG, "a request was aborted by the web server");
	out_end_request(c, c->request_id, FCGI_REQUEST_COMPLETE, answering);
	request_end(c);
}

/* The rest of a take, after a request that came whole: walked once that
 * request is answered. */
static bool keep_unread(struct conn *c, const unsigned char *rest, size_t n, bool from_unread)
{
	if (from_unread) {
		c->unread_at = c->unread_len - n;
		return true;
	}
	unsigned char *copy = malloc(n);
	if (!copy)
		return false;
	memcpy(copy, rest, n);
	c->unread = copy;
	c->unread_len = n;
	c->unread_at = 0;
	return true;
}

static void unread_done(struct conn *c)
{
	free(c->unread);
	c->unread = NULL;
	c->unread_len = c->unread_at = 0;
}

/* The peer closed its end, or the connection broke. */
static enum intake peer_gone(struct conn *c)
{
	if (c->task == TASK_RECEIVING && c->have_params) {
		char uri[256];
		log_clean(uri, sizeof uri, FCGX_GetParam("REQUEST_URI", c->req.envp));
		log_msg(LOG_NOTICE, "client went away mid-body (%zu bytes announced) on %s",
			c->announced, uri);
	} else if (c->task == TASK_POLL || c->task == TASK_STREAM || c->task == TASK_PACED) {
		log_msg(LOG_DEBUG, "a held request was given up by nginx");
	}
	conn_close(c, NULL);
	return INTAKE_CLOSED;
}

enum intake intake(struct conn *c)
{
	const unsigned char *buf;
	size_t n;
	bool from_unread = c->unread != NULL;
	enum intake result = INTAKE_DRAINED;
	if (from_unread) {
		buf = c->unread + c->unread_at;
		n = c->unread_len - c->unread_at;
		result = INTAKE_MORE; /* the socket has not been read yet */
	} else {
		if (!tl_take && !(tl_take = malloc(TAKE_MAX))) {
			conn_close(c, "out of memory to read a request");
			return INTAKE_CLOSED;
		}
		ssize_t got = recv(c->fd, tl_take, TAKE_MAX, MSG_DONTWAIT);
		if (got < 0 && errno == EINTR)
			return INTAKE_MORE;
		if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return INTAKE_DRAINED;
		if (got <= 0)
			return peer_gone(c);
		buf = tl_take;
		n = (size_t)got;
		/* A full take: more may be waiting. A short one emptied the
		 * socket, and anything after it comes with an event. */
		if (n == TAKE_MAX)
			result = INTAKE_MORE;
	}

	size_t at = 0;
	while (at < n && !c->failed && !c->closing) {
		size_t used;
		struct records_found f;
		enum records_event ev = records_read(&c->rec, buf + at, n - at, &used, &f);
		at += used;
		switch (ev) {
		case RECORDS_MORE:
			break;
		case RECORDS_BEGIN:
			request_begin(c, &f);
			break;
		case RECORDS_PARAMS:
			if (!params_add(c, f.data, f.len)) {
				conn_close(c, "out of memory for a request's parameters");
				return INTAKE_CLOSED;
			}
			break;
		case RECORDS_PARAMS_END:
			if (!head_done(c)) {
				conn_close(c, "libfcgi could not read a request's parameters");
				return INTAKE_CLOSED;
			}
			break;
		case RECORDS_STDIN:
			if (!body_add(c, f.data, f.len)) {
				conn_close(c, "out of memory for a request's body");
				return INTAKE_CLOSED;
			}
			break;
		case RECORDS_STDIN_END:
			if (at < n) {
				if (!keep_unread(c, buf + at, n - at, from_unread)) {
					conn_close(c, "out of memory for what follows a request");
					return INTAKE_CLOSED;
				}
				result = INTAKE_MORE;
			} else if (from_unread) {
				unread_done(c);
			}
			tl_away = false;
			serve(c);
			if (tl_away) {
				tl_away = false;
				return INTAKE_AWAY; /* the store has c */
			}
			/* Work the store did at once is answered by conn_run. */
			return c->away != AWAY_NONE ? INTAKE_MORE : result;
		case RECORDS_ABORT:
			request_abort(c);
			break;
		case RECORDS_GET_VALUES:
			out_get_values(c, f.asked);
			break;
		case RECORDS_UNKNOWN_TYPE:
			out_unknown_type(c, f.type);
			break;
		case RECORDS_UNKNOWN_ROLE:
			/* Section 5.5: only the responder role is played here. */
			out_end_request(c, f.id, FCGI_UNKNOWN_ROLE, false);
			conn_close_after(c, "it asked for a role other than responder", -1);
			break;
		case RECORDS_CANT_MPX:
			/* Section 5.5; the rule: the connection closes too,
			 * since the records of the refused request would follow. */
			out_end_request(c, f.id, FCGI_CANT_MPX_CONN, false);
			conn_close_after(c, "a second request while one was in progress",
					 METRICS_CLOSE_PROTOCOL);
			break;
		case RECORDS_BROKEN:
			conn_close_for(c, f.why, METRICS_CLOSE_PROTOCOL);
			return INTAKE_CLOSED;
		}
	}
	if (from_unread && (at == n || c->closing))
		unread_done(c);
	else if (from_unread)
		c->unread_at += at;
	return result;
}
