/*
 * The event loop and its threads.
 *
 * The model. Every open connection is a small state struct in a slot table
 * (conn.c), watched by one epoll set, edge-triggered. A thread that takes an
 * event for a connection has it for as long as the connection has work that
 * needs no waiting: its bytes are read and walked (intake.c), a request
 * that has come whole is answered by the chat logic, the answer goes to the
 * socket as far as the socket takes it (output.c). Then the thread lets the
 * connection go. Waiting is always a state of the connection, never a
 * thread: for the peer's next request (idle, in epoll only), for the rest of
 * a request (a receive deadline), for a slow reader to drain its queue (a
 * send deadline), for a room to change (a long-poll or event stream, held.c),
 * for the store to commit a post (posts.c). No thread blocks on nginx, on a
 * FastCGI client or on a store's network; threads only work.
 *
 * The threads. Waking a sleeping thread costs more than answering a small
 * request, so not every thread waits in epoll_wait: only the pollers (by
 * default one, or half the CPUs from four up) take events, and a poller
 * answers what it took itself, going straight back to epoll_wait, where
 * under load the next event is already waiting. The other threads are
 * parked. A poller about to work long (a store read, a large message, a
 * health check of the store) first hands its place to a parked thread
 * (server_may_block), so that long work never holds up the others, and
 * parks itself afterwards if enough pollers are about. A standby thread
 * takes events the pollers took but have not served for STANDBY_MS, which
 * is what a poller put off the CPU by another process looks like.
 *
 * The run queue. Connections given work by something other than their own
 * events go there: a post the store has committed, the waiters of a room a
 * post has just changed. run_fd wakes a poller to take them.
 *
 * The files. loop.c runs the threads; conn.c runs a connection (conn_run)
 * through intake.c (its records), answer.c (what a response becomes),
 * posts.c, reads.c and service.c (work at the store, and the server's own
 * routes) and output.c (its bytes); held.c keeps the connections that wait,
 * with their deadlines and rooms. They call each other in a loop on
 * purpose: an answer to a post wakes its room (held.c), whose waiters are
 * answered (answer.c) and handed back to be run (conn.c).
 */
/* epoll, eventfd, timerfd and accept4: this layer is Linux-only. */
#define _GNU_SOURCE
#include "internal.h"

#include "log.h"
#include "metrics.h"
#include "store.h"

#include <errno.h>
#include <malloc.h> /* mallopt */
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* How long the pollers may take no event, while one waits, before the
 * standby thread takes it. */
#define STANDBY_MS 1
/* How often an idle standby looks anyway. */
#define STANDBY_IDLE_MS 100
/* Connections a poller takes from the run queue at once; the rest go to
 * the next poller, so a post to a crowded room spreads over them. */
#define RUN_BATCH 64
/* How long server_stop waits for the threads once it has told them to end. */
#define THREADS_END_MS 500

_Thread_local bool tl_run_later;

/* The server a worker thread serves, whether it holds a poller's place, and
 * its batch. */
static _Thread_local struct server *tl_server;
static _Thread_local bool tl_poller;
static _Thread_local struct batch *tl_batch;

/* The time on clk ms from now, for a timed wait. */
static struct timespec clock_after(clockid_t clk, unsigned ms)
{
	struct timespec t;
	clock_gettime(clk, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static void signal_fd(int fd, const char *what)
{
	if (eventfd_write(fd, 1) != 0)
		log_msg(LOG_ERROR, "cannot signal %s: %s", what, strerror(errno));
}

/* Takes place i of b unless another thread did. */
static bool batch_take(struct batch *b, unsigned i, uint64_t *tag)
{
	*tag = atomic_exchange(&b->tag[i], TAG_NONE);
	return *tag != TAG_NONE;
}

/* Takes a poller's place, waiting (parked) until one is free. */
static void gate_enter(struct server *srv)
{
	pthread_mutex_lock(&srv->gate_lock);
	srv->parked++;
	while (srv->pollers >= srv->max_pollers && !atomic_load(&srv->stopping))
		pthread_cond_wait(&srv->gate_free, &srv->gate_lock);
	srv->parked--;
	srv->pollers++;
	pthread_mutex_unlock(&srv->gate_lock);
	tl_poller = true;
}

void server_may_block(void)
{
	struct server *srv = tl_server;
	if (!tl_poller || !srv)
		return;
	tl_poller = false;
	pthread_mutex_lock(&srv->gate_lock);
	/* The rest of this thread's batch goes with the place: left to the
	 * standby, it could be taken by a thread beyond --threads. */
	uint64_t tag;
	bool left = false;
	for (unsigned i = 0; i < BATCH_MAX && srv->norphans < srv->orphans_cap; i++) {
		if (batch_take(tl_batch, i, &tag)) {
			srv->orphans[srv->norphans++] = tag;
			left = true;
		}
	}
	atomic_store(&srv->orphans_waiting, srv->norphans);
	srv->pollers--;
	/* A parked thread signalled here comes for them; with none, another
	 * poller may be asleep in epoll_wait; with no poller at all, every
	 * thread is busy and they wait for one, as --threads says. */
	bool nudge = left && srv->parked == 0 && srv->pollers > 0;
	pthread_cond_signal(&srv->gate_free);
	pthread_mutex_unlock(&srv->gate_lock);
	if (nudge)
		signal_fd(srv->nudge_fd, "a poller");
}

/* nudge_fd fired: the orphans are taken at the top of the poller's loop. */
static void nudge_event(struct server *srv)
{
	eventfd_t n;
	if (eventfd_read(srv->nudge_fd, &n) != 0 && errno != EAGAIN)
		log_msg(LOG_ERROR, "eventfd read: %s", strerror(errno));
}

/* Takes up to max events left by pollers that gave their place up, oldest
 * first; returns how many. */
static unsigned orphans_take(struct server *srv, uint64_t *tags, unsigned max)
{
	if (atomic_load(&srv->orphans_waiting) == 0)
		return 0;
	pthread_mutex_lock(&srv->gate_lock);
	unsigned n = srv->norphans < max ? srv->norphans : max;
	memcpy(tags, srv->orphans, n * sizeof *tags);
	memmove(srv->orphans, srv->orphans + n, (srv->norphans - n) * sizeof *tags);
	srv->norphans -= n;
	atomic_store(&srv->orphans_waiting, srv->norphans);
	pthread_mutex_unlock(&srv->gate_lock);
	return n;
}

/* run_fd is readable exactly while the run queue holds connections: it is
 * written when the queue becomes non-empty and read when it is emptied,
 * both under the lock. */
void run_push(struct server *srv, struct conn *c)
{
	c->next = NULL;
	pthread_mutex_lock(&srv->lock);
	bool first = !srv->run_head;
	*srv->run_tail = c;
	srv->run_tail = &c->next;
	if (first)
		signal_fd(srv->run_fd, "the run queue");
	pthread_mutex_unlock(&srv->lock);
}

/* Takes up to RUN_BATCH connections from the run queue and runs them. */
static void run_event(struct server *srv)
{
	pthread_mutex_lock(&srv->lock);
	struct conn *list = srv->run_head, **end = &srv->run_head;
	for (unsigned n = 0; *end && n < RUN_BATCH; n++)
		end = &(*end)->next;
	srv->run_head = *end;
	*end = NULL;
	if (!srv->run_head) {
		srv->run_tail = &srv->run_head;
		eventfd_t n;
		if (eventfd_read(srv->run_fd, &n) != 0 && errno != EAGAIN)
			log_msg(LOG_ERROR, "eventfd read: %s", strerror(errno));
	}
	pthread_mutex_unlock(&srv->lock);
	/* Armed again before running them, so that another poller takes the
	 * rest meanwhile. */
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = TAG_RUN};
	if (epoll_ctl(srv->ep, EPOLL_CTL_MOD, srv->run_fd, &ev) != 0)
		log_msg(LOG_ERROR, "cannot watch the run queue: %s", strerror(errno));
	while (list) {
		struct conn *c = list;
		list = c->next;
		c->next = NULL;
		conn_run(c);
	}
}

/* Handles one event (not TAG_STOP) a thread took. */
static void dispatch(struct server *srv, uint64_t tag)
{
	if (tag == TAG_LISTEN)
		accept_event(srv);
	else if (tag == TAG_TIMER)
		timer_event(srv);
	else if (tag == TAG_RUN)
		run_event(srv);
	else if (tag == TAG_NUDGE)
		nudge_event(srv);
	else
		conn_event(srv, tag);
}

static void thread_done(struct server *srv)
{
	intake_thread_end();
	pthread_mutex_lock(&srv->lock);
	srv->running--;
	pthread_cond_broadcast(&srv->done);
	pthread_mutex_unlock(&srv->lock);
}

/* Counts an event taken, for the standby, and wakes it if it sleeps. */
static void note_taken(struct server *srv)
{
	atomic_fetch_add(&srv->taken, 1);
	if (atomic_load(&srv->standby_idle)) {
		pthread_mutex_lock(&srv->standby_lock);
		pthread_cond_signal(&srv->standby_wake);
		pthread_mutex_unlock(&srv->standby_lock);
	}
}

static void *worker(void *arg)
{
	struct server *srv = arg;
	tl_server = srv;
	tl_batch = &srv->batches[atomic_fetch_add(&srv->nbatches, 1)];
	bool stop = false;
	while (!stop) {
		if (!tl_poller)
			gate_enter(srv);
		uint64_t tags[BATCH_MAX];
		unsigned n = orphans_take(srv, tags, BATCH_MAX);
		if (n == 0) {
			struct epoll_event evs[BATCH_MAX];
			int got = epoll_wait(srv->ep, evs, BATCH_MAX, -1);
			if (got < 0) {
				if (errno == EINTR)
					continue;
				log_msg(LOG_ERROR, "epoll_wait: %s", strerror(errno));
				break;
			}
			for (int i = 0; i < got; i++) {
				if (evs[i].data.u64 == TAG_STOP)
					stop = true; /* after the rest of the batch */
				else
					tags[n++] = evs[i].data.u64;
			}
		}
		for (unsigned i = 0; i < n; i++)
			atomic_store(&tl_batch->tag[i], tags[i]);
		uint64_t tag;
		for (unsigned i = 0; i < n; i++) {
			if (!batch_take(tl_batch, i, &tag))
				continue; /* the standby took it */
			note_taken(srv);
			dispatch(srv, tag);
		}
	}
	server_may_block();
	thread_done(srv);
	return NULL;
}

/* The standby's part when the pollers are held up: an event a poller took
 * in its batch and has not served (it was put off the CPU). Not the
 * orphans: those wait for a poller, or the standby could do work as a
 * thread beyond --threads. False when there is none. */
static bool standby_take(struct server *srv, uint64_t *tag)
{
	unsigned nb = atomic_load(&srv->nbatches);
	for (unsigned b = 0; b < nb; b++)
		for (unsigned i = 0; i < BATCH_MAX; i++)
			if (batch_take(&srv->batches[b], i, tag))
				return true;
	return false;
}

/*
 * The standby: a thread that takes events only when the pollers have taken
 * none for STANDBY_MS while one is waiting. With it, one poller is enough on
 * a small machine: every further poller waiting in epoll_wait is a thread
 * woken per request when the load is below what the backend can do. Under
 * load it wakes every STANDBY_MS to look, and an idle backend leaves it
 * asleep until the next event.
 */
static void *standby(void *arg)
{
	struct server *srv = arg;
	tl_server = srv;
	int err = pthread_setname_np(pthread_self(), "chat-standby");
	if (err != 0)
		log_msg(LOG_DEBUG, "cannot name the standby thread: %s", strerror(err));
	uint64_t seen = atomic_load(&srv->taken);
	bool look_now = false, took = false;
	while (!atomic_load(&srv->stopping)) {
		if (!look_now) {
			struct timespec pause = {0, STANDBY_MS * 1000000L};
			nanosleep(&pause, NULL);
		}
		look_now = false;
		uint64_t now = atomic_load(&srv->taken);
		if (now != seen) {
			seen = now;
			continue;
		}
		/* Every thread busy with long work (no poller at all) is
		 * --threads reached, not a poller held up: the next event waits
		 * for a thread, as --threads says. */
		pthread_mutex_lock(&srv->gate_lock);
		bool polling = srv->pollers > 0;
		pthread_mutex_unlock(&srv->gate_lock);
		struct epoll_event ev;
		uint64_t tag = 0;
		int n = 0;
		if (polling && standby_take(srv, &tag)) {
			n = 1;
		} else if (polling) {
			n = epoll_wait(srv->ep, &ev, 1, 0);
			if (n == 1)
				tag = ev.data.u64;
		}
		if (n == 1) {
			if (tag == TAG_STOP)
				break;
			metrics_standby_took();
			dispatch(srv, tag);
			/* Still stuck: take the next one at once. */
			look_now = took = true;
			continue;
		}
		if (n < 0 && errno != EINTR) {
			log_msg(LOG_ERROR, "epoll_wait: %s", strerror(errno));
			break;
		}
		if (took) {
			/* The pollers may still be held up: look again. */
			took = false;
			continue;
		}
		/* Nothing waits: sleep until the pollers take an event, or for
		 * STANDBY_IDLE_MS, in case they were put off the CPU just as the
		 * load began. The flag is set before taken is read again, and a
		 * poller adds to taken before it reads the flag, so one of them
		 * sees the other. */
		struct timespec until = clock_after(CLOCK_MONOTONIC, STANDBY_IDLE_MS);
		pthread_mutex_lock(&srv->standby_lock);
		atomic_store(&srv->standby_idle, true);
		while (atomic_load(&srv->taken) == seen && !atomic_load(&srv->stopping) &&
		       pthread_cond_timedwait(&srv->standby_wake, &srv->standby_lock, &until) !=
			   ETIMEDOUT)
			;
		atomic_store(&srv->standby_idle, false);
		pthread_mutex_unlock(&srv->standby_lock);
		/* Woken or timed out, the pollers get STANDBY_MS more to take
		 * what waits before the standby does: a process stopped and
		 * continued wakes both at once. */
		seen = atomic_load(&srv->taken);
	}
	thread_done(srv);
	return NULL;
}

/* As many connections as descriptors allow: idle kept connections cost a
 * slot and a descriptor each, never a thread. */
static uint32_t slot_count(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1000;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
			rl = raised;
	}
	/* Room for the store, the log, epoll and friends. */
	rlim_t n = rl.rlim_cur > 96 ? rl.rlim_cur - 64 : 32;
	return n > MAX_SLOTS ? MAX_SLOTS : (uint32_t)n;
}

static int watch(int ep, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = {.events = events, .data.u64 = tag};
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void server_free(struct server *srv)
{
	const int fds[] = {srv->ep, srv->stop_fd, srv->timer_fd, srv->run_fd, srv->nudge_fd};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		if (fds[i] >= 0 && close(fds[i]) != 0)
			log_msg(LOG_DEBUG, "close: %s", strerror(errno));
	free(srv->batches);
	free(srv->orphans);
	for (uint32_t i = 0; srv->slots && i < srv->used; i++) {
		struct conn *c = &srv->slots[i];
		if (st_state(atomic_load(&c->st)) != CONN_FREE)
			conn_close(c, NULL);
	}
	free(srv->slots);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->done);
	pthread_mutex_destroy(&srv->gate_lock);
	pthread_cond_destroy(&srv->gate_free);
	pthread_mutex_destroy(&srv->standby_lock);
	pthread_cond_destroy(&srv->standby_wake);
	free(srv);
}

/* glibc's malloc, set for a backend whose threads share a few arenas. */
static void tune_malloc(unsigned pollers)
{
#ifdef M_ARENA_MAX
	/* glibc gives each thread that meets a locked arena a new one, up to 8
	 * per CPU, and each keeps the memory its thread freed. As many arenas as
	 * pollers keep those from waiting on each other. */
	if (mallopt(M_ARENA_MAX, (int)(pollers > 2 ? pollers : 2)) != 1)
		log_msg(LOG_DEBUG, "mallopt(M_ARENA_MAX) refused");
#endif
#ifdef M_TRIM_THRESHOLD
	/* glibc gives memory back once 128 KiB at the top of a heap are free:
	 * with 64 KiB bodies that is a brk or madvise every few requests, each a
	 * TLB flush on every CPU. Kept up to this much per arena, which also
	 * fixes the mmap threshold at 128 KiB, above any answer of the default
	 * body limit. */
	if (mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024) != 1)
		log_msg(LOG_DEBUG, "mallopt(M_TRIM_THRESHOLD) refused");
#endif
}

struct server *server_start(const struct server_config *cfg)
{
	struct server *srv = calloc(1, sizeof *srv);
	if (!srv) {
		log_msg(LOG_ERROR, "out of memory");
		return NULL;
	}
	srv->cfg = *cfg;
	intake_init();
	srv->ep = srv->stop_fd = srv->timer_fd = srv->run_fd = srv->nudge_fd = -1;
	srv->run_tail = &srv->run_head;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->done, NULL);
	pthread_mutex_init(&srv->gate_lock, NULL);
	pthread_cond_init(&srv->gate_free, NULL);
	pthread_mutex_init(&srv->standby_lock, NULL);
	pthread_condattr_t monotonic;
	if (pthread_condattr_init(&monotonic) != 0 ||
	    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&srv->standby_wake, &monotonic) != 0) {
		log_msg(LOG_ERROR, "cannot set up the standby's condition variable");
		free(srv);
		return NULL;
	}
	pthread_condattr_destroy(&monotonic);
	srv->cfg.limits.may_block = server_may_block;
	srv->cfg.limits.defer_posts = true;
	srv->cfg.limits.defer_reads = cfg->limits.store && store_reads_wait(cfg->limits.store);
	/* Half the CPUs, as nginx's workers want the other half; the standby
	 * stands in for a poller put off the CPU. */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	srv->max_pollers = cfg->pollers ? cfg->pollers : cpus >= 4 ? (unsigned)(cpus / 2) : 1;
	if (srv->max_pollers > cfg->threads)
		srv->max_pollers = cfg->threads;
	tune_malloc(srv->max_pollers);

	srv->batches = malloc(cfg->threads * sizeof *srv->batches);
	/* Each orphan was in a batch, and a poller takes orphans before new
	 * events: twice every batch is more than can ever wait. */
	srv->orphans_cap = cfg->threads * BATCH_MAX * 2;
	srv->orphans = malloc(srv->orphans_cap * sizeof *srv->orphans);
	srv->nslots = slot_count();
	srv->slots = calloc(srv->nslots, sizeof *srv->slots);
	if (!srv->batches || !srv->orphans || !srv->slots) {
		log_msg(LOG_ERROR, "out of memory for %u connection slots", srv->nslots);
		server_free(srv);
		return NULL;
	}
	for (unsigned t = 0; t < cfg->threads; t++)
		for (unsigned i = 0; i < BATCH_MAX; i++)
			atomic_init(&srv->batches[t].tag[i], TAG_NONE);
	if (cfg->store_version && cfg->store_version(cfg->store_ctx, &srv->store_version) != 0)
		srv->store_version = 0;
	_Static_assert(STORE_ROOM_MAX == CHAT_ROOM_MAX, "the store's room names are the chat's");
	if (cfg->store_rooms) {
		/* What piled up before the start concerns no waiter. */
		static struct store_changes before;
		cfg->store_rooms(cfg->store_ctx, &before);
	}

	srv->ep = epoll_create1(EPOLL_CLOEXEC);
	srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	srv->run_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->nudge_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->ep < 0 || srv->stop_fd < 0 || srv->timer_fd < 0 || srv->run_fd < 0 ||
	    srv->nudge_fd < 0 || watch(srv->ep, srv->nudge_fd, EPOLLIN, TAG_NUDGE) != 0 ||
	    watch(srv->ep, srv->stop_fd, EPOLLIN, TAG_STOP) != 0 ||
	    watch(srv->ep, srv->timer_fd, EPOLLIN | EPOLLONESHOT, TAG_TIMER) != 0 ||
	    watch(srv->ep, srv->run_fd, EPOLLIN | EPOLLONESHOT, TAG_RUN) != 0 ||
	    watch(srv->ep, cfg->listen_fd, EPOLLIN | EPOLLONESHOT, TAG_LISTEN) != 0) {
		log_msg(LOG_ERROR, "cannot set up epoll: %s", strerror(errno));
		server_free(srv);
		return NULL;
	}

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	/* The workers, then the standby. */
	for (unsigned i = 0; i <= cfg->threads; i++) {
		pthread_t t;
		pthread_mutex_lock(&srv->lock);
		srv->running++;
		pthread_mutex_unlock(&srv->lock);
		int err = pthread_create(&t, &attr, i < cfg->threads ? worker : standby, srv);
		if (err != 0) {
			pthread_mutex_lock(&srv->lock);
			srv->running--;
			pthread_mutex_unlock(&srv->lock);
			log_msg(LOG_ERROR, "cannot start thread %u of %u: %s", i + 1,
				cfg->threads + 1, strerror(err));
			pthread_attr_destroy(&attr);
			server_stop(srv, 1000);
			return NULL;
		}
	}
	pthread_attr_destroy(&attr);
	return srv;
}

/* Every connection no thread has is given to the pollers: held requests
 * answer now, streams end, idle kept connections close (or serve a request
 * that has just come first). */
static void stop_connections(struct server *srv)
{
	struct conn *waiting = NULL, *other = NULL;
	pthread_mutex_lock(&srv->lock);
	while (srv->held) {
		struct conn *c = srv->held;
		held_remove_locked(srv, c);
		set_state(c, CONN_BUSY);
		bool answers =
		    c->task == TASK_POLL || c->task == TASK_STREAM || c->task == TASK_PACED;
		c->next = answers ? waiting : other;
		*(answers ? &waiting : &other) = c;
	}
	for (uint32_t i = 0; i < srv->used; i++) {
		struct conn *c = &srv->slots[i];
		uint64_t st = atomic_load(&c->st);
		if (st_state(st) == CONN_IDLE &&
		    atomic_compare_exchange_strong(&c->st, &st, st_make(st_gen(st), CONN_BUSY))) {
			c->next = other;
			other = c;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	tl_run_later = true;
	answer_again(srv, waiting, CHAT_HOLD_OVER);
	while (other) {
		struct conn *c = other;
		other = c->next;
		run_push(srv, c);
	}
	tl_run_later = false;
}

unsigned long server_stop(struct server *srv, unsigned grace_ms)
{
	atomic_store(&srv->stopping, true);
	/* Parked threads come out to help, and end with the others. */
	pthread_mutex_lock(&srv->gate_lock);
	pthread_cond_broadcast(&srv->gate_free);
	pthread_mutex_unlock(&srv->gate_lock);
	pthread_mutex_lock(&srv->standby_lock);
	pthread_cond_broadcast(&srv->standby_wake);
	pthread_mutex_unlock(&srv->standby_lock);
	stop_connections(srv);

	/* Requests in flight finish and their answers drain, posts at the
	 * store are answered once committed; then the threads end. */
	struct timespec deadline = clock_after(CLOCK_REALTIME, grace_ms);
	pthread_mutex_lock(&srv->lock);
	while (atomic_load(&srv->connections) > 0 && srv->running > 0 &&
	       pthread_cond_timedwait(&srv->done, &srv->lock, &deadline) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&srv->lock);
	signal_fd(srv->stop_fd, "the threads to stop");
	/* A thread between two events ends at once; one inside a request gets
	 * a little longer. */
	deadline = clock_after(CLOCK_REALTIME, THREADS_END_MS);
	pthread_mutex_lock(&srv->lock);
	while (srv->running > 0 &&
	       pthread_cond_timedwait(&srv->done, &srv->lock, &deadline) != ETIMEDOUT)
		;
	unsigned left = srv->running;
	unsigned open = atomic_load(&srv->connections);
	pthread_mutex_unlock(&srv->lock);

	unsigned long served = atomic_load(&srv->served);
	if (left > 0 || srv->posting > 0) {
		/* Still working after the grace period: the process exits under
		 * them, so their state must stay allocated. */
		log_msg(LOG_NOTICE, "%u request(s) still in flight at exit", left + srv->posting);
		return served;
	}
	if (open > 0)
		log_msg(LOG_NOTICE, "%u connection(s) still open at exit", open);
	server_free(srv);
	return served;
}
