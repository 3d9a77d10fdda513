/* The reads' queue (src/read_queue.c): reads are taken oldest first by the
 * queue's own threads, several at once, each made once and then done once
 * on the thread that made it; at most STORE_READS_QUEUED wait; stopping
 * waits for the reads being made and fails those still queued. The reads
 * here are the test's own: a gate it opens holds them as long as it likes. */
#include "read_queue.h"
#include "tap.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long the test waits for anything before it calls it a failure. */
#define PATIENCE_S 10

struct desk {
	pthread_mutex_t lock;
	pthread_cond_t moved; /* any count below changed, or the gate opened */
	bool gate_open;       /* reads wait here while it is shut */
	size_t inside, most_inside;
	size_t made, done;
	int order[STORE_READS_QUEUED + 64]; /* ids, in the order made */
	pthread_t caller;
};

struct item {
	struct store_read r; /* first: done gets its address */
	int id;
	struct desk *d;
	size_t reads, dones;
	pthread_t reader, done_on;
};

static void desk_init(struct desk *d)
{
	*d = (struct desk){.caller = pthread_self()};
	if (pthread_mutex_init(&d->lock, NULL) != 0 || pthread_cond_init(&d->moved, NULL) != 0) {
		printf("Bail out! cannot make a mutex\n");
		exit(1);
	}
}

static void desk_destroy(struct desk *d)
{
	pthread_cond_destroy(&d->moved);
	pthread_mutex_destroy(&d->lock);
}

static struct timespec deadline(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += PATIENCE_S;
	return ts;
}

/* Waits, with d->lock held, until *count reaches want; false if it did
 * not within PATIENCE_S. */
static bool await_locked(struct desk *d, const size_t *count, size_t want)
{
	struct timespec until = deadline();
	while (*count < want)
		if (pthread_cond_timedwait(&d->moved, &d->lock, &until) == ETIMEDOUT)
			return *count >= want;
	return true;
}

static bool await(struct desk *d, const size_t *count, size_t want)
{
	pthread_mutex_lock(&d->lock);
	bool got = await_locked(d, count, want);
	pthread_mutex_unlock(&d->lock);
	return got;
}

static void open_gate(struct desk *d)
{
	pthread_mutex_lock(&d->lock);
	d->gate_open = true;
	pthread_cond_broadcast(&d->moved);
	pthread_mutex_unlock(&d->lock);
}

/* The store's read, as far as the queue can tell: it notes itself, waits
 * at the gate, and answers with last = its id. */
static void read_item(void *ctx, struct store_read *r)
{
	struct desk *d = ctx;
	struct item *it = (struct item *)r;
	pthread_mutex_lock(&d->lock);
	it->reads++;
	it->reader = pthread_self();
	if (d->made < sizeof d->order / sizeof d->order[0])
		d->order[d->made] = it->id;
	d->made++;
	d->inside++;
	if (d->inside > d->most_inside)
		d->most_inside = d->inside;
	pthread_cond_broadcast(&d->moved);
	struct timespec until = deadline();
	while (!d->gate_open)
		if (pthread_cond_timedwait(&d->moved, &d->lock, &until) == ETIMEDOUT)
			break;
	d->inside--;
	pthread_mutex_unlock(&d->lock);
	r->last = it->id;
}

static void item_done(struct store_read *r)
{
	struct item *it = (struct item *)r;
	struct desk *d = it->d;
	pthread_mutex_lock(&d->lock);
	it->dones++;
	it->done_on = pthread_self();
	d->done++;
	pthread_cond_broadcast(&d->moved);
	pthread_mutex_unlock(&d->lock);
}

static struct item *items_new(size_t n, struct desk *d)
{
	struct item *items = calloc(n, sizeof *items);
	if (!items) {
		printf("Bail out! out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++) {
		items[i] = (struct item){.id = (int)i, .d = d};
		items[i].r.done = item_done;
		/* The queue clears the results. */
		items[i].r.result = STORE_NOMEM;
		items[i].r.why = "stale";
		items[i].r.last = -5;
	}
	return items;
}

/* Every read made once and done once, on the thread that made it (one of
 * the queue's), with its results. */
static bool made_and_done(const struct item *items, size_t n, pthread_t caller)
{
	for (size_t i = 0; i < n; i++) {
		const struct item *it = &items[i];
		if (it->reads != 1 || it->dones != 1 || !pthread_equal(it->reader, it->done_on) ||
		    pthread_equal(it->done_on, caller) || it->r.result != STORE_OK ||
		    it->r.why != NULL || it->r.last != it->id)
			return false;
	}
	return true;
}

/* One thread: reads are made in the order queued. */
static void test_order(void)
{
	enum { N = 300 };
	struct desk d;
	desk_init(&d);
	struct item *items = items_new(N, &d);
	struct read_queue q;
	if (!ok(read_queue_start(&q, 1, read_item, &d) == 0, "a queue of one thread starts"))
		return;
	for (size_t i = 0; i < N; i++)
		if (!read_queue_push(&q, &items[i].r))
			break;
	/* The first read waits at the gate: the rest are queued behind it. */
	ok(await(&d, &d.inside, 1), "its thread takes the first read");
	open_gate(&d);
	ok(await(&d, &d.done, N), "all %d reads are done", N);
	bool in_order = d.made == N;
	for (size_t i = 0; i < N && in_order; i++)
		in_order = d.order[i] == (int)i;
	ok(in_order, "... made in the order queued");
	ok(made_and_done(items, N, d.caller),
	   "... each made once, then done once on the queue's thread, not the caller's");
	read_queue_stop(&q);
	free(items);
	desk_destroy(&d);
}

/* Several threads make reads at once, no more than there are. */
static void test_threads(void)
{
	enum { N = 40, THREADS = 4 };
	struct desk d;
	desk_init(&d);
	struct item *items = items_new(N, &d);
	struct read_queue q;
	if (!ok(read_queue_start(&q, THREADS, read_item, &d) == 0, "a queue of %d threads starts",
		THREADS))
		return;
	size_t pushed = 0;
	for (size_t i = 0; i < N; i++)
		pushed += read_queue_push(&q, &items[i].r);
	is_int(pushed, N, "%d reads are queued", N);
	ok(await(&d, &d.inside, THREADS), "%d reads are made at once", THREADS);
	pthread_mutex_lock(&d.lock);
	size_t most = d.most_inside, taken = d.made;
	pthread_mutex_unlock(&d.lock);
	ok(most == THREADS && taken == THREADS,
	   "... no more while they wait at the gate (%zu at most, %zu taken)", most, taken);
	open_gate(&d);
	ok(await(&d, &d.done, N), "all %d reads are done", N);
	ok(made_and_done(items, N, d.caller),
	   "... each made once, then done once on the thread that made it, not the caller's");
	size_t distinct = 0;
	for (size_t i = 0; i < N; i++) {
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = pthread_equal(items[i].reader, items[j].reader);
		distinct += !seen;
	}
	is_int(distinct, THREADS, "... by %d threads", THREADS);
	/* Idle again: every thread asleep, and no wake still counted. */
	bool settled = false;
	for (int i = 0; i < 1000 && !settled; i++) {
		pthread_mutex_lock(&q.lock);
		settled = q.asleep == THREADS && q.woken == 0 && q.waiting == 0;
		pthread_mutex_unlock(&q.lock);
		if (!settled)
			nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
	}
	ok(settled, "once idle, every thread sleeps and no wake is pending");
	read_queue_stop(&q);
	free(items);
	desk_destroy(&d);
}

/* At most STORE_READS_QUEUED wait: the next push is refused, untouched. */
static void test_bound(void)
{
	enum { THREADS = 2, N = THREADS + STORE_READS_QUEUED + 1 };
	struct desk d;
	desk_init(&d);
	struct item *items = items_new(N, &d);
	struct read_queue q;
	if (!ok(read_queue_start(&q, THREADS, read_item, &d) == 0, "a queue of %d threads starts",
		THREADS))
		return;
	for (size_t i = 0; i < THREADS; i++)
		read_queue_push(&q, &items[i].r);
	ok(await(&d, &d.inside, THREADS), "its threads each make a read, held at the gate");
	size_t pushed = 0;
	for (size_t i = THREADS; i < N - 1; i++)
		pushed += read_queue_push(&q, &items[i].r);
	is_int(pushed, STORE_READS_QUEUED, "%u more reads are queued", STORE_READS_QUEUED);
	struct item *extra = &items[N - 1];
	ok(!read_queue_push(&q, &extra->r), "the next is refused");
	open_gate(&d);
	ok(await(&d, &d.done, N - 1), "the others are all done");
	ok(made_and_done(items, N - 1, d.caller), "... each made and done once");
	ok(extra->reads == 0 && extra->dones == 0, "the refused read is neither made nor done");
	for (size_t i = 0; i < THREADS; i++)
		read_queue_push(&q, &items[i].r);
	ok(await(&d, &d.done, N + THREADS - 1), "the queue takes reads again once it has room");
	read_queue_stop(&q);
	free(items);
	desk_destroy(&d);
}

struct stopper {
	struct read_queue *q;
	pthread_mutex_t *lock;
	pthread_cond_t *moved;
	bool returned;
};

static void *stop_queue(void *arg)
{
	struct stopper *s = arg;
	read_queue_stop(s->q);
	pthread_mutex_lock(s->lock);
	s->returned = true;
	pthread_cond_broadcast(s->moved);
	pthread_mutex_unlock(s->lock);
	return NULL;
}

/* Stopping waits for the reads being made and fails the queued ones. */
static void test_stop(void)
{
	enum { THREADS = 2, QUEUED = 10, N = THREADS + QUEUED + 1 };
	struct desk d;
	desk_init(&d);
	struct item *items = items_new(N, &d);
	struct read_queue q;
	if (!ok(read_queue_start(&q, THREADS, read_item, &d) == 0, "a queue of %d threads starts",
		THREADS))
		return;
	for (size_t i = 0; i < THREADS; i++)
		read_queue_push(&q, &items[i].r);
	ok(await(&d, &d.inside, THREADS), "%d reads are being made, held at the gate", THREADS);
	for (size_t i = THREADS; i < THREADS + QUEUED; i++)
		read_queue_push(&q, &items[i].r);
	struct stopper s = {.q = &q, .lock = &d.lock, .moved = &d.moved};
	pthread_t t;
	if (!ok(pthread_create(&t, NULL, stop_queue, &s) == 0, "another thread stops the queue"))
		return;
	bool stopping = false;
	for (int i = 0; i < 1000 && !stopping; i++) {
		pthread_mutex_lock(&q.lock);
		stopping = q.stop;
		pthread_mutex_unlock(&q.lock);
		if (!stopping)
			nanosleep(&(struct timespec){0, 5 * 1000000L}, NULL);
	}
	nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
	pthread_mutex_lock(&d.lock);
	bool returned = s.returned;
	size_t done = d.done;
	pthread_mutex_unlock(&d.lock);
	ok(stopping && !returned && done == 0,
	   "stopping waits while reads are being made (%zu done meanwhile)", done);

	/* A read pushed while the queue stops is done at once, here. */
	struct item *late = &items[N - 1];
	ok(read_queue_push(&q, &late->r), "a read pushed while it stops is taken");
	ok(late->dones == 1 && pthread_equal(late->done_on, d.caller) && late->reads == 0,
	   "... and done at once on the caller's thread, unmade");
	ok(late->r.result == STORE_FAILED && late->r.why &&
	       strcmp(late->r.why, "store: closing") == 0,
	   "... as closing: %s", late->r.why ? late->r.why : "(none)");

	open_gate(&d);
	pthread_join(t, NULL);
	ok(s.returned, "stopping returns once the reads being made are done");
	is_int(d.done, N, "every read is done, none left waiting");
	ok(made_and_done(items, THREADS, d.caller), "the reads being made completed as usual");
	bool failed = true;
	for (size_t i = THREADS; i < THREADS + QUEUED; i++) {
		const struct item *it = &items[i];
		failed = failed && it->reads == 0 && it->dones == 1 &&
			 !pthread_equal(it->done_on, d.caller) && it->r.result == STORE_FAILED &&
			 it->r.why && strcmp(it->r.why, "store: closing") == 0;
	}
	ok(failed, "the %d still queued were done unmade, on a queue thread, as \"store: closing\"",
	   QUEUED);
	free(items);
	desk_destroy(&d);
}

int main(void)
{
	test_order();
	test_threads();
	test_bound();
	test_stop();

	struct read_queue q;
	struct desk d;
	desk_init(&d);
	ok(read_queue_start(&q, 0, read_item, &d) != 0, "a queue of no threads is refused");
	read_queue_stop(&q);
	ok(read_queue_start(&q, 3, read_item, &d) == 0, "an idle queue starts");
	read_queue_stop(&q);
	ok(d.made == 0, "... and stops without making a read");
	read_queue_stop(&q);
	ok(1, "stopping it again does nothing");
	desk_destroy(&d);
	return done_testing();
}
