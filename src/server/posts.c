/*
 * Posts waiting for the store: parked connections, not parked threads.
 *
 * A post to a room is queued for the store's own thread, which writes the
 * posts that queue meanwhile in one transaction; the connection waits as
 * AWAY_POST with no thread on it, the store's thread hands it to the run
 * queue once committed, and a poller answers it. At most --max-posts wait
 * at once, which bounds the memory the queue holds (each post keeps a copy
 * of its text) when the store is slow; past that a post is refused with
 * 503 and Retry-After, before anything is stored.
 */
#include "internal.h"

#include "metrics.h"

#include <string.h>

#define POSTS_FULL_BODY                                                                            \
	"{\"error\":\"Too many posts are waiting to be stored; try again in a moment.\"}"

/* Called on the store's thread: hands c to the pollers. */
static void post_stored(void *cookie)
{
	struct conn *c = cookie;
	struct server *srv = c->srv;
	pthread_mutex_lock(&srv->lock);
	srv->posting--;
	pthread_mutex_unlock(&srv->lock);
	conn_store_done(c);
}

static void queue_post(struct conn *c)
{
	chat_post_queue(&c->srv->cfg.limits, c->post, post_stored, c);
}

void post_start(struct conn *c, struct chat_request *creq, struct chat_post *post)
{
	struct server *srv = c->srv;
	pthread_mutex_lock(&srv->lock);
	bool room = srv->posting < srv->cfg.max_posts;
	if (room)
		srv->posting++;
	pthread_mutex_unlock(&srv->lock);
	if (!room) {
		chat_post_free(post);
		metrics_post_refused();
		struct chat_response res;
		memset(&res, 0, sizeof res);
		chat_set_error(&res, 503, POSTS_FULL_BODY, "--max-posts posts wait for the store");
		res.retry_after = 1;
		answer_request(c, creq, &res);
		return;
	}
	c->post = post;
	c->away = AWAY_POST;
	conn_to_store(c, queue_post);
}

void post_answer(struct conn *c)
{
	struct chat_request creq;
	struct chat_response res;
	build_request(c, &creq);
	struct chat_post *post = c->post;
	c->post = NULL;
	chat_post_finish(&creq, &c->srv->cfg.limits, post, &res);
	answer_request(c, &creq, &res);
}
