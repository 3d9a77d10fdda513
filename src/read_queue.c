/* The read queue of read_queue.h: its threads, and how reads are handed to
 * them. It knows struct store_read and nothing of any store. */
#include "read_queue.h"

#include <stdlib.h>

static const char closing[] = "store: closing";

static void *read_loop(void *arg)
{
	struct read_queue *q = arg;
	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->head && !q->stop) {
			q->asleep++;
			pthread_cond_wait(&q->due, &q->lock);
			q->asleep--;
			/* Taken as a push's wake even when it was spurious: at
			 * worst a later push wakes a thread it need not. */
			if (q->woken > 0)
				q->woken--;
		}
		struct store_read *r = q->head;
		if (!r)
			break; /* stopping, and nothing is left queued */
		q->head = r->next;
		if (!q->head)
			q->tail = &q->head;
		q->waiting--;
		bool stopping = q->stop;
		pthread_mutex_unlock(&q->lock);
		r->next = NULL;
		if (stopping) {
			r->result = STORE_FAILED;
			r->why = closing;
		} else {
			q->read(q->ctx, r);
		}
		r->done(r); /* once done, r may be freed */
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int read_queue_start(struct read_queue *q, size_t threads, read_queue_fn read, void *ctx)
{
	*q = (struct read_queue){.read = read, .ctx = ctx};
	q->tail = &q->head;
	if (threads == 0)
		return -1;
	pthread_t *thread = calloc(threads, sizeof *thread);
	if (!thread)
		return -1;
	if (pthread_mutex_init(&q->lock, NULL) != 0) {
		free(thread);
		return -1;
	}
	if (pthread_cond_init(&q->due, NULL) != 0) {
		pthread_mutex_destroy(&q->lock);
		free(thread);
		return -1;
	}
	/* From here on read_queue_stop undoes it all. */
	q->thread = thread;
	for (; q->threads < threads; q->threads++) {
		if (pthread_create(&q->thread[q->threads], NULL, read_loop, q) != 0) {
			read_queue_stop(q);
			return -1;
		}
	}
	return 0;
}

bool read_queue_push(struct read_queue *q, struct store_read *r)
{
	r->result = STORE_OK;
	r->last = 0;
	r->why = NULL;
	r->check_why[0] = '\0';
	r->next = NULL;
	pthread_mutex_lock(&q->lock);
	if (q->stop) {
		pthread_mutex_unlock(&q->lock);
		r->result = STORE_FAILED;
		r->why = closing;
		r->done(r);
		return true;
	}
	if (q->waiting >= STORE_READS_QUEUED) {
		pthread_mutex_unlock(&q->lock);
		return false;
	}
	*q->tail = r;
	q->tail = &r->next;
	q->waiting++;
	/* One wake for each thread asleep and not yet woken: a thread awake
	 * takes what is queued before it sleeps again, so more would only
	 * wake threads to find nothing. */
	if (q->asleep > q->woken) {
		q->woken++;
		/* Under the lock: once it is let go, read_queue_stop may
		 * destroy the condition. */
		pthread_cond_signal(&q->due);
	}
	pthread_mutex_unlock(&q->lock);
	return true;
}

void read_queue_stop(struct read_queue *q)
{
	if (!q->thread)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->due);
	pthread_mutex_unlock(&q->lock);
	for (size_t i = 0; i < q->threads; i++)
		pthread_join(q->thread[i], NULL);
	pthread_cond_destroy(&q->due);
	pthread_mutex_destroy(&q->lock);
	free(q->thread);
	q->thread = NULL;
	q->threads = 0;
}
