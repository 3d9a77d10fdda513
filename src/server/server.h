/* The FastCGI server: threads that take connections with work to do from
 * one epoll set, read their records, ask the chat logic and queue the
 * answers. src/server/loop.c explains the model. */
#ifndef SERVER_H
#define SERVER_H

#include "allow.h"
#include "chat.h"
#include "params.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

struct server;

struct server_config {
	int listen_fd;
	unsigned threads;
	unsigned pollers;         /* threads taking events at once; 0: half the CPUs, 1 below 4 */
	unsigned max_held;        /* long-polls held at once; more get CHAT_HOLD_FULL */
	unsigned max_streams;     /* event streams open at once; more get CHAT_HOLD_FULL */
	unsigned max_posts;       /* posts at the store at once; more get 503 */
	size_t max_queue;         /* unsent bytes a connection may hold before more is added */
	unsigned send_timeout_ms; /* unsent bytes with no progress this long: closed */
	unsigned receive_timeout_ms;    /* a request's head, then its body, within this */
	const struct allow_list *allow; /* TCP peers accepted; NULL: all */
	struct chat_limits limits;
	/* Optional: reports a number that changes when another process wrote
	 * to the shared store, so held requests there are looked at again.
	 * Returns 0 on success. Called from one thread at a time. */
	int (*store_version)(void *ctx, uint64_t *version);
	/* Optional: once the version moved, the rooms other processes posted
	 * to (or all), so that only their waiters are asked again. */
	void (*store_rooms)(void *ctx, struct store_changes *out);
	/* Optional: 0 when the store works, else -1 with a sentence in why;
	 * GET /chat/health answers 503 with it. */
	int (*store_check)(void *ctx, char *why, size_t why_size);
	void *store_ctx;
};

/* Starts the threads; NULL with a log line on failure. */
struct server *server_start(const struct server_config *cfg);

/* Stops taking requests, answers held ones at once, closes idle kept
 * connections, lets requests in flight finish and their answers drain for up
 * to grace_ms, then frees what it can. Returns the number of requests
 * served. */
unsigned long server_stop(struct server *srv, unsigned grace_ms);

#endif
