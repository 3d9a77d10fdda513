#include "post_queue.h"

static void *queue_loop(void *arg)
{
	struct post_queue *q = arg;
	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->head && !q->stop) {
			q->idle = true;
			pthread_cond_wait(&q->due, &q->lock);
		}
		q->idle = false;
		struct store_post *batch = q->head;
		if (!batch)
			break; /* stopping, and everything queued is written */
		struct store_post **end = &batch->next;
		size_t n = 1;
		while (*end && n < q->batch_max) {
			end = &(*end)->next;
			n++;
		}
		q->head = *end;
		if (!q->head)
			q->tail = &q->head;
		*end = NULL;
		pthread_mutex_unlock(&q->lock);
		q->write(q->ctx, batch, n);
		while (batch) {
			/* Once done, a post may be freed. */
			struct store_post *next = batch->next;
			batch->done(batch);
			batch = next;
		}
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int post_queue_start(struct post_queue *q, size_t batch_max, post_batch_fn write, void *ctx)
{
	*q = (struct post_queue){.write = write, .ctx = ctx, .batch_max = batch_max};
	q->tail = &q->head;
	if (pthread_mutex_init(&q->lock, NULL) != 0)
		return -1;
	if (pthread_cond_init(&q->due, NULL) != 0) {
		pthread_mutex_destroy(&q->lock);
		return -1;
	}
	if (pthread_create(&q->thread, NULL, queue_loop, q) != 0) {
		pthread_cond_destroy(&q->due);
		pthread_mutex_destroy(&q->lock);
		return -1;
	}
	q->started = true;
	return 0;
}

void post_queue_push(struct post_queue *q, struct store_post *p)
{
	p->result = STORE_OK;
	p->answer = NULL;
	p->answer_len = 0;
	p->replayed = false;
	p->why = NULL;
	p->next = NULL;
	pthread_mutex_lock(&q->lock);
	*q->tail = p;
	q->tail = &p->next;
	/* Signalled only when asleep: one wake-up per batch, not per post. */
	bool wake = q->idle;
	q->idle = false;
	pthread_mutex_unlock(&q->lock);
	if (wake)
		pthread_cond_signal(&q->due);
}

void post_queue_stop(struct post_queue *q)
{
	if (!q->started)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_signal(&q->due);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->thread, NULL);
	pthread_cond_destroy(&q->due);
	pthread_mutex_destroy(&q->lock);
	q->started = false;
}
