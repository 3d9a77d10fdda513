/*
 * What the files of the server share: the server, a connection, and the
 * calls between them. Nothing outside src/server/ includes it.
 *
 * The model (loop.c has the whole story): every connection is a small
 * state struct in a slot table, watched by one epoll set; a thread takes a
 * connection for as long as it has work to do without waiting, then lets
 * it go. A connection that waits (for more of its request, for its reader
 * to drain its output, for its room to change, for its post to be stored)
 * waits as a state, never as a thread.
 */
#ifndef SERVER_INTERNAL_H
#define SERVER_INTERNAL_H

#include "chat.h"
#include "params.h"
#include "records.h"
#include "routes.h"
#include "server.h"
#include "store.h"

#include <fcgiapp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Worker stacks: the parsers recurse at most CHAT_JSON_MAX_DEPTH deep, so a
 * small stack is plenty and keeps many threads cheap. */
#define WORKER_STACK ((size_t)256 * 1024)
/* Upper bound on the slot table, whatever RLIMIT_NOFILE allows. */
#define MAX_SLOTS 65536u
/* Events a poller takes from epoll at once (see loop.c). */
#define BATCH_MAX 8
/* How often held requests look for posts made by other processes. */
#define STORE_POLL_MS 100
/* Bodies larger than this are parsed off the pollers' place. */
#define BIG_BODY ((size_t)8 * 1024)

/* Tags of the epoll entries that are not connections. */
#define TAG_LISTEN UINT64_MAX
#define TAG_STOP   (UINT64_MAX - 1)
#define TAG_TIMER  (UINT64_MAX - 2)
#define TAG_RUN    (UINT64_MAX - 3)
#define TAG_NONE   (UINT64_MAX - 4) /* an empty place in a batch */
#define TAG_NUDGE  (UINT64_MAX - 5)

/* Who has a connection. The state and ST_MISSED live in the low 32 bits of
 * conn.st, the slot's generation in the high ones: one word, so taking an
 * idle connection is one compare-and-swap. */
enum conn_state {
	CONN_FREE, /* an empty slot */
	CONN_IDLE, /* open and watched, no deadline: waits for its peer */
	CONN_BUSY, /* a thread has it, or the store (conn_away), or the run queue */
	CONN_HELD  /* watched, and in srv->held for a deadline or its room */
};
/* Added to CONN_BUSY by a thread that got an event for a connection another
 * thread has: the owner looks again before it lets go (conn_let_go). */
#define ST_MISSED     0x100u
#define ST_STATE_MASK 0xffu

/* What the request on a connection is doing. */
enum conn_task {
	TASK_NONE,      /* no request, or its answer is queued whole */
	TASK_RECEIVING, /* its records are arriving */
	TASK_POLL,      /* a long-poll held until its room changes or time is up */
	TASK_STREAM,    /* an open event stream */
	TASK_PACED      /* a streamed reply sent one event at a time */
};

/* What the store has a connection for, while no thread has it. */
enum conn_away {
	AWAY_NONE,
	AWAY_POST, /* its post is being stored (posts.c) */
	AWAY_READ, /* the read its answer needs is being made (reads.c) */
	AWAY_CHECK /* the store is being checked for GET /chat/health (service.c) */
};

/* Bytes written to a connection's socket when it can take them. */
struct out_chunk {
	struct out_chunk *next;
	size_t len, at;
	unsigned char data[];
};

struct outq {
	struct out_chunk *head, *tail;
	size_t bytes;
};

struct conn {
	_Atomic uint64_t st;
	uint32_t index;
	int fd;
	struct server *srv;
	/* Free list, held list, run queue, or a list being answered. */
	struct conn *next, *prev;

	/* Input: the record reader, and bytes taken but not yet walked (a
	 * request that came whole with more behind it). */
	struct records rec;
	unsigned char *unread;
	size_t unread_len, unread_at;

	/* The request in progress. */
	enum conn_task task;
	unsigned request_id;
	bool keep_conn;
	bool have_params; /* req holds its parameters (libfcgi's) */
	bool discard;     /* the head is refused: the body is read and dropped */
	bool counted;     /* metrics_request_started was called for it */
	enum route_id route;
	FCGX_Request req;
	/* The request as the chat logic sees it, found in req's parameters
	 * once (head_done); its strings live as long as req's. */
	struct chat_request asked;
	char path[64];
	unsigned char *params;
	size_t params_len, params_cap;
	char *body;
	size_t body_len, body_cap, announced;
	struct timespec t0;

	/* Deadlines, CLOCK_MONOTONIC ms (0: none): the request's records
	 * (head, then body), the reader's next byte, and the hold. */
	uint64_t receive_by, send_by, hold_until;

	/* Long-polls and streams. */
	uint64_t seen_change; /* srv->changes when its answer was computed */
	unsigned rounds;      /* times it was asked again instead of held */
	bool stale;           /* a post came before it could be held: ask again */
	bool was_held;
	char room[CHAT_ROOM_MAX + 1];
	int64_t stream_after; /* the last sequence number the stream sent */
	bool stream_more;     /* a part is due once the queue has drained */
	/* A paced reply: the events not yet sent, and the pause between them. */
	char *pending;
	size_t pending_len, pending_at;
	unsigned pace_ms;
	/* At the store: what for, and whether the store is done with it. A
	 * read shared by several connections is their group's (reads.c). */
	enum conn_away away;
	bool store_done;
	struct chat_post *post;
	struct chat_read *read;
	struct store_read *check;
	struct read_group *group;
	struct conn *group_next;

	/* Output. */
	struct outq out;
	bool out_watched; /* EPOLLOUT is asked for */
	/* The connection ends: failed, at once (its output is dropped);
	 * closing, once its queue is written. conn_run does either, and logs
	 * close_why at notice level (NULL: nothing to say, the peer went away)
	 * and counts close_reason (enum metrics_close; -1: none). */
	bool failed, closing;
	const char *close_why;
	int close_reason;
};

struct batch {
	_Atomic uint64_t tag[BATCH_MAX];
};

struct server {
	struct server_config cfg;
	int ep;
	int stop_fd;  /* eventfd: the threads end */
	int timer_fd; /* deadlines and the store check */
	int run_fd;   /* eventfd: connections wait in the run queue */
	int nudge_fd; /* eventfd: a poller is wanted for orphaned events */
	atomic_bool stopping;
	atomic_ulong served;
	atomic_uint connections;
	/* Bumped whenever entries may have been added to some room: a request
	 * whose answer was computed before the last bump is not held but looked
	 * at again, so no post between its query and its hold is missed. */
	_Atomic uint64_t changes;
	/* Unsent bytes over all connections, for the metrics. */
	atomic_size_t queued;

	pthread_mutex_t lock; /* everything below, and srv->held's members */
	pthread_cond_t done;
	unsigned running;
	struct conn *slots;
	uint32_t nslots;
	struct conn *free_slots;
	uint32_t used; /* slots [0, used) have been handed out at least once */
	bool listen_paused;
	struct conn *held; /* doubly linked */
	unsigned nheld;    /* long-polls among them */
	unsigned nstreams; /* open event streams, held or not */
	uint64_t store_version;
	uint64_t timer_due_ms; /* 0: not set */
	unsigned posting;      /* posts at the store */
	struct conn *run_head, **run_tail;

	/* The pollers' places (loop.c). */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_free;
	unsigned pollers, max_pollers;
	unsigned parked;
	struct batch *batches;
	atomic_uint nbatches;
	uint64_t *orphans;
	unsigned norphans, orphans_cap;
	atomic_uint orphans_waiting;
	_Atomic uint64_t taken;
	atomic_bool standby_idle;
	pthread_mutex_t standby_lock;
	pthread_cond_t standby_wake;
};

/* ---- loop.c: threads and the run queue ---- */

/* CLOCK_MONOTONIC, for deadlines and timings. */
static inline uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static inline double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The calling thread is about to work long (the store, a large body): its
 * poller's place goes to a parked thread. */
void server_may_block(void);
/* Hands c (BUSY) to the pollers, which run it (conn_run). */
void run_push(struct server *srv, struct conn *c);
/* While set on a thread, connections it gives work to are run by the
 * pollers, not by it: a post's thread wakes a room without writing. */
extern _Thread_local bool tl_run_later;

/* ---- conn.c: connections and their states ---- */

void accept_event(struct server *srv);
void conn_event(struct server *srv, uint64_t tag);
/* Does all c can do without waiting, then lets it go (or closes it, or
 * leaves it with the store). c is the caller's. */
void conn_run(struct conn *c);
/* conn_run now, or by the pollers under tl_run_later. */
void conn_continue(struct conn *c);
/* Closes c at once; why (for the log at notice level) may be NULL. */
void conn_close(struct conn *c, const char *why);
/* The same, counted under reason (enum metrics_close) in the metrics. */
void conn_close_for(struct conn *c, const char *why, int reason);
/* c must close (conn_run does it): at once, or once its queue is written. */
void conn_fail(struct conn *c, const char *why, int reason);
void conn_close_after(struct conn *c, const char *why, int reason);
uint64_t st_make(uint32_t gen, enum conn_state state);
uint32_t st_gen(uint64_t st);
enum conn_state st_state(uint64_t st);
void set_state(struct conn *c, enum conn_state state);
void release_slot(struct server *srv, struct conn *c);
/* The earliest of c's deadlines, 0 for none. */
uint64_t conn_deadline(const struct conn *c);

/* ---- intake.c: a request's records, parameters and body ---- */

enum intake {
	INTAKE_DRAINED, /* nothing more to read now */
	INTAKE_MORE,    /* there may be more to read at once */
	INTAKE_CLOSED,  /* c is closed */
	INTAKE_AWAY     /* c is the store's until its post is stored */
};
enum intake intake(struct conn *c);
/* Fills intake's tables; once, before the threads start. */
void intake_init(void);
/* Frees what the calling thread kept to read with; as it ends. */
void intake_thread_end(void);
/* The request as chat_respond sees it. */
void build_request(struct conn *c, struct chat_request *creq);
/* The same, asked again as a held request is: in mode, and as the stream
 * it is, if it is one. */
void request_asked(struct conn *c, struct chat_request *creq, enum chat_hold_mode mode);
/* Forgets the request on c (its answer is queued, or it ended unanswered). */
void request_end(struct conn *c);

/* ---- output.c: the record writer and the output queue ---- */

/* Queue (or write, when nothing waits and the thread may) records for c.
 * Failures are noted in c (conn_fail), for conn_run to act on. The answer of the
 * request on c: its head and body as FCGI_STDOUT, and when end, the empty
 * FCGI_STDOUT and FCGI_END_REQUEST. */
void out_stdout(struct conn *c, const char *head, size_t head_len, const char *body, size_t len,
		bool end);
void out_end_request(struct conn *c, unsigned id, unsigned char protocol_status, bool stdout_end);
void out_get_values(struct conn *c, unsigned asked);
void out_unknown_type(struct conn *c, unsigned type);
/* Writes what is queued until the socket takes no more: 0, or -1 when the
 * peer is gone. */
int out_flush(struct conn *c);
void out_clear(struct conn *c);

/* ---- answer.c: turning a chat_response into bytes and holds ---- */

/* Sends, holds or streams res for the request on c. Takes over res. */
void answer_request(struct conn *c, struct chat_request *creq, struct chat_response *res);
/* An open stream's next part, once its queue has drained. */
void stream_next(struct conn *c);
/* Asks the chat logic again for the request on c, as mode says. */
void ask_again(struct conn *c, enum chat_hold_mode mode);
/* A paced reply's next event, when it is due. */
void pace_next(struct conn *c);

/* ---- held.c: deadlines, holds and wake-ups ---- */

/* Puts c (BUSY) in the held list until its deadline; the lock is held.
 * False if an event came meanwhile, or a post since its answer was computed
 * (then c->stale): c is still the caller's. */
bool held_insert_locked(struct server *srv, struct conn *c);
void held_remove_locked(struct server *srv, struct conn *c);
void timer_event(struct server *srv);
/* A post added entries to room: the requests held on it are asked again. */
void wake_room(struct server *srv, const char *room);
/* Asks chat_respond again for each request in list (linked by next). */
void answer_again(struct server *srv, struct conn *list, enum chat_hold_mode mode);
/* Makes the timer fire by due_ms at the latest; the lock is held. */
void timer_by_locked(struct server *srv, uint64_t due_ms);

/* ---- posts.c, reads.c and service.c: work at the store ---- */

/* Set on a thread that has just handed a connection to the store (which
 * calls it back on another thread): the thread must not touch it again.
 * Whoever calls a chain that may hand one over clears it first and looks
 * at it after. */
extern _Thread_local bool tl_away;
/* Hands c to the store for what c->away says: queue(cookie c) queues the
 * work, whose done calls conn_store_done. Sets tl_away unless the store was
 * done at once, on this thread. */
void conn_to_store(struct conn *c, void (*queue)(struct conn *c));
/* The store is done with c's work: c goes to the run queue (or, done at
 * once on the thread that queued it, stays with that thread). */
void conn_store_done(struct conn *c);
/* Stores c's post, or answers 503 when --max-posts are at the store. */
void post_start(struct conn *c, struct chat_request *creq, struct chat_post *post);
/* c's post is stored: answers it. */
void post_answer(struct conn *c);
/* Has the store make c's read (a CHAT_READ of c's request). */
void read_start(struct conn *c, struct chat_response *res);
/* c's read is made: answers it, and its group's. */
void read_answer(struct conn *c);
/* A group of connections whose requests ask the same question, so one
 * read answers them all (answer_again). */
struct read_group;
struct read_group *group_new(struct conn *leader, const struct chat_request *creq,
			     struct chat_read *read);
bool group_takes(struct read_group *g, struct conn *c, const struct chat_request *creq);
/* Queues the group's read; its members are the store's until it is made. */
void group_start(struct read_group *g);

/* ---- service.c: about the server, not the chat ---- */

/* Answers the request on c, a route of the server's own. */
void service_answer(struct conn *c, struct chat_request *creq);
/* The health check's answer: 0, or -1 with why the store failed. */
void health_answer(struct conn *c, int rc, const char *why);
/* Has the store's threads check it, for GET /chat/health. */
void check_start(struct conn *c);
/* The check is made: answers it. */
void check_answer(struct conn *c);

#endif
