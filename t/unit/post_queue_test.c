/* The posts' queue (src/post_queue.c): every post is written once, in the
 * order queued, in batches of at most batch_max, each batch by the queue's
 * own thread, and done only after its batch; stopping writes what is left. */
#include "post_queue.h"
#include "tap.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

#define POSTS 300

struct log {
	pthread_mutex_t lock;
	int order[POSTS]; /* the ids, as written */
	size_t written;
	size_t batches, biggest;
	bool wrong_thread, wrong_count, done_early;
	pthread_t writer;
	bool writer_known;
	sem_t gate; /* the first batch waits here, so that posts pile up */
	bool gated;
};

struct item {
	struct store_post p;
	int id;
	struct log *log;
	bool written, done;
};

static void write_batch(void *ctx, struct store_post *batch, size_t n)
{
	struct log *l = ctx;
	if (l->gated) {
		l->gated = false;
		while (sem_wait(&l->gate) != 0)
			;
	}
	size_t seen = 0;
	pthread_mutex_lock(&l->lock);
	if (!l->writer_known) {
		l->writer = pthread_self();
		l->writer_known = true;
	} else if (!pthread_equal(l->writer, pthread_self())) {
		l->wrong_thread = true;
	}
	for (struct store_post *p = batch; p; p = p->next, seen++) {
		struct item *it = (struct item *)p;
		it->written = true;
		if (l->written < POSTS)
			l->order[l->written++] = it->id;
		p->result = STORE_OK;
	}
	l->wrong_count = l->wrong_count || seen != n;
	l->batches++;
	if (n > l->biggest)
		l->biggest = n;
	pthread_mutex_unlock(&l->lock);
}

static void done(struct store_post *p)
{
	struct item *it = (struct item *)p;
	if (!it->written)
		it->log->done_early = true;
	it->done = true;
}

static void run(size_t batch_max, const char *name)
{
	struct log l = {.gated = true};
	pthread_mutex_init(&l.lock, NULL);
	sem_init(&l.gate, 0, 0);
	struct item *items = calloc(POSTS, sizeof *items);
	struct post_queue q;
	if (!items || post_queue_start(&q, batch_max, write_batch, &l) != 0) {
		ok(0, "%s: the queue starts", name);
		free(items);
		return;
	}
	for (int i = 0; i < POSTS; i++) {
		items[i] = (struct item){.id = i, .log = &l};
		items[i].p.done = done;
		items[i].p.answer = (char *)"stale"; /* the queue clears the results */
		post_queue_push(&q, &items[i].p);
	}
	/* The first batch (post 0, or a few) waited: the rest are queued. */
	sem_post(&l.gate);
	post_queue_stop(&q);

	bool in_order = l.written == POSTS, all_done = true, cleared = true;
	for (size_t i = 0; i < l.written && in_order; i++)
		in_order = l.order[i] == (int)i;
	for (int i = 0; i < POSTS; i++) {
		all_done = all_done && items[i].done;
		cleared = cleared && items[i].p.answer == NULL;
	}
	ok(in_order, "%s: all %d posts written once, in the order queued", name, POSTS);
	ok(all_done && !l.done_early, "%s: each done once its batch was written", name);
	ok(cleared, "%s: a queued post's results start cleared", name);
	ok(!l.wrong_thread && !l.wrong_count, "%s: every batch on one thread, n its length", name);
	size_t rest = POSTS - 1, want = rest < batch_max ? rest : batch_max;
	ok(l.biggest <= batch_max && l.biggest >= want && l.batches <= 2 + rest / want,
	   "%s: what queued meanwhile went in %zu batches, the biggest %zu", name, l.batches,
	   l.biggest);
	free(items);
	sem_destroy(&l.gate);
	pthread_mutex_destroy(&l.lock);
}

int main(void)
{
	run(64, "at most 64 a batch");
	run(SIZE_MAX, "no limit");

	/* Stopped with nothing queued, and never started: both return. */
	struct post_queue q;
	struct log l = {0};
	pthread_mutex_init(&l.lock, NULL);
	ok(post_queue_start(&q, 8, write_batch, &l) == 0, "an idle queue starts");
	post_queue_stop(&q);
	ok(l.batches == 0, "... and stops without writing a batch");
	post_queue_stop(&q);
	ok(1, "stopping it again does nothing");
	pthread_mutex_destroy(&l.lock);
	return done_testing();
}
