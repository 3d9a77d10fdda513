/* The thin libfcgi layer: threads that wait on one epoll set for connections
 * with a request to read, ask chat_respond and write the answer. */
#ifndef SERVER_H
#define SERVER_H

#include "chat.h"

#include <stdint.h>

struct server;

struct server_config {
	int listen_fd;
	unsigned threads;
	unsigned pollers;     /* threads taking requests at once; 0: half the CPUs, 2 at least */
	unsigned max_held;    /* long-polls held at once; more get CHAT_HOLD_FULL */
	unsigned max_streams; /* event streams open at once; more get CHAT_HOLD_FULL */
	struct chat_limits limits;
	/* Optional: reports a number that changes when another process wrote
	 * to the shared store, so held requests there are looked at again.
	 * Returns 0 on success. Called from one thread at a time. */
	int (*store_version)(void *ctx, uint64_t *version);
	/* Optional: 0 when the store works, else -1 with a sentence in why;
	 * GET /chat/health answers 503 with it. */
	int (*store_check)(void *ctx, char *why, size_t why_size);
	void *store_ctx;
};

/* Starts the threads; NULL with a log line on failure. */
struct server *server_start(const struct server_config *cfg);

/* Stops taking requests, answers held ones at once, closes idle kept
 * connections, lets requests in flight finish for up to grace_ms, then frees
 * what it can. Returns the number of requests served. */
unsigned long server_stop(struct server *srv, unsigned grace_ms);

#endif
