/*
 * Posts waiting for a store's own thread, which writes them in batches:
 * everything queued (up to batch_max) in one transaction, then the next
 * lot. A commit costs about the same for one post as for many, so the
 * posts that queue while a batch is written share the next one. Both
 * stores use it; how a batch is written is theirs.
 */
#ifndef POST_QUEUE_H
#define POST_QUEUE_H

#include "store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* Writes the n posts of batch (linked by next, the last's NULL) and sets
 * each one's results; the queue then calls each one's done. */
typedef void (*post_batch_fn)(void *ctx, struct store_post *batch, size_t n);

struct post_queue {
	post_batch_fn write;
	void *ctx;
	size_t batch_max;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t due;
	struct store_post *head, **tail; /* under lock */
	bool idle, stop;                 /* under lock */
};

/* Starts q's thread, which writes batches of at most batch_max posts with
 * write(ctx, ...). Returns 0, or -1 when the thread cannot be made. */
int post_queue_start(struct post_queue *q, size_t batch_max, post_batch_fn write, void *ctx);

/* Queues p, to be written and then done (store_post_queue). */
void post_queue_push(struct post_queue *q, struct store_post *p);

/* Writes what is still queued, then ends the thread; nothing when q was
 * never started. */
void post_queue_stop(struct post_queue *q);

#endif
