/* The thin libfcgi layer: worker threads that accept FastCGI requests, read
 * them, ask chat_respond and write the answer. */
#ifndef SERVER_H
#define SERVER_H

#include "chat.h"

struct server;

struct server_config {
	int listen_fd;
	unsigned threads;
	struct chat_limits limits;
};

/* Starts the workers; NULL with a log line on failure. */
struct server *server_start(const struct server_config *cfg);

/* Stops accepting, lets requests in flight finish for up to grace_ms, then
 * frees what it can. Returns the number of requests served. */
unsigned long server_stop(struct server *srv, unsigned grace_ms);

#endif
