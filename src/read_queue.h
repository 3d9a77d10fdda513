/*
 * Reads waiting for a store's own threads (store_read_queue): a fixed
 * number of threads take them oldest first, one at a time each, make them
 * with the store's read function and call their done. A store whose reads
 * wait on a network uses it, so that the server's threads never wait on
 * that network themselves. How a read is made, and what a store is, are
 * the store's: this file knows only struct store_read.
 */
#ifndef READ_QUEUE_H
#define READ_QUEUE_H

#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* Makes r (a read, or with r->check, a check) and sets its results; the
 * queue then calls r->done on the same thread. */
typedef void (*read_queue_fn)(void *ctx, struct store_read *r);

struct read_queue {
	read_queue_fn read;
	void *ctx;
	pthread_t *thread;
	size_t threads; /* started */
	pthread_mutex_t lock;
	pthread_cond_t due;
	struct store_read *head, **tail; /* under lock */
	size_t waiting;                  /* under lock: queued, not yet taken */
	size_t asleep, woken;            /* under lock: see read_queue_push */
	bool stop;                       /* under lock */
};

/* Starts q's threads (at least one), which make the reads pushed with
 * read(ctx, r). Returns 0, or -1 when they cannot all be made (none are
 * left running then). */
int read_queue_start(struct read_queue *q, size_t threads, read_queue_fn read, void *ctx);

/*
 * Queues r, its results cleared, to be made and then done on one of q's
 * threads. Returns false, without queueing it, when STORE_READS_QUEUED
 * wait already: r is the caller's again, to fail. A read pushed once q is
 * stopping is done at once, on the caller's thread, as closing.
 */
bool read_queue_push(struct read_queue *q, struct store_read *r);

/* Ends q's threads once the reads being made are done; reads still queued
 * are done with STORE_FAILED ("store: closing"), never left waiting.
 * Nothing when q was never started. */
void read_queue_stop(struct read_queue *q);

#endif
