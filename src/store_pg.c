/*
 * The store on PostgreSQL (libpq), for several nodes sharing one database.
 * The same tables as the SQLite store; a transaction locks its rooms' rows,
 * which serialises posts to one room across every node, so sequence
 * numbers stay gapless. Group commit: the posts a process receives while a
 * transaction is being written go together into the next one, so one
 * flush of the WAL answers many (see batch_tx). Posts NOTIFY once
 * committed; a thread per process LISTENs and counts what arrives, which
 * store_data_version returns.
 */
#include "store_pg.h"

#include "store_impl.h"

#include <stdio.h>

#ifndef CHAT_POSTGRESQL

int store_pg_open(struct store_pg **out, const char *uri, const struct store_options *opt,
		  char *err, size_t err_size)
{
	(void)uri;
	(void)opt;
	*out = NULL;
	snprintf(err, err_size,
		 "this chat-fcgi was built without PostgreSQL (configure --without-postgresql): "
		 "use --store sqlite:PATH");
	return -1;
}

void store_pg_close(struct store_pg *st)
{
	(void)st;
}

void store_pg_queue(struct store_pg *st, struct store_post *p)
{
	(void)st;
	p->result = STORE_FAILED;
	p->why = "store: built without PostgreSQL";
	p->done(p);
}

enum store_result store_pg_read(struct store_pg *st, const char *room, int64_t after,
				unsigned limit, store_entry_fn each, void *ctx, int64_t *last,
				const char **why)
{
	(void)st, (void)room, (void)after, (void)limit, (void)each, (void)ctx;
	*last = 0;
	*why = "store: built without PostgreSQL";
	return STORE_FAILED;
}

bool store_pg_read_queue(struct store_pg *st, struct store_read *r)
{
	(void)st;
	r->result = STORE_FAILED;
	r->why = "store: built without PostgreSQL";
	r->done(r);
	return true;
}

int store_pg_data_version(struct store_pg *st, uint64_t *out)
{
	(void)st;
	*out = 0;
	return -1;
}

void store_pg_changed_rooms(struct store_pg *st, struct store_changes *out)
{
	(void)st;
	out->all = true;
	out->n = 0;
}

int store_pg_check(struct store_pg *st, char *why, size_t why_size)
{
	(void)st;
	snprintf(why, why_size, "store: built without PostgreSQL");
	return -1;
}

#else

#include "post_queue.h"
#include "read_queue.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * libpq is loaded when a PostgreSQL store is opened, not linked: with what
 * it pulls in (OpenSSL, GnuTLS, Kerberos, LDAP) it made some 5 MiB of a
 * backend's resident memory, used or not. Its soname has been libpq.so.5
 * since PostgreSQL 8.2.
 */
#define PQ_LIBRARY "libpq.so.5"
#define PQ_FUNCTIONS(X)                                                                            \
	X(PQclear)                                                                                 \
	X(PQconnectdbParams)                                                                       \
	X(PQconsumeInput)                                                                          \
	X(PQenterPipelineMode)                                                                     \
	X(PQerrorMessage)                                                                          \
	X(PQexec)                                                                                  \
	X(PQexecParams)                                                                            \
	X(PQexecPrepared)                                                                          \
	X(PQexitPipelineMode)                                                                      \
	X(PQfinish)                                                                                \
	X(PQfreemem)                                                                               \
	X(PQgetResult)                                                                             \
	X(PQgetisnull)                                                                             \
	X(PQgetlength)                                                                             \
	X(PQgetvalue)                                                                              \
	X(PQnotifies)                                                                              \
	X(PQntuples)                                                                               \
	X(PQpipelineStatus)                                                                        \
	X(PQpipelineSync)                                                                          \
	X(PQprepare)                                                                               \
	X(PQresultErrorField)                                                                      \
	X(PQresultStatus)                                                                          \
	X(PQsendQueryParams)                                                                       \
	X(PQsendQueryPrepared)                                                                     \
	X(PQsetNoticeProcessor)                                                                    \
	X(PQsetnonblocking)                                                                        \
	X(PQsocket)                                                                                \
	X(PQstatus)                                                                                \
	X(PQtransactionStatus)

#define PQ_SLOT(f) __typeof__(f) *f;
static struct {
	PQ_FUNCTIONS(PQ_SLOT)
} pq_fn;

static pthread_once_t pq_once = PTHREAD_ONCE_INIT;
static char pq_error[256]; /* empty once libpq is loaded */

static void pq_load(void)
{
	void *lib = dlopen(PQ_LIBRARY, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *why = dlerror();
		snprintf(pq_error, sizeof pq_error, "%s", why ? why : PQ_LIBRARY);
		return;
	}
	/* dlsym's void * becomes a function pointer as POSIX says: by bytes. */
#define PQ_RESOLVE(f)                                                                              \
	if (!pq_error[0]) {                                                                        \
		void *sym = dlsym(lib, #f);                                                        \
		if (sym)                                                                           \
			memcpy(&pq_fn.f, &sym, sizeof sym);                                        \
		else                                                                               \
			snprintf(pq_error, sizeof pq_error, "%s has no %s", PQ_LIBRARY, #f);       \
	}
	PQ_FUNCTIONS(PQ_RESOLVE)
#undef PQ_RESOLVE
	/* Never unloaded: its threads' state and atexit handlers stay valid. */
}

/* From here on, every PQ call goes through the loaded library. */
#define PQclear                       pq_fn.PQclear
#define PQconnectdbParams             pq_fn.PQconnectdbParams
#define PQconsumeInput                pq_fn.PQconsumeInput
#define PQenterPipelineMode           pq_fn.PQenterPipelineMode
#define PQerrorMessage                pq_fn.PQerrorMessage
#define PQexec                        pq_fn.PQexec
#define PQexecParams                  pq_fn.PQexecParams
#define PQexecPrepared                pq_fn.PQexecPrepared
#define PQexitPipelineMode            pq_fn.PQexitPipelineMode
#define PQfinish                      pq_fn.PQfinish
#define PQfreemem                     pq_fn.PQfreemem
#define PQgetResult                   pq_fn.PQgetResult
#define PQgetisnull                   pq_fn.PQgetisnull
#define PQgetlength                   pq_fn.PQgetlength
#define PQgetvalue                    pq_fn.PQgetvalue
#define PQnotifies                    pq_fn.PQnotifies
#define PQntuples                     pq_fn.PQntuples
#define PQpipelineStatus              pq_fn.PQpipelineStatus
#define PQpipelineSync                pq_fn.PQpipelineSync
#define PQprepare                     pq_fn.PQprepare
#define PQresultErrorField            pq_fn.PQresultErrorField
#define PQresultStatus                pq_fn.PQresultStatus
#define PQsendQueryParams             pq_fn.PQsendQueryParams
#define PQsendQueryPrepared           pq_fn.PQsendQueryPrepared
#define PQsetNoticeProcessor          pq_fn.PQsetNoticeProcessor
#define PQsetnonblocking              pq_fn.PQsetnonblocking
#define PQsocket                      pq_fn.PQsocket
#define PQstatus                      pq_fn.PQstatus
#define PQtransactionStatus           pq_fn.PQtransactionStatus

/* Step i brings a database from version i to i + 1; never edited once
 * released. The version lives in a table of its own. */
static const char *const migrations[STORE_PG_SCHEMA_VERSION] = {
    /* 1: rooms and their entries */
    "CREATE TABLE rooms(name text PRIMARY KEY, last_seq bigint NOT NULL);"
    "CREATE TABLE entries(room text NOT NULL, seq bigint NOT NULL, role smallint NOT NULL,"
    " text bytea NOT NULL, time_ms bigint NOT NULL, client_id text, PRIMARY KEY(room, seq));",
    /* 2: the first answer to each (room, client id), for idempotent retries */
    "CREATE TABLE posts(room text NOT NULL, client_id text NOT NULL, seq bigint NOT NULL,"
    " answer bytea NOT NULL, PRIMARY KEY(room, client_id));"
    "CREATE INDEX posts_by_seq ON posts(room, seq);",
};

/* Taken while migrating, so that nodes starting together migrate once. */
#define MIGRATION_LOCK                "7419230461"
#define CHANNEL                       "chat_fcgi"
/* After a failed connection attempt, requests fail at once for this long
 * rather than each trying again. */
#define RETRY_MS                      250
/* No statement may hold a thread longer than this. */
#define STORE_PG_STATEMENT_TIMEOUT_MS 5000
/* The listening connection, when lost, is tried again this often. */
#define LISTEN_RETRY_MS               200
/* Group commit: one batch of posts is written at a time, on a connection
 * of the pool (the rest stay for reads), by the posting thread, and this
 * is the most posts one batch takes. One at a time: two batches mostly
 * share a room, so the second waits for the first's
 * locks anyway and holds its other rooms meanwhile; and batches of rooms
 * kept apart (a writer per share of the rooms) are smaller, so more
 * transactions for as many posts. Measured on the store alone, 8 threads:
 * one writer carried the most posts, two or four fewer (though that was
 * while every batch scanned the whole table: see pg_connect). */
#define STORE_PG_BATCH_MAX            64
/*
 * Queued reads (store_read_queue) are made by this many threads of the
 * store's own, each holding one connection of the pool while it reads.
 * With the posting thread's one, the store's own threads need fewer
 * connections than the pool has, so they never wait on each other for
 * one: the writer finds one while both readers hold theirs, and a reader
 * while the writer and the other reader hold theirs. Threads outside the
 * store (store_read, store_check) take the rest, or more while the
 * store's threads are idle; then a thread may wait in conn_get for a
 * statement to end, and gives up after STORE_BUSY_TIMEOUT_MS.
 */
#define STORE_PG_READERS              2
_Static_assert(STORE_PG_READERS + 1 < STORE_PG_POOL,
	       "the readers and the writer leave a connection of the pool free");
/* Rooms whose last seq a process remembers (more share slots, and only
 * cost a round trip when they collide). */
#define SEEN_ROOMS                    256

#define STR_(x)      #x
#define STR(x)       STR_(x)

/*
 * The statements of a batch of posts (see batch_tx), each taking the
 * batch's posts or rooms as arrays: a few statements a batch, whatever its
 * size. This one locks the rooms' rows, in the order given, until the end
 * of the transaction, and reads their last seq: posts to one room take
 * turns on every node, one batch at a time.
 */
static const char lock_sql[] =
    "INSERT INTO rooms(name, last_seq) SELECT n, 0 FROM unnest($1::text[]) n"
    " ON CONFLICT(name) DO UPDATE SET last_seq = rooms.last_seq RETURNING name, last_seq";
/* A statement of its own, after the locks: it sees what the previous
 * holders committed (READ COMMITTED takes a snapshot per statement). i is
 * the position (from 1) of the (room, client id) pair found. */
static const char find_post_sql[] =
    "SELECT v.i, p.answer FROM unnest($1::text[], $2::text[]) WITH ORDINALITY v(room, cid, i)"
    " JOIN posts p ON p.room = v.room AND p.client_id = v.cid";
/* The posts (v: room, user seq, texts, client id, answer) and the rooms'
 * new last seq (r). A statement does not see its own inserts, so entries
 * and answers already past the history are not inserted rather than
 * deleted; older ones are. With $12, only those the batch pushes out of
 * it, above the room's last seq before the batch less the history: the
 * batch before took the rest. A deleted row stays in the index until
 * vacuum, and a delete of everything below the cut-off stepped over all of
 * them, on every batch (the rooms of bench/store-compare read about 24
 * index pages each, 5,000 entries after the start: half the statement).
 * Without $12 (a room this process has not posted to, when the rows below
 * may be any: a shorter --room-history than before, another node's
 * posts), everything below. g checks what the numbers were reckoned from:
 * each room's last seq was $11 and no post has its client id stored yet;
 * if not, the division by zero undoes the statement (and the transaction:
 * see batch_tx's guess). */
static const char store_sql[] =
    "WITH v AS (SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::bytea[],"
    "   $5::text[], $6::bytea[]) v(room, seq, text, reply, cid, answer)),"
    " r AS (SELECT * FROM unnest($8::text[], $9::int8[], $11::int8[]) r(name, last, was)),"
    " e AS (INSERT INTO entries(room, seq, role, text, time_ms, client_id)"
    "  SELECT v.room, v.seq + k.role, k.role, CASE k.role WHEN 0 THEN v.text ELSE v.reply END,"
    "   $7::bigint, v.cid FROM v JOIN r ON r.name = v.room"
    "   CROSS JOIN (VALUES (0::smallint), (1::smallint)) k(role)"
    "  WHERE v.seq + k.role > r.last - $10::bigint),"
    " u AS (UPDATE rooms SET last_seq = r.last FROM r WHERE rooms.name = r.name),"
    " d AS (DELETE FROM entries USING r"
    "  WHERE entries.room = r.name AND entries.seq <= r.last - $10::bigint"
    "  AND entries.seq > CASE WHEN $12::bool THEN r.was - $10::bigint ELSE 0 END),"
    " p AS (DELETE FROM posts USING r"
    "  WHERE posts.room = r.name AND posts.seq <= r.last - $10::bigint"
    "  AND posts.seq > CASE WHEN $12::bool THEN r.was - $10::bigint ELSE 0 END),"
    " a AS (INSERT INTO posts(room, client_id, seq, answer)"
    "  SELECT v.room, v.cid, v.seq, v.answer FROM v JOIN r ON r.name = v.room"
    "  WHERE v.cid IS NOT NULL AND v.seq > r.last - $10::bigint),"
    " g AS (SELECT NOT EXISTS (SELECT 1 FROM r"
    "   LEFT JOIN rooms ON rooms.name = r.name WHERE rooms.last_seq IS DISTINCT FROM r.was)"
    "  AND NOT EXISTS (SELECT 1 FROM v JOIN posts p ON p.room = v.room AND p.client_id = v.cid)"
    "  AS ok)"
    " SELECT 1 / g.ok::int FROM g";
/* After the commit, in a transaction of its own: NOTIFY takes a lock
 * global to the database server from its transaction's commit to its end,
 * so inside the posts' it would make every batch wait for the previous
 * one's flush to disk, on every node. That transaction need not wait for
 * a flush itself: notifications do not outlive a restart anyway, and the
 * posts' commit was flushed before it runs. Listeners hear of a post only
 * once it is committed. */
static const char notify_sql[] =
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify('" CHANNEL "', $1::text)";
/* One statement, so one snapshot: the entries and the room's last seq
 * agree. Sequence numbers have no gaps and retention drops only the
 * oldest, so the newest limit entries are those above last - limit. */
static const char read_sql[] =
    "SELECT l.last, e.seq, e.role, e.text, e.time_ms, e.client_id FROM"
    " (SELECT coalesce((SELECT last_seq FROM rooms WHERE name = $1::text), 0) AS last) l"
    " LEFT JOIN LATERAL (SELECT seq, role, text, time_ms, client_id FROM entries"
    "  WHERE room = $1::text AND seq > CASE WHEN $2::bigint < 0"
    "   THEN greatest(l.last - $3::bigint, 0) ELSE $2::bigint END"
    "  ORDER BY seq LIMIT $3::bigint) e ON true"
    " ORDER BY e.seq";

/* Prepared once per connection: parsed and planned once, not per post. */
static const struct {
	const char *name, *sql;
	int params;
} statements[] = {
    {"chat_lock", lock_sql, 1}, {"chat_find", find_post_sql, 2}, {"chat_store", store_sql, 12},
    {"chat_read", read_sql, 3}, {"chat_notify", notify_sql, 1},
};

struct conn {
	PGconn *pq;
	bool prepared; /* the statements above are prepared on it */
	struct conn *next;
};

/* A post of the batch being written, and what the writing learns of it. */
struct pending {
	struct store_post *post;
	bool settled;      /* its result is known whatever the batch does */
	size_t room_ix;    /* its room in the batch's sorted rooms */
	int64_t seq;       /* its user entry's; 0 when it stores nothing */
	const char *found; /* its stored answer, in the lookup's result */
	size_t found_len;
};

struct store_pg {
	struct store base; /* first: see store_impl.h */
	char *uri;
	struct store_options opt;

	pthread_mutex_t lock; /* guards what follows, up to version */
	pthread_cond_t freed; /* a connection went idle or was closed */
	struct conn *idle;    /* connections no thread is using */
	unsigned open;        /* connections open or being opened */
	uint64_t failed_ms;   /* when the last attempt failed; 0: it worked */
	char last_error[256]; /* libpq's word on that attempt */

	/* Group commit: posts queue here, and a thread of the store's own
	 * writes the oldest STORE_PG_BATCH_MAX as one batch, then the next.
	 * Requests do not wait for their commit (store_post_queue), so how
	 * many posts a batch carries is not capped by the request threads. */
	struct post_queue posts;
	/* Reads queued by the server, made by STORE_PG_READERS threads. */
	struct read_queue reads;
	/* The batch being written: only the posting thread touches it. */
	struct pending batch[STORE_PG_BATCH_MAX], *batch_v[STORE_PG_BATCH_MAX];
	/* Each room's last seq as this process's batches left it, for the
	 * next batch's guess (see batch_tx); only the posting thread
	 * touches it. */
	struct seen_room {
		char *name;
		int64_t last;
	} seen[SEEN_ROOMS];

	_Atomic uint64_t version; /* notifications seen, and listener losses */
	/* The rooms the notifications named since store_pg_changed_rooms last
	 * took them, or all when the listener lost track. */
	pthread_mutex_t changes_lock;
	struct store_changes changes;
	pthread_t listener;
	bool listener_started;
	int wake[2];       /* written to stop the listener */
	PGconn *listening; /* its first connection, until it starts */
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t unix_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libpq prints notices (CREATE ... IF NOT EXISTS) on stderr otherwise. */
static void quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* The first line of libpq's message, which says what went wrong. */
static void first_line(char *out, size_t size, const char *msg)
{
	size_t n = strcspn(msg, "\n");
	if (n >= size)
		n = size - 1;
	memcpy(out, msg, n);
	out[n] = '\0';
}

/*
 * A new connection: short connect timeout and TCP keep-alives unless the
 * URI says otherwise; UTF-8 and synchronous commit whatever it says, so an
 * answered post is on the server's disk; and waits for locks and
 * statements bounded, so that no request thread is held for long. The
 * prepared statements keep one generic plan: the batch's statements take
 * arrays, whose values tell the planner nothing, and planning them anew
 * per run cost more than running them (a direct benchmark of the store:
 * about a third more posts per second). That plan is made when the
 * connection prepares it, often while the tables are new and their
 * statistics say they are tiny, and is kept until they are analyzed: it
 * read every entry of the table (a sequential scan) to trim the history,
 * 3 ms a batch at 10,000 entries and growing with the table. Every
 * statement here looks rows up by key, so scans are disabled outright.
 */
static PGconn *pg_connect(const char *uri, char *err, size_t err_size)
{
	static const char *const keys[] = {"connect_timeout",
					   "application_name",
					   "keepalives_idle",
					   "keepalives_interval",
					   "keepalives_count",
					   "gssencmode",
					   "dbname",
					   "client_encoding",
					   NULL};
	const char *const vals[] = {STR(STORE_PG_CONNECT_TIMEOUT_S),
				    "chat-fcgi",
				    "10",
				    "5",
				    "3",
				    "disable",
				    uri,
				    "UTF8",
				    NULL};
	PGconn *pq = PQconnectdbParams(keys, vals, 1);
	if (!pq) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	if (PQstatus(pq) != CONNECTION_OK) {
		first_line(err, err_size, PQerrorMessage(pq));
		PQfinish(pq);
		return NULL;
	}
	PQsetNoticeProcessor(pq, quiet, NULL);
	PGresult *r = PQexec(pq, "SET synchronous_commit = on;"
				 "SET plan_cache_mode = force_generic_plan;"
				 "SET enable_seqscan = off;"
				 "SET lock_timeout = " STR(
				     STORE_BUSY_TIMEOUT_MS) ";"
							    "SET statement_timeout = " STR(
								STORE_PG_STATEMENT_TIMEOUT_MS));
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (!ok) {
		first_line(err, err_size, PQerrorMessage(pq));
		PQfinish(pq);
		return NULL;
	}
	return pq;
}

/* A connection for this thread: an idle one, or a new one while fewer
 * than STORE_PG_POOL are open; else waits for one, a while. */
static struct conn *conn_get(struct store_pg *st, const char **why)
{
	uint64_t until = mono_ms() + STORE_BUSY_TIMEOUT_MS;
	pthread_mutex_lock(&st->lock);
	while (!st->idle && st->open >= STORE_PG_POOL) {
		uint64_t now = mono_ms();
		if (now >= until) {
			pthread_mutex_unlock(&st->lock);
			*why = "store: every PostgreSQL connection stayed busy";
			return NULL;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t left = until - now;
		ts.tv_sec += (time_t)(left / 1000u);
		ts.tv_nsec += (long)(left % 1000u) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&st->freed, &st->lock, &ts);
	}
	struct conn *c = st->idle;
	if (c) {
		st->idle = c->next;
		pthread_mutex_unlock(&st->lock);
		c->next = NULL;
		return c;
	}
	if (st->failed_ms && mono_ms() - st->failed_ms < RETRY_MS) {
		pthread_mutex_unlock(&st->lock);
		*why = "store: cannot connect to PostgreSQL";
		return NULL;
	}
	st->open++;
	pthread_mutex_unlock(&st->lock);

	char err[sizeof st->last_error];
	c = calloc(1, sizeof *c);
	PGconn *pq = c ? pg_connect(st->uri, err, sizeof err) : NULL;
	if (!c)
		snprintf(err, sizeof err, "out of memory");
	pthread_mutex_lock(&st->lock);
	if (!pq) {
		st->open--;
		st->failed_ms = mono_ms();
		memcpy(st->last_error, err, sizeof err);
		pthread_cond_signal(&st->freed);
	} else {
		st->failed_ms = 0;
	}
	pthread_mutex_unlock(&st->lock);
	if (!pq) {
		free(c);
		*why = "store: cannot connect to PostgreSQL";
		return NULL;
	}
	c->pq = pq;
	return c;
}

static void close_all(struct conn *list)
{
	while (list) {
		struct conn *c = list;
		list = c->next;
		PQfinish(c->pq);
		free(c);
	}
}

/* Back to the pool; a connection that is broken, or still inside a
 * transaction it could not end, is closed instead. One that was lost takes
 * the idle ones with it: the server restarted, most likely, and they are
 * dead too, which the next requests would find out one 503 at a time. */
static void conn_put(struct store_pg *st, struct conn *c)
{
	bool gone = PQstatus(c->pq) != CONNECTION_OK;
	bool sound = !gone && PQtransactionStatus(c->pq) == PQTRANS_IDLE &&
		     PQpipelineStatus(c->pq) == PQ_PIPELINE_OFF;
	struct conn *drop = NULL;
	pthread_mutex_lock(&st->lock);
	if (sound) {
		c->next = st->idle;
		st->idle = c;
	} else {
		c->next = NULL;
		drop = c;
		st->open--;
		if (gone) {
			for (struct conn *i = st->idle; i; i = i->next)
				st->open--;
			c->next = st->idle;
			st->idle = NULL;
		}
	}
	pthread_cond_broadcast(&st->freed);
	pthread_mutex_unlock(&st->lock);
	close_all(drop);
}

static bool lost(PGconn *pq)
{
	return PQstatus(pq) != CONNECTION_OK;
}

/* A static sentence for the log, for a statement that failed. */
static const char *failure(PGconn *pq, const PGresult *r)
{
	if (lost(pq))
		return "store: the connection to PostgreSQL was lost";
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	if (state && (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0))
		return "store: the room stayed locked past the busy timeout";
	if (state && strncmp(state, "53", 2) == 0)
		return "store: PostgreSQL is out of disk, memory or connections";
	if (state && strncmp(state, "57", 2) == 0)
		return "store: PostgreSQL is shutting down or starting";
	if (state && strncmp(state, "25006", 5) == 0)
		return "store: PostgreSQL is read-only (a standby?)";
	if (state && strncmp(state, "42", 2) == 0)
		return "store: the PostgreSQL schema is not as expected";
	return "store: PostgreSQL failed";
}

/* Runs a statement with parameters (text, or bytes where len is given)
 * and binary results. NULL on failure, with *why set. */
static PGresult *run(PGconn *pq, const char *sql, int n, const char *const *vals, const int *lens,
		     const int *fmts, ExecStatusType want, const char **why)
{
	PGresult *r = PQexecParams(pq, sql, n, NULL, vals, lens, fmts, 1);
	if (PQresultStatus(r) == want)
		return r;
	*why = r ? failure(pq, r) : "store: out of memory";
	PQclear(r);
	return NULL;
}

static bool run_plain(PGconn *pq, const char *sql, const char **why)
{
	PGresult *r = PQexec(pq, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		*why = r ? failure(pq, r) : "store: out of memory";
	PQclear(r);
	return ok;
}

/* Ends a failed transaction; a connection that cannot is closed by
 * conn_put, which sees it still inside one. */
static void rollback(PGconn *pq)
{
	if (PQtransactionStatus(pq) == PQTRANS_IDLE || lost(pq))
		return;
	PGresult *r = PQexec(pq, "ROLLBACK");
	PQclear(r);
}

static bool prepare(struct conn *c, const char **why)
{
	for (size_t i = 0; !c->prepared && i < sizeof statements / sizeof statements[0]; i++) {
		PGresult *r = PQprepare(c->pq, statements[i].name, statements[i].sql,
					statements[i].params, NULL);
		bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		if (!ok)
			*why = r ? failure(c->pq, r) : "store: out of memory";
		PQclear(r);
		if (!ok)
			return false;
	}
	c->prepared = true;
	return true;
}

/* One statement of a pipeline: a prepared one with its parameters (text,
 * or bytes where fmts says 1), or plain SQL without any. */
struct call {
	const char *stmt;
	bool prepared;
	int n;
	const char *const *vals;
	const int *lens;
	const int *fmts;
	ExecStatusType want;
};

/*
 * Sends the calls in one go and reads their results (binary): one round
 * trip instead of one each. res[i] is call i's result, NULL if none came.
 * The server runs them in order, each with a snapshot of its own, and
 * skips the rest once one fails. Returns true when all did as wanted;
 * else *why says how.
 */
static bool pipeline(PGconn *pq, size_t n, const struct call *calls, PGresult **res,
		     const char **why)
{
	for (size_t i = 0; i < n; i++)
		res[i] = NULL;
	if (!PQenterPipelineMode(pq)) {
		*why = failure(pq, NULL);
		return false;
	}
	size_t sent = 0;
	for (; sent < n; sent++) {
		const struct call *c = &calls[sent];
		int ok = c->prepared
			     ? PQsendQueryPrepared(pq, c->stmt, c->n, c->vals, c->lens, c->fmts, 1)
			     : PQsendQueryParams(pq, c->stmt, 0, NULL, NULL, NULL, NULL, 1);
		if (!ok)
			break;
	}
	bool synced = PQpipelineSync(pq) == 1;
	bool good = sent == n && synced;
	if (!good)
		*why = failure(pq, NULL);
	for (size_t i = 0; synced && i < sent; i++) {
		PGresult *r;
		while ((r = PQgetResult(pq)) != NULL) {
			if (!res[i])
				res[i] = r;
			else
				PQclear(r);
		}
		if (good && (!res[i] || PQresultStatus(res[i]) != calls[i].want)) {
			*why = failure(pq, res[i]);
			good = false;
		}
	}
	if (synced && !lost(pq)) {
		PGresult *r = PQgetResult(pq); /* the sync point */
		PQclear(r);
	}
	/* Fails only with results left unread: conn_put then closes it. */
	PQexitPipelineMode(pq);
	return good;
}

static void clear_all(size_t n, PGresult **res)
{
	for (size_t i = 0; i < n; i++)
		PQclear(res[i]);
}

static int64_t be64(const char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | (unsigned char)p[i];
	return (int64_t)v;
}

static int64_t int_field(const PGresult *r, int row, int col)
{
	const char *p = PQgetvalue(r, row, col);
	switch (PQgetlength(r, row, col)) {
	case 8:
		return be64(p);
	case 4:
		return (int32_t)((uint32_t)(unsigned char)p[0] << 24 |
				 (uint32_t)(unsigned char)p[1] << 16 |
				 (uint32_t)(unsigned char)p[2] << 8 | (unsigned char)p[3]);
	case 2:
		return (int16_t)((uint16_t)((unsigned char)p[0] << 8 | (unsigned char)p[1]));
	default:
		return 0;
	}
}

/* A room of a batch: locked in name order (strcmp's) by every batch on
 * every node, so that two batches never wait for each other in a cycle. */
struct room_slot {
	const char *name;
	int64_t last; /* its last seq so far in this transaction */
	int64_t was;  /* its last seq before this transaction */
	bool locked;  /* its row came back from chat_lock */
	bool stored;  /* some post of the batch stores entries in it */
};

/* FNV-1a: a room's slot in seen. */
static uint32_t room_hash(const char *room)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)room; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

static bool seen_get(struct store_pg *st, const char *room, int64_t *last)
{
	struct seen_room *s = &st->seen[room_hash(room) % SEEN_ROOMS];
	if (!s->name || strcmp(s->name, room) != 0)
		return false;
	*last = s->last;
	return true;
}

static void seen_set(struct store_pg *st, const char *room, int64_t last)
{
	struct seen_room *s = &st->seen[room_hash(room) % SEEN_ROOMS];
	if (!s->name || strcmp(s->name, room) != 0) {
		char *copy = strdup(room);
		if (!copy)
			return; /* the next batch to this room asks */
		free(s->name);
		s->name = copy;
	}
	s->last = last;
}

static void seen_drop(struct store_pg *st, const char *room)
{
	struct seen_room *s = &st->seen[room_hash(room) % SEEN_ROOMS];
	if (s->name && strcmp(s->name, room) == 0) {
		free(s->name);
		s->name = NULL;
	}
}

static int room_cmp(const void *a, const void *b)
{
	return strcmp(((const struct room_slot *)a)->name, ((const struct room_slot *)b)->name);
}

/* A one-dimensional array parameter in PostgreSQL's binary format. */
struct array {
	char *buf;
	size_t len, cap;
	bool failed; /* out of memory, or too long for a parameter */
};

/* Array element types: pg_type's OIDs, fixed since PostgreSQL began. */
#define OID_BYTEA    17u
#define OID_INT8     20u
#define OID_TEXT     25u

static void arr_put(struct array *a, const void *p, size_t n)
{
	if (a->failed)
		return;
	if (n > INT32_MAX - a->len) {
		a->failed = true;
		return;
	}
	if (a->len + n > a->cap) {
		size_t cap = a->cap ? a->cap : 256;
		while (cap < a->len + n)
			cap *= 2;
		char *buf = realloc(a->buf, cap);
		if (!buf) {
			a->failed = true;
			return;
		}
		a->buf = buf;
		a->cap = cap;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void arr_u32(struct array *a, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
			      (unsigned char)(v >> 8), (unsigned char)v};
	arr_put(a, b, sizeof b);
}

/* Dimensions 1, may hold NULLs, the element type, n elements from 1. */
static void arr_begin(struct array *a, uint32_t oid, size_t n)
{
	a->len = 0;
	a->failed = n > INT32_MAX;
	arr_u32(a, 1);
	arr_u32(a, 1);
	arr_u32(a, oid);
	arr_u32(a, (uint32_t)n);
	arr_u32(a, 1);
}

/* An element of n bytes; NULL when p is. */
static void arr_bytes(struct array *a, const char *p, size_t n)
{
	if (!p || n > INT32_MAX) {
		a->failed = a->failed || p;
		arr_u32(a, UINT32_MAX);
		return;
	}
	arr_u32(a, (uint32_t)n);
	arr_put(a, p, n);
}

/* Rewrites the 32-bit number at offset at (the header's). */
static void arr_u32_at(struct array *a, size_t at, uint32_t v)
{
	if (a->failed || a->len < at + 4)
		return;
	for (int i = 0; i < 4; i++)
		a->buf[at + (size_t)i] = (char)(unsigned char)(v >> (24 - 8 * i));
}

static void arr_int8(struct array *a, int64_t v)
{
	arr_u32(a, 8);
	arr_u32(a, (uint32_t)((uint64_t)v >> 32));
	arr_u32(a, (uint32_t)v);
}

/* The parameters of a batch's statements, kept from batch to batch. */
#define BATCH_ARRAYS 12
struct batch_bufs {
	struct array arr[BATCH_ARRAYS];
};

static void batch_bufs_free(struct batch_bufs *b)
{
	for (size_t i = 0; i < BATCH_ARRAYS; i++)
		free(b->arr[i].buf);
}

/* Its result: an answer kept on STORE_OK, dropped otherwise. */
static void settle(struct pending *p, enum store_result res, const char *why)
{
	if (res != STORE_OK) {
		free(p->post->answer);
		p->post->answer = NULL;
		p->post->replayed = false;
	}
	p->post->result = res;
	p->post->why = why;
	p->settled = true;
}

/* Every post not yet settled fails with why. */
static void fail_rest(struct pending **v, size_t n, const char *why)
{
	for (size_t i = 0; i < n; i++)
		if (!v[i]->settled)
			settle(v[i], STORE_FAILED, why);
}

/* Was the batch refused for what one of its posts holds (bad data, a
 * constraint), rather than for the database's state? Then the others
 * should not fail with it. */
static bool poisoned(PGconn *pq, size_t n, PGresult *const *res)
{
	if (lost(pq))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!res[i] || PQresultStatus(res[i]) != PGRES_FATAL_ERROR)
			continue;
		const char *state = PQresultErrorField(res[i], PG_DIAG_SQLSTATE);
		return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
	}
	return false;
}

enum batch_outcome {
	BATCH_DONE,  /* every post has its answer */
	BATCH_RETRY, /* nothing was done on a connection the server had dropped */
	BATCH_SPLIT, /* one post spoilt the transaction: write them one by one */
	BATCH_STALE  /* the guess was wrong: write them again without one */
};

/* An earlier post of the batch to the same room with the same client id
 * that has an answer: a retry that arrived alongside its first post. */
static const struct pending *first_of(struct pending *const *v, size_t i)
{
	const struct pending *p = v[i];
	for (size_t j = 0; j < i; j++) {
		const struct pending *q = v[j];
		if (q->post->answer && q->post->client_id && q->room_ix == p->room_ix &&
		    q->post->client_id_len == p->post->client_id_len &&
		    memcmp(q->post->client_id, p->post->client_id, p->post->client_id_len) == 0)
			return q;
	}
	return NULL;
}

/* The bytes of a text or bytea result field, and their length. */
static const char *field(const PGresult *r, int row, int col, size_t *len)
{
	*len = (size_t)PQgetlength(r, row, col);
	return PQgetvalue(r, row, col);
}

/*
 * Group commit: the posts of a batch in one transaction, so one flush of
 * the WAL for all of them, in two round trips. The first begins, locks
 * the rooms' rows (in name order) reading their last seq, then looks up
 * the client ids' stored answers (after the locks: the previous holders'
 * commits are visible). The second stores the posts and the rooms' last
 * seq, commits, and then notifies. A room's posts in one batch take
 * consecutive numbers in the order they queued; a retry queued with its
 * first post gets the first's answer. Each post's result is set, also
 * when another outcome is returned.
 *
 * With guess, and every room's last seq remembered from this process's
 * previous batches, the first round trip is skipped: the numbers are
 * reckoned from those, as if no client id were stored, and the second
 * round trip begins and locks first; its store statement checks both
 * (after the locks, in a snapshot of its own) and fails if either was
 * wrong (another node or process posted, a retry of an earlier batch's
 * post), and then nothing is kept: BATCH_STALE.
 */
static enum batch_outcome batch_tx(struct store_pg *st, PGconn *pq, struct pending **v, size_t n,
				   struct room_slot *rooms, struct batch_bufs *b, bool guess)
{
	size_t nrooms = 0, ncids = 0;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		/* A batch written again starts afresh. */
		free(p->post->answer);
		p->post->answer = NULL;
		p->post->replayed = false;
		*p = (struct pending){.post = p->post};
		size_t r = 0;
		while (r < nrooms && strcmp(rooms[r].name, p->post->room) != 0)
			r++;
		if (r == nrooms)
			rooms[nrooms++] = (struct room_slot){.name = p->post->room};
	}
	qsort(rooms, nrooms, sizeof *rooms, room_cmp);
	struct array *names = &b->arr[9], *find_rooms = &b->arr[10], *find_cids = &b->arr[11];
	arr_begin(names, OID_TEXT, nrooms);
	for (size_t r = 0; r < nrooms; r++)
		arr_bytes(names, rooms[r].name, strlen(rooms[r].name));
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		struct room_slot key = {.name = p->post->room};
		p->room_ix = (size_t)((struct room_slot *)bsearch(&key, rooms, nrooms,
								  sizeof *rooms, room_cmp) -
				      rooms);
		ncids += p->post->client_id != NULL;
	}
	arr_begin(find_rooms, OID_TEXT, ncids);
	arr_begin(find_cids, OID_TEXT, ncids);
	for (size_t i = 0; i < n; i++) {
		if (!v[i]->post->client_id)
			continue;
		arr_bytes(find_rooms, v[i]->post->room, strlen(v[i]->post->room));
		arr_bytes(find_cids, v[i]->post->client_id, v[i]->post->client_id_len);
	}
	if (names->failed || find_rooms->failed || find_cids->failed) {
		fail_rest(v, n, "store: out of memory");
		return BATCH_DONE;
	}

	static const int one_fmt[] = {1}, two_fmts[] = {1, 1};
	const char *lock_p[] = {names->buf};
	const int lock_lens[] = {(int)names->len};
	const struct call begin = {.stmt = "BEGIN ISOLATION LEVEL READ COMMITTED",
				   .want = PGRES_COMMAND_OK};
	const struct call lock = {.stmt = "chat_lock",
				  .prepared = true,
				  .n = 1,
				  .vals = lock_p,
				  .lens = lock_lens,
				  .fmts = one_fmt,
				  .want = PGRES_TUPLES_OK};
	for (size_t r = 0; r < nrooms && guess; r++)
		guess = seen_get(st, rooms[r].name, &rooms[r].last);
	PGresult *res[5];
	size_t ncalls = 0;
	const char *why = NULL;
	if (!guess) {
		const char *find_p[] = {find_rooms->buf, find_cids->buf};
		const int find_lens[] = {(int)find_rooms->len, (int)find_cids->len};
		const struct call first[] = {
		    begin,
		    lock,
		    {.stmt = "chat_find",
		     .prepared = true,
		     .n = 2,
		     .vals = find_p,
		     .lens = find_lens,
		     .fmts = two_fmts,
		     .want = PGRES_TUPLES_OK},
		};
		ncalls = ncids ? 3 : 2;
		if (!pipeline(pq, ncalls, first, res, &why)) {
			enum batch_outcome out = lost(pq)                    ? BATCH_RETRY
						 : poisoned(pq, ncalls, res) ? BATCH_SPLIT
									     : BATCH_DONE;
			clear_all(ncalls, res);
			fail_rest(v, n, why);
			return out;
		}
		for (int row = 0; row < PQntuples(res[1]); row++) {
			size_t len;
			const char *name = field(res[1], row, 0, &len);
			for (size_t r = 0; r < nrooms; r++)
				if (strlen(rooms[r].name) == len &&
				    memcmp(rooms[r].name, name, len) == 0) {
					rooms[r].last = int_field(res[1], row, 1);
					rooms[r].locked = true;
				}
		}
		bool sound = true;
		for (size_t r = 0; r < nrooms; r++)
			sound = sound && rooms[r].locked;
		/* The found answers, by their post's place among those with ids. */
		for (int row = 0; sound && ncids && row < PQntuples(res[2]); row++) {
			int64_t k = int_field(res[2], row, 0) - 1;
			for (size_t i = 0, j = 0; i < n && k >= 0; i++) {
				if (!v[i]->post->client_id)
					continue;
				if (j++ == (size_t)k) {
					v[i]->found = field(res[2], row, 1, &v[i]->found_len);
					break;
				}
			}
		}
		if (!sound) {
			clear_all(ncalls, res);
			fail_rest(v, n, "store: the PostgreSQL schema is not as expected");
			return BATCH_DONE;
		}
	}
	for (size_t r = 0; r < nrooms; r++)
		rooms[r].was = rooms[r].last;

	int64_t t = unix_ms();
	size_t stored = 0;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		const struct pending *first_post = NULL;
		size_t len = p->found_len;
		const char *src = p->found;
		if (!src && p->post->client_id && (first_post = first_of(v, i)) != NULL) {
			len = first_post->post->answer_len;
			src = first_post->post->answer;
		}
		if (src) {
			p->post->answer = malloc(len + 1);
			if (!p->post->answer) {
				settle(p, STORE_NOMEM, "store: out of memory");
				continue;
			}
			memcpy(p->post->answer, src, len);
			p->post->answer[len] = '\0';
			p->post->answer_len = len;
			p->post->replayed = true;
			/* Stored before this transaction: it stands whatever
			 * becomes of the batch. A first post of this batch
			 * stands only if the batch commits. */
			if (!first_post)
				settle(p, STORE_OK, NULL);
			continue;
		}

		struct room_slot *room = &rooms[p->room_ix];
		struct store_entry user = {.seq = room->last + 1,
					   .role = STORE_USER,
					   .text = p->post->text,
					   .text_len = p->post->text_len,
					   .time_ms = t,
					   .client_id = p->post->client_id,
					   .client_id_len = p->post->client_id_len};
		struct store_entry bot = user;
		bot.seq = user.seq + 1;
		bot.role = STORE_BOT;
		bot.text = p->post->reply;
		bot.text_len = p->post->reply_len;
		p->post->answer = p->post->build(p->post->ctx, &user, &bot, &p->post->answer_len);
		if (!p->post->answer) {
			settle(p, STORE_NOMEM, "store: out of memory");
			continue;
		}
		room->last = bot.seq;
		room->stored = true;
		p->seq = user.seq;
		stored++;
	}
	/* The found answers were copied: the results can go. */
	clear_all(ncalls, res);
	if (stored == 0) {
		/* Only replays (of this batch's own posts, when guessing: then
		 * none was stored): nothing to keep, nothing to flush. */
		rollback(pq);
		for (size_t i = 0; i < n; i++)
			if (!v[i]->settled)
				settle(v[i], STORE_OK, NULL);
		return BATCH_DONE;
	}

	struct array *a = &b->arr[0];
	for (size_t k = 0; k < 6; k++)
		arr_begin(&a[k],
			  k == 1             ? OID_INT8
			  : k == 4 || k == 0 ? OID_TEXT
					     : OID_BYTEA,
			  stored);
	arr_begin(&a[6], OID_TEXT, nrooms);
	arr_begin(&a[7], OID_INT8, nrooms);
	arr_begin(&a[8], OID_INT8, nrooms);
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		if (p->seq == 0)
			continue;
		arr_bytes(&a[0], p->post->room, strlen(p->post->room));
		arr_int8(&a[1], p->seq);
		arr_bytes(&a[2], p->post->text_len ? p->post->text : "", p->post->text_len);
		arr_bytes(&a[3], p->post->reply_len ? p->post->reply : "", p->post->reply_len);
		arr_bytes(&a[4], p->post->client_id, p->post->client_id_len);
		arr_bytes(&a[5], p->post->answer, p->post->answer_len);
	}
	/* The notification names every room stored in, so that other nodes
	 * wake only their waiters (store_pg_changed_rooms); NOTIFY's payload
	 * takes 8000 bytes, which a batch's rooms stay under. */
	char notify_rooms[STORE_PG_BATCH_MAX * (STORE_ROOM_MAX + 1) + 1];
	_Static_assert(sizeof notify_rooms < 8000, "the rooms of a batch fit a NOTIFY");
	size_t notify_len = 0;
	const char *notify_room = notify_rooms;
	size_t nstored_rooms = 0;
	for (size_t r = 0; r < nrooms; r++) {
		if (!rooms[r].stored)
			continue;
		size_t len = strlen(rooms[r].name);
		if (len <= STORE_ROOM_MAX && notify_len + len + 2 <= sizeof notify_rooms) {
			if (notify_len)
				notify_rooms[notify_len++] = ',';
			memcpy(notify_rooms + notify_len, rooms[r].name, len);
			notify_len += len;
		}
		nstored_rooms++;
		arr_bytes(&a[6], rooms[r].name, strlen(rooms[r].name));
		arr_int8(&a[7], rooms[r].last);
		arr_int8(&a[8], rooms[r].was);
	}
	/* The header said nrooms: rewritten with the rooms stored in. */
	arr_u32_at(&a[6], 12, (uint32_t)nstored_rooms);
	arr_u32_at(&a[7], 12, (uint32_t)nstored_rooms);
	arr_u32_at(&a[8], 12, (uint32_t)nstored_rooms);
	bool failed = false;
	for (size_t k = 0; k < BATCH_ARRAYS; k++)
		failed = failed || a[k].failed;
	if (failed) {
		fail_rest(v, n, "store: out of memory, or a batch too long");
		return BATCH_DONE;
	}
	char time_s[24], history_s[24];
	snprintf(time_s, sizeof time_s, "%lld", (long long)t);
	snprintf(history_s, sizeof history_s, "%u", st->opt.history);
	const char *store_p[] = {a[0].buf, a[1].buf,  a[2].buf, a[3].buf,
				 a[4].buf, a[5].buf,  time_s,   a[6].buf,
				 a[7].buf, history_s, a[8].buf, guess ? "t" : "f"};
	const int store_lens[] = {(int)a[0].len,
				  (int)a[1].len,
				  (int)a[2].len,
				  (int)a[3].len,
				  (int)a[4].len,
				  (int)a[5].len,
				  0,
				  (int)a[6].len,
				  (int)a[7].len,
				  0,
				  (int)a[8].len,
				  0};
	static const int store_fmts[] = {1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 0};
	notify_rooms[notify_len] = '\0';
	if (notify_len == 0)
		notify_room = "*";
	const char *notify_p[] = {notify_room};
	struct call second[5];
	size_t ns = 0;
	if (guess) {
		second[ns++] = begin;
		second[ns++] = lock;
	}
	second[ns++] = (struct call){.stmt = "chat_store",
				     .prepared = true,
				     .n = 12,
				     .vals = store_p,
				     .lens = store_lens,
				     .fmts = store_fmts,
				     .want = PGRES_TUPLES_OK};
	size_t commit_ix = ns;
	second[ns++] = (struct call){.stmt = "COMMIT", .want = PGRES_COMMAND_OK};
	second[ns++] = (struct call){.stmt = "chat_notify",
				     .prepared = true,
				     .n = 1,
				     .vals = notify_p,
				     .want = PGRES_TUPLES_OK};
	bool ok = pipeline(pq, ns, second, res, &why);
	/* Committed, even if the notification then failed (the connection
	 * was lost just after): the posts stand; held requests elsewhere see
	 * them at the next post or when their wait ends. */
	bool committed = res[commit_ix] && PQresultStatus(res[commit_ix]) == PGRES_COMMAND_OK;
	enum batch_outcome out = ok || committed         ? BATCH_DONE
				 : guess && !lost(pq)    ? BATCH_STALE
				 : poisoned(pq, ns, res) ? BATCH_SPLIT
							 : BATCH_DONE;
	clear_all(ns, res);
	for (size_t r = 0; r < nrooms; r++) {
		if (ok || committed)
			seen_set(st, rooms[r].name, rooms[r].last);
		else
			seen_drop(st, rooms[r].name);
	}
	if (ok || committed)
		for (size_t i = 0; i < n; i++)
			if (!v[i]->settled)
				settle(v[i], STORE_OK, NULL);
	fail_rest(v, n, why);
	return out;
}

/* Writes the posts of v on a connection of the pool: once more on a new
 * one if the server had dropped it, one by one if one of them spoilt the
 * batch (may_split). */
static void write_group(struct store_pg *st, struct pending **v, size_t n, bool may_split)
{
	struct room_slot *rooms = calloc(n, sizeof *rooms);
	struct batch_bufs bufs = {0};
	if (!rooms) {
		for (size_t i = 0; i < n; i++)
			settle(v[i], STORE_NOMEM, "store: out of memory");
		goto out;
	}
	for (int attempt = 0;; attempt++) {
		const char *why = NULL;
		struct conn *c = conn_get(st, &why);
		/* A guessing batch cannot be tried again once sent (it may have
		 * committed), so a connection the server closed while it was
		 * idle (a restart) is found out before: its end is readable. */
		if (c && (PQconsumeInput(c->pq) == 0 || lost(c->pq))) {
			conn_put(st, c);
			c = conn_get(st, &why);
		}
		if (!c) {
			for (size_t i = 0; i < n; i++)
				settle(v[i], STORE_FAILED, why);
			break;
		}
		enum batch_outcome o = BATCH_DONE;
		if (prepare(c, &why)) {
			o = batch_tx(st, c->pq, v, n, rooms, &bufs, true);
			if (o == BATCH_STALE) {
				rollback(c->pq);
				o = batch_tx(st, c->pq, v, n, rooms, &bufs, false);
			}
		} else {
			o = lost(c->pq) ? BATCH_RETRY : BATCH_DONE;
			for (size_t i = 0; i < n; i++)
				settle(v[i], STORE_FAILED, why);
		}
		rollback(c->pq);
		conn_put(st, c);
		if (o == BATCH_SPLIT && may_split && n > 1) {
			for (size_t i = 0; i < n; i++)
				write_group(st, &v[i], 1, false);
			break;
		}
		if (o != BATCH_RETRY || attempt > 0)
			break;
	}
out:
	free(rooms);
	batch_bufs_free(&bufs);
}

/* The store's thread writes a batch: its posts in the order they queued. */
static void write_queued(void *ctx, struct store_post *batch, size_t n)
{
	struct store_pg *st = ctx;
	size_t i = 0;
	for (struct store_post *p = batch; p && i < n; p = p->next, i++) {
		st->batch[i] = (struct pending){.post = p};
		st->batch_v[i] = &st->batch[i];
	}
	write_group(st, st->batch_v, i, true);
}

void store_pg_queue(struct store_pg *st, struct store_post *p)
{
	post_queue_push(&st->posts, p);
}

enum store_result store_pg_read(struct store_pg *st, const char *room, int64_t after,
				unsigned limit, store_entry_fn each, void *ctx, int64_t *last,
				const char **why)
{
	*last = 0;
	char after_s[24], limit_s[24];
	snprintf(after_s, sizeof after_s, "%lld", (long long)after);
	snprintf(limit_s, sizeof limit_s, "%u", limit);
	const char *p[] = {room, after_s, limit_s};
	PGresult *r = NULL;
	for (int attempt = 0; !r; attempt++) {
		struct conn *c = conn_get(st, why);
		if (!c)
			return STORE_FAILED;
		if (prepare(c, why))
			r = PQexecPrepared(c->pq, "chat_read", 3, p, NULL, NULL, 1);
		if (r && PQresultStatus(r) != PGRES_TUPLES_OK) {
			*why = failure(c->pq, r);
			PQclear(r);
			r = NULL;
		}
		/* A read changes nothing: a connection lost since its last
		 * use is worth one more try on a new one. */
		bool retry = !r && lost(c->pq) && attempt == 0;
		conn_put(st, c);
		if (!r && !retry)
			return STORE_FAILED;
	}
	enum store_result res = STORE_OK;
	bool stopped = false;
	int rows = PQntuples(r);
	if (rows > 0)
		*last = int_field(r, 0, 0);
	for (int i = 0; i < rows && res == STORE_OK && !stopped; i++) {
		if (PQgetisnull(r, i, 1))
			continue; /* the room has no entries past after */
		bool has_cid = !PQgetisnull(r, i, 5);
		struct store_entry e = {
		    .seq = int_field(r, i, 1),
		    .role = int_field(r, i, 2) == STORE_BOT ? STORE_BOT : STORE_USER,
		    .text = PQgetvalue(r, i, 3),
		    .text_len = (size_t)PQgetlength(r, i, 3),
		    .time_ms = int_field(r, i, 4),
		    .client_id = has_cid ? PQgetvalue(r, i, 5) : NULL,
		    .client_id_len = has_cid ? (size_t)PQgetlength(r, i, 5) : 0,
		};
		int go = each(ctx, &e);
		if (go < 0) {
			*why = "store: out of memory";
			res = STORE_NOMEM;
		}
		stopped = go > 0;
	}
	PQclear(r);
	return res;
}

/* A reader thread makes a queued read, or a check. */
static void read_queued(void *ctx, struct store_read *r)
{
	struct store_pg *st = ctx;
	if (!r->check) {
		r->result = store_pg_read(st, r->room, r->after, r->limit, r->each, r->ctx,
					  &r->last, &r->why);
		return;
	}
	if (store_pg_check(st, r->check_why, sizeof r->check_why) == 0) {
		r->check_why[0] = '\0'; /* a sentence only when the check failed */
		return;
	}
	r->result = STORE_FAILED;
	r->why = r->check_why;
}

bool store_pg_read_queue(struct store_pg *st, struct store_read *r)
{
	return read_queue_push(&st->reads, r);
}

int store_pg_data_version(struct store_pg *st, uint64_t *out)
{
	*out = atomic_load(&st->version);
	return 0;
}

void store_pg_changed_rooms(struct store_pg *st, struct store_changes *out)
{
	pthread_mutex_lock(&st->changes_lock);
	*out = st->changes;
	st->changes.all = false;
	st->changes.n = 0;
	pthread_mutex_unlock(&st->changes_lock);
}

/* The listener: a notification's payload, the rooms a batch stored in
 * (room names hold no comma), or "*" for more than fit. */
static void rooms_notified(struct store_pg *st, const char *payload)
{
	pthread_mutex_lock(&st->changes_lock);
	struct store_changes *c = &st->changes;
	for (const char *p = payload; !c->all;) {
		size_t len = strcspn(p, ",");
		if (len == 0 || len > STORE_ROOM_MAX || (len == 1 && *p == '*')) {
			c->all = true;
			break;
		}
		bool known = false;
		for (size_t i = 0; i < c->n && !known; i++)
			known = strlen(c->room[i]) == len && memcmp(c->room[i], p, len) == 0;
		if (!known && c->n == STORE_CHANGES_MAX) {
			c->all = true;
			break;
		}
		if (!known) {
			memcpy(c->room[c->n], p, len);
			c->room[c->n][len] = '\0';
			c->n++;
		}
		if (!p[len])
			break;
		p += len + 1;
	}
	pthread_mutex_unlock(&st->changes_lock);
}

/* The listener lost track (it connected again): any room may have changed. */
static void rooms_all(struct store_pg *st)
{
	pthread_mutex_lock(&st->changes_lock);
	st->changes.all = true;
	pthread_mutex_unlock(&st->changes_lock);
}

/* The schema version the database records (0: none yet); false when it
 * cannot be read (no such table: not a chat-fcgi database, or not yet). */
static bool read_version(PGconn *pq, int *version, const char **why)
{
	PGresult *r = run(pq, "SELECT coalesce(max(version), 0)::int4 FROM chat_fcgi_schema", 0,
			  NULL, NULL, NULL, PGRES_TUPLES_OK, why);
	if (!r)
		return false;
	*version = PQntuples(r) == 1 ? (int)int_field(r, 0, 0) : 0;
	PQclear(r);
	return true;
}

int store_pg_check(struct store_pg *st, char *why, size_t why_size)
{
	const char *w = NULL;
	int version = -1;
	bool ok = false;
	for (int attempt = 0; attempt < 2 && !ok; attempt++) {
		struct conn *c = conn_get(st, &w);
		if (!c) {
			pthread_mutex_lock(&st->lock);
			if (st->failed_ms && st->last_error[0])
				snprintf(why, why_size, "%s: %s", w, st->last_error);
			else
				snprintf(why, why_size, "%s", w);
			pthread_mutex_unlock(&st->lock);
			return -1;
		}
		ok = read_version(c->pq, &version, &w);
		bool retry = !ok && lost(c->pq);
		conn_put(st, c);
		if (!ok && !retry)
			break;
	}
	if (!ok) {
		snprintf(why, why_size, "%s", w);
		return -1;
	}
	if (version != STORE_PG_SCHEMA_VERSION) {
		snprintf(why, why_size, "store: the schema version changed to %d", version);
		return -1;
	}
	return 0;
}

/* Brings the schema up to STORE_PG_SCHEMA_VERSION in one transaction, under
 * an advisory lock, so that nodes starting together migrate it once. */
static int migrate(PGconn *pq, char *err, size_t err_size)
{
	const char *why = NULL;
	int version = 0;
	bool ok = run_plain(pq,
			    "BEGIN ISOLATION LEVEL READ COMMITTED;"
			    "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ");"
			    "CREATE TABLE IF NOT EXISTS chat_fcgi_schema(version integer NOT NULL)",
			    &why) &&
		  read_version(pq, &version, &why);
	if (!ok) {
		snprintf(err, err_size, "cannot read the schema version: %s", PQerrorMessage(pq));
		goto fail;
	}
	if (version > STORE_PG_SCHEMA_VERSION || version < 0) {
		snprintf(err, err_size,
			 "the PostgreSQL database has schema version %d, newer than this chat-fcgi "
			 "knows (%d): run a newer chat-fcgi, or use another database",
			 version, STORE_PG_SCHEMA_VERSION);
		goto fail;
	}
	for (int v = version; v < STORE_PG_SCHEMA_VERSION; v++) {
		if (!run_plain(pq, migrations[v], &why)) {
			snprintf(err, err_size, "cannot migrate to schema version %d: %s", v + 1,
				 PQerrorMessage(pq));
			goto fail;
		}
	}
	if (version < STORE_PG_SCHEMA_VERSION &&
	    !run_plain(pq,
		       "DELETE FROM chat_fcgi_schema;"
		       "INSERT INTO chat_fcgi_schema VALUES(" STR(STORE_PG_SCHEMA_VERSION) ")",
		       &why)) {
		snprintf(err, err_size, "cannot migrate: %s", PQerrorMessage(pq));
		goto fail;
	}
	if (!run_plain(pq, "COMMIT", &why)) {
		snprintf(err, err_size, "cannot migrate: %s", PQerrorMessage(pq));
		goto fail;
	}
	return 0;
fail:
	err[strcspn(err, "\n")] = '\0';
	rollback(pq);
	return -1;
}

/* A connection that LISTENs for posts. */
static PGconn *listen_connect(const char *uri, char *err, size_t err_size)
{
	PGconn *pq = pg_connect(uri, err, err_size);
	if (!pq)
		return NULL;
	PGresult *r = PQexec(pq, "LISTEN " CHANNEL);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (!ok || PQsetnonblocking(pq, 1) != 0) {
		first_line(err, err_size, PQerrorMessage(pq));
		PQfinish(pq);
		return NULL;
	}
	return pq;
}

/* Sleeps ms, or less if woken to stop; true when stopping. */
static bool nap(struct store_pg *st, int ms)
{
	struct pollfd p = {.fd = st->wake[0], .events = POLLIN};
	return poll(&p, 1, ms) > 0;
}

/*
 * LISTENs on a connection of its own and counts notifications. The count
 * also moves whenever that connection is lost or made again: posts may
 * have gone by unheard meanwhile, and held requests should look.
 */
static void *listen_loop(void *arg)
{
	struct store_pg *st = arg;
	PGconn *pq = st->listening; /* made by store_pg_open */
	st->listening = NULL;
	for (;;) {
		if (!pq) {
			char err[256];
			pq = listen_connect(st->uri, err, sizeof err);
			if (!pq) {
				if (nap(st, LISTEN_RETRY_MS))
					break;
				continue;
			}
			rooms_all(st);
			atomic_fetch_add(&st->version, 1);
		}
		struct pollfd p[2] = {{.fd = PQsocket(pq), .events = POLLIN},
				      {.fd = st->wake[0], .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR) {
			if (nap(st, LISTEN_RETRY_MS))
				break;
			continue;
		}
		if (p[1].revents)
			break;
		if (PQconsumeInput(pq) == 0 || lost(pq)) {
			PQfinish(pq);
			pq = NULL;
			rooms_all(st);
			atomic_fetch_add(&st->version, 1);
			continue;
		}
		PGnotify *n;
		while ((n = PQnotifies(pq)) != NULL) {
			rooms_notified(st, n->extra ? n->extra : "*");
			PQfreemem(n);
			atomic_fetch_add(&st->version, 1);
		}
	}
	PQfinish(pq);
	return NULL;
}

int store_pg_open(struct store_pg **out, const char *uri, const struct store_options *opt,
		  char *err, size_t err_size)
{
	*out = NULL;
	if (pthread_once(&pq_once, pq_load) != 0 || pq_error[0]) {
		snprintf(err, err_size, "cannot load libpq for the PostgreSQL store: %s",
			 pq_error[0] ? pq_error : "pthread_once failed");
		return -1;
	}
	struct store_pg *st = calloc(1, sizeof *st);
	if (!st || !(st->uri = strdup(uri))) {
		free(st);
		snprintf(err, err_size, "out of memory");
		return -1;
	}
	st->base.kind = STORE_KIND_PG;
	st->opt = *opt;
	st->wake[0] = st->wake[1] = -1;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->changes_lock, NULL);
	pthread_cond_init(&st->freed, NULL);
	atomic_init(&st->version, 1);

	char why[256];
	PGconn *pq = pg_connect(uri, why, sizeof why);
	if (!pq) {
		/* The URI may hold a password: name the server by libpq's
		 * message only. */
		snprintf(err, err_size, "cannot connect to the PostgreSQL store: %s", why);
		goto fail;
	}
	if (migrate(pq, err, err_size) != 0) {
		PQfinish(pq);
		goto fail;
	}
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		PQfinish(pq);
		snprintf(err, err_size, "out of memory");
		goto fail;
	}
	c->pq = pq;
	st->idle = c;
	st->open = 1;

	if (pipe(st->wake) != 0 || fcntl(st->wake[0], F_SETFD, FD_CLOEXEC) != 0 ||
	    fcntl(st->wake[1], F_SETFD, FD_CLOEXEC) != 0) {
		snprintf(err, err_size, "cannot make a pipe: %s", strerror(errno));
		goto fail;
	}
	st->listening = listen_connect(uri, why, sizeof why);
	if (!st->listening) {
		snprintf(err, err_size, "cannot listen for posts on PostgreSQL: %s", why);
		goto fail;
	}
	if (pthread_create(&st->listener, NULL, listen_loop, st) != 0) {
		snprintf(err, err_size, "cannot start the PostgreSQL listener thread");
		goto fail;
	}
	st->listener_started = true;
	if (post_queue_start(&st->posts, STORE_PG_BATCH_MAX, write_queued, st) != 0) {
		snprintf(err, err_size, "cannot start the PostgreSQL store's thread");
		goto fail;
	}
	if (read_queue_start(&st->reads, STORE_PG_READERS, read_queued, st) != 0) {
		snprintf(err, err_size, "cannot start the PostgreSQL store's reading threads");
		goto fail;
	}
	*out = st;
	return 0;
fail:
	store_pg_close(st);
	return -1;
}

void store_pg_close(struct store_pg *st)
{
	if (!st)
		return;
	/* The readers end once the reads they make are done, before the pool
	 * they use is closed; reads still queued fail as closing. */
	read_queue_stop(&st->reads);
	post_queue_stop(&st->posts); /* it writes what is still queued first */
	if (st->listener_started) {
		ssize_t w;
		do
			w = write(st->wake[1], "x", 1);
		while (w < 0 && errno == EINTR);
		pthread_join(st->listener, NULL);
	}
	PQfinish(st->listening);
	for (int i = 0; i < 2; i++)
		if (st->wake[i] >= 0)
			close(st->wake[i]);
	close_all(st->idle);
	for (size_t i = 0; i < SEEN_ROOMS; i++)
		free(st->seen[i].name);
	pthread_cond_destroy(&st->freed);
	pthread_mutex_destroy(&st->lock);
	free(st->uri);
	free(st);
}

#endif
