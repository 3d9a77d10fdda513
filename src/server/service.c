/*
 * GET /chat/health and GET /chat/metrics: about the server, not the chat,
 * so answered here rather than by the chat logic. Their routes are in the
 * table of routes.c like every other.
 */
#include "internal.h"

#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The Prometheus text exposition format, version 0.0.4. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static void set_body(struct chat_response *res, int status, const char *body, const char *reason)
{
	memset(res, 0, sizeof *res);
	chat_set_error(res, status, body, reason);
}

static void check_made(struct store_read *r)
{
	conn_store_done(r->ctx);
}

static void check_queue(struct conn *c)
{
	store_read_queue(c->srv->cfg.limits.store, c->check);
}

void check_start(struct conn *c)
{
	c->check = calloc(1, sizeof *c->check);
	if (!c->check) {
		health_answer(c, -1, "out of memory");
		return;
	}
	c->check->check = true;
	c->check->ctx = c;
	c->check->done = check_made;
	c->away = AWAY_CHECK;
	conn_to_store(c, check_queue);
}

void check_answer(struct conn *c)
{
	struct store_read *r = c->check;
	c->check = NULL;
	char why[sizeof r->check_why];
	snprintf(why, sizeof why, "%s", r->why ? r->why : "the store failed");
	int rc = r->result == STORE_OK ? 0 : -1;
	free(r);
	health_answer(c, rc, why);
}

void health_answer(struct conn *c, int rc, const char *why)
{
	struct chat_request creq;
	struct chat_response res;
	build_request(c, &creq);
	if (rc == 0) {
		set_body(&res, 200, "{\"status\":\"ok\"}", NULL);
	} else {
		memset(&res, 0, sizeof res);
		chat_set_escaped(&res, 503, "{\"status\":\"error\",\"error\":\"", why, "\"}",
				 "the store failed");
		res.retry_after = CHAT_RETRY_AFTER_S;
	}
	answer_request(c, &creq, &res);
}

void service_answer(struct conn *c, struct chat_request *creq)
{
	struct server *srv = c->srv;
	struct chat_response res;
	if (!chat_check_method(c->route, creq, &res)) {
		answer_request(c, creq, &res);
		return;
	}
	if (c->route == ROUTE_HEALTH) {
		if (!srv->cfg.store_check) {
			health_answer(c, 0, NULL);
			return;
		}
		/* A store on the network is asked by its own threads. */
		if (srv->cfg.limits.defer_reads) {
			check_start(c);
			return;
		}
		char why[256] = "";
		server_may_block();
		int rc = srv->cfg.store_check(srv->cfg.store_ctx, why, sizeof why);
		why[sizeof why - 1] = '\0';
		health_answer(c, rc, why);
		return;
	}
	/* Only nginx's metrics location marks a request so (conf/chat-fcgi.conf):
	 * to anyone else there is nothing here. */
	const char *marked = FCGX_GetParam("CHAT_METRICS", c->req.envp);
	if (!marked || strcmp(marked, "1") != 0) {
		memset(&res, 0, sizeof res);
		chat_set_error(&res, 404, "{\"error\":\"There is nothing here.\"}",
			       "metrics asked for without nginx's mark");
		answer_request(c, creq, &res);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	struct metrics_gauges g = {
	    .held = srv->nheld,
	    .streams = srv->nstreams,
	    .connections = atomic_load(&srv->connections),
	    .threads = srv->cfg.threads,
	    .posts_storing = srv->posting,
	    .queued_bytes = atomic_load(&srv->queued),
	};
	pthread_mutex_unlock(&srv->lock);
	size_t len;
	char *text = metrics_render(&g, &len);
	memset(&res, 0, sizeof res);
	if (!text) {
		chat_out_of_memory(&res, "out of memory");
	} else {
		res.status = 200;
		res.body = text;
		res.body_len = len;
		res.body_owned = true;
		res.content_type = METRICS_CONTENT_TYPE;
	}
	answer_request(c, creq, &res);
}
