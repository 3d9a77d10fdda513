/*
 * The store on PostgreSQL (libpq), for several nodes sharing one database.
 * The same tables as the SQLite store; a post locks its room's row, which
 * serialises posts to one room across every node, so sequence numbers stay
 * gapless. Posts NOTIFY once committed; a thread per process LISTENs
 * and counts what arrives, which store_data_version returns.
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

enum store_result store_pg_post(struct store_pg *st, const char *room, const char *client_id,
				size_t client_id_len, const char *text, size_t text_len,
				const char *reply, size_t reply_len, store_answer_fn build,
				void *ctx, char **answer, size_t *answer_len, bool *replayed,
				const char **why)
{
	(void)st, (void)room, (void)client_id, (void)client_id_len, (void)text, (void)text_len;
	(void)reply, (void)reply_len, (void)build, (void)ctx, (void)answer_len, (void)replayed;
	*answer = NULL;
	*why = "store: built without PostgreSQL";
	return STORE_FAILED;
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

int store_pg_data_version(struct store_pg *st, uint64_t *out)
{
	(void)st;
	*out = 0;
	return -1;
}

int store_pg_check(struct store_pg *st, char *why, size_t why_size)
{
	(void)st;
	snprintf(why, why_size, "store: built without PostgreSQL");
	return -1;
}

#else

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

/* Step i brings a database from version i to i + 1; never edited once
 * released. The version lives in a table of its own. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
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
/* Group commit: batches of posts written at once, each on a connection of
 * the pool (the rest stay for reads), and the posts one batch takes. Two,
 * so that posts arriving during one batch's flush start the next at once. */
#define STORE_PG_WRITERS              2
#define STORE_PG_BATCH_MAX            64

#define STR_(x) #x
#define STR(x)  STR_(x)

/*
 * The statements of a batch of posts (see batch_tx). This one locks a
 * room's row until the end of the transaction and reads its last seq: posts
 * to one room take turns on every node, one batch at a time.
 */
static const char lock_sql[] =
    "INSERT INTO rooms(name, last_seq) VALUES($1::text, 0) ON CONFLICT(name)"
    " DO UPDATE SET last_seq = rooms.last_seq RETURNING last_seq";
static const char set_last_sql[] = "UPDATE rooms SET last_seq = $2::bigint WHERE name = $1::text";
/* A statement of its own, after the lock: it sees what the previous holder
 * committed (READ COMMITTED takes a snapshot per statement). */
static const char find_post_sql[] =
    "SELECT answer FROM posts WHERE room = $1::text AND client_id = $2::text";
static const char store_sql[] =
    "WITH e AS (INSERT INTO entries(room, seq, role, text, time_ms, client_id)"
    "  VALUES($1::text, $2::bigint, 0, $3::bytea, $5::bigint, $6::text),"
    "   ($1::text, $2::bigint + 1, 1, $4::bytea, $5::bigint, $6::text)),"
    " d AS (DELETE FROM entries WHERE room = $1::text AND seq <= $7::bigint),"
    " p AS (DELETE FROM posts WHERE room = $1::text AND seq <= $7::bigint),"
    " a AS (INSERT INTO posts(room, client_id, seq, answer)"
    "  SELECT $1::text, $6::text, $2::bigint, $8::bytea WHERE $6::text IS NOT NULL)"
    " SELECT 1";
/* After the commit, in a transaction of its own: NOTIFY takes a lock
 * global to the database server from its transaction's commit to its end,
 * so inside the post's it would make every post wait for the previous
 * one's flush to disk (no group commit: a third of the posts per second
 * with fsync on). Listeners hear of a post only once it is committed. */
static const char notify_sql[] = "SELECT pg_notify('" CHANNEL "', $1::text)";
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
    {"chat_lock", lock_sql, 1},      {"chat_set_last", set_last_sql, 2},
    {"chat_find", find_post_sql, 2}, {"chat_store", store_sql, 8},
    {"chat_read", read_sql, 3},      {"chat_notify", notify_sql, 1},
};

struct conn {
	PGconn *pq;
	bool prepared; /* the statements above are prepared on it */
	struct conn *next;
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

	/* Group commit: posts queue here; a thread that finds fewer than
	 * STORE_PG_WRITERS batches being written takes the queue as one. */
	pthread_mutex_t batch_lock;
	pthread_cond_t batch_done;
	struct pending *queue, **queue_tail; /* under batch_lock */
	unsigned writing;                    /* batches being written */

	_Atomic uint64_t version; /* notifications seen, and listener losses */
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

static int64_t now_ms(void)
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
 * statements bounded, so that no request thread is held for long.
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

/* A post waiting in store_pg_post for the batch that writes it. */
struct pending {
	const char *room;
	const char *client_id;
	size_t client_id_len;
	const char *text;
	size_t text_len;
	const char *reply;
	size_t reply_len;
	store_answer_fn build;
	void *ctx;
	char *answer;
	size_t answer_len;
	bool replayed;
	enum store_result res;
	const char *why;
	bool done; /* under batch_lock */
	struct pending *next;

	/* While its batch is written: */
	bool settled;   /* its result is known whatever the batch does */
	size_t room_ix; /* its room in the batch's sorted rooms */
	size_t find_ix; /* the result of its chat_find */
	int64_t seq;    /* its user entry's; 0 when it stores nothing */
	char seq_s[24], cutoff_s[24];
	const char *store_p[8];
	int store_lens[8];
	const char *find_p[2];
	int find_lens[2];
};

/* A room of a batch: locked in name order by every batch on every node,
 * so that two batches never wait for each other's rooms in a cycle. */
struct room_slot {
	const char *name;
	int64_t last; /* its last seq so far in this transaction */
	bool stored;  /* some post of the batch stores entries in it */
	char last_s[24];
	const char *p[2];
};

static int room_cmp(const void *a, const void *b)
{
	return strcmp(((const struct room_slot *)a)->name, ((const struct room_slot *)b)->name);
}

/* Its result: an answer kept on STORE_OK, dropped otherwise. */
static void settle(struct pending *p, enum store_result res, const char *why)
{
	if (res != STORE_OK) {
		free(p->answer);
		p->answer = NULL;
		p->replayed = false;
	}
	p->res = res;
	p->why = why;
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
	BATCH_SPLIT  /* one post spoilt the transaction: write them one by one */
};

/* An earlier post of the batch to the same room with the same client id
 * that has an answer: a retry that arrived alongside its first post. */
static const struct pending *first_of(struct pending *const *v, size_t i)
{
	const struct pending *p = v[i];
	for (size_t j = 0; j < i; j++) {
		const struct pending *q = v[j];
		if (q->answer && q->client_id && q->room_ix == p->room_ix &&
		    q->client_id_len == p->client_id_len &&
		    memcmp(q->client_id, p->client_id, p->client_id_len) == 0)
			return q;
	}
	return NULL;
}

/*
 * Group commit: the posts of a batch in one transaction, so one flush of
 * the WAL for all of them, in two round trips. The first begins, locks
 * each room's row (in name order) and reads its last seq, then looks up
 * the client ids' stored answers (after the locks: the previous holders'
 * commits are visible). The second stores each post, sets each room's
 * last seq, commits, and then notifies. A room's posts in one batch take
 * consecutive numbers in the order they queued; a retry queued with its
 * first post gets the first's answer. Each post's result is set, also
 * when another outcome is returned.
 */
static enum batch_outcome batch_tx(struct store_pg *st, PGconn *pq, struct pending **v, size_t n,
				   struct room_slot *rooms, struct call *calls, PGresult **res)
{
	size_t nrooms = 0, ncalls = 0;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		free(p->answer);
		*p = (struct pending){.room = p->room,
				      .client_id = p->client_id,
				      .client_id_len = p->client_id_len,
				      .text = p->text,
				      .text_len = p->text_len,
				      .reply = p->reply,
				      .reply_len = p->reply_len,
				      .build = p->build,
				      .ctx = p->ctx,
				      .next = p->next};
		if (p->text_len > INT32_MAX || p->reply_len > INT32_MAX ||
		    p->client_id_len > INT32_MAX) {
			settle(p, STORE_FAILED, "store: the message is too long");
			continue;
		}
		size_t r = 0;
		while (r < nrooms && strcmp(rooms[r].name, p->room) != 0)
			r++;
		if (r == nrooms)
			rooms[nrooms++] = (struct room_slot){.name = p->room};
	}
	qsort(rooms, nrooms, sizeof *rooms, room_cmp);

	calls[ncalls++] =
	    (struct call){.stmt = "BEGIN ISOLATION LEVEL READ COMMITTED", .want = PGRES_COMMAND_OK};
	for (size_t r = 0; r < nrooms; r++) {
		rooms[r].p[0] = rooms[r].name;
		calls[ncalls++] = (struct call){.stmt = "chat_lock",
						.prepared = true,
						.n = 1,
						.vals = rooms[r].p,
						.want = PGRES_TUPLES_OK};
	}
	static const int find_fmts[] = {0, 1};
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		if (p->settled)
			continue;
		struct room_slot key = {.name = p->room};
		p->room_ix = (size_t)((struct room_slot *)bsearch(&key, rooms, nrooms,
								  sizeof *rooms, room_cmp) -
				      rooms);
		if (!p->client_id)
			continue;
		p->find_p[0] = p->room;
		p->find_p[1] = p->client_id;
		p->find_lens[1] = (int)p->client_id_len;
		p->find_ix = ncalls;
		calls[ncalls++] = (struct call){.stmt = "chat_find",
						.prepared = true,
						.n = 2,
						.vals = p->find_p,
						.lens = p->find_lens,
						.fmts = find_fmts,
						.want = PGRES_TUPLES_OK};
	}
	if (nrooms == 0)
		return BATCH_DONE; /* every post was refused already */
	const char *why = NULL;
	if (!pipeline(pq, ncalls, calls, res, &why)) {
		enum batch_outcome out = lost(pq)                    ? BATCH_RETRY
					 : poisoned(pq, ncalls, res) ? BATCH_SPLIT
								     : BATCH_DONE;
		clear_all(ncalls, res);
		fail_rest(v, n, why);
		return out;
	}
	bool sound = true;
	for (size_t r = 0; r < nrooms; r++) {
		sound = sound && PQntuples(res[1 + r]) == 1;
		rooms[r].last = sound ? int_field(res[1 + r], 0, 0) : 0;
	}
	if (!sound) {
		clear_all(ncalls, res);
		fail_rest(v, n, "store: the PostgreSQL schema is not as expected");
		return BATCH_DONE;
	}

	int64_t t = now_ms();
	char time_s[24];
	snprintf(time_s, sizeof time_s, "%lld", (long long)t);
	size_t stored = 0;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		if (p->settled)
			continue;
		const struct pending *first = NULL;
		const PGresult *found = p->client_id ? res[p->find_ix] : NULL;
		size_t len = 0;
		const char *src = NULL;
		if (found && PQntuples(found) == 1) {
			len = (size_t)PQgetlength(found, 0, 0);
			src = PQgetvalue(found, 0, 0);
		} else if (p->client_id && (first = first_of(v, i)) != NULL) {
			len = first->answer_len;
			src = first->answer;
		}
		if (src) {
			p->answer = malloc(len + 1);
			if (!p->answer) {
				settle(p, STORE_NOMEM, "store: out of memory");
				continue;
			}
			memcpy(p->answer, src, len);
			p->answer[len] = '\0';
			p->answer_len = len;
			p->replayed = true;
			/* Stored before this transaction: it stands whatever
			 * becomes of the batch. A first post of this batch
			 * stands only if the batch commits. */
			if (!first)
				settle(p, STORE_OK, NULL);
			continue;
		}

		struct room_slot *room = &rooms[p->room_ix];
		struct store_entry user = {.seq = room->last + 1,
					   .role = STORE_USER,
					   .text = p->text,
					   .text_len = p->text_len,
					   .time_ms = t,
					   .client_id = p->client_id,
					   .client_id_len = p->client_id_len};
		struct store_entry bot = user;
		bot.seq = user.seq + 1;
		bot.role = STORE_BOT;
		bot.text = p->reply;
		bot.text_len = p->reply_len;
		p->answer = p->build(p->ctx, &user, &bot, &p->answer_len);
		if (!p->answer || p->answer_len > INT32_MAX) {
			settle(p, p->answer ? STORE_FAILED : STORE_NOMEM,
			       p->answer ? "store: the answer is too long"
					 : "store: out of memory");
			continue;
		}
		room->last = bot.seq;
		room->stored = true;
		p->seq = user.seq;
		stored++;
		/* Entries up to cutoff fall out of the history, and so do the
		 * stored answers of the posts that made them. */
		snprintf(p->seq_s, sizeof p->seq_s, "%lld", (long long)user.seq);
		snprintf(p->cutoff_s, sizeof p->cutoff_s, "%lld",
			 (long long)(bot.seq - (int64_t)st->opt.history));
		const char *vals[] = {p->room,
				      p->seq_s,
				      p->text_len ? p->text : "",
				      p->reply_len ? p->reply : "",
				      time_s,
				      p->client_id,
				      p->cutoff_s,
				      p->answer};
		const int lens[] = {0,
				    0,
				    (int)p->text_len,
				    (int)p->reply_len,
				    0,
				    (int)p->client_id_len,
				    0,
				    (int)p->answer_len};
		memcpy(p->store_p, vals, sizeof vals);
		memcpy(p->store_lens, lens, sizeof lens);
	}
	clear_all(ncalls, res);
	if (stored == 0) {
		/* Only replays: nothing to keep, nothing to flush. */
		rollback(pq);
		for (size_t i = 0; i < n; i++)
			if (!v[i]->settled)
				settle(v[i], STORE_OK, NULL);
		return BATCH_DONE;
	}

	static const int store_fmts[] = {0, 0, 1, 1, 0, 1, 0, 1};
	const char *notify_p[] = {NULL};
	ncalls = 0;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];
		if (p->seq == 0)
			continue;
		calls[ncalls++] = (struct call){.stmt = "chat_store",
						.prepared = true,
						.n = 8,
						.vals = p->store_p,
						.lens = p->store_lens,
						.fmts = store_fmts,
						.want = PGRES_TUPLES_OK};
	}
	for (size_t r = 0; r < nrooms; r++) {
		if (!rooms[r].stored)
			continue;
		notify_p[0] = rooms[r].name;
		snprintf(rooms[r].last_s, sizeof rooms[r].last_s, "%lld", (long long)rooms[r].last);
		rooms[r].p[1] = rooms[r].last_s;
		calls[ncalls++] = (struct call){.stmt = "chat_set_last",
						.prepared = true,
						.n = 2,
						.vals = rooms[r].p,
						.want = PGRES_COMMAND_OK};
	}
	size_t commit_ix = ncalls;
	calls[ncalls++] = (struct call){.stmt = "COMMIT", .want = PGRES_COMMAND_OK};
	/* The notification in a transaction of its own (see notify_sql),
	 * which need not wait for a flush: notifications do not outlive a
	 * restart anyway, and the posts' commit was flushed before it runs. */
	calls[ncalls++] = (struct call){.stmt = "BEGIN", .want = PGRES_COMMAND_OK};
	calls[ncalls++] =
	    (struct call){.stmt = "SET LOCAL synchronous_commit = off", .want = PGRES_COMMAND_OK};
	calls[ncalls++] = (struct call){.stmt = "chat_notify",
					.prepared = true,
					.n = 1,
					.vals = notify_p,
					.want = PGRES_TUPLES_OK};
	calls[ncalls++] = (struct call){.stmt = "COMMIT", .want = PGRES_COMMAND_OK};
	bool ok = pipeline(pq, ncalls, calls, res, &why);
	/* Committed, even if the notification then failed (the connection
	 * was lost just after): the posts stand; held requests elsewhere see
	 * them at the next post or when their wait ends. */
	bool committed = res[commit_ix] && PQresultStatus(res[commit_ix]) == PGRES_COMMAND_OK;
	enum batch_outcome out =
	    ok || committed || !poisoned(pq, ncalls, res) ? BATCH_DONE : BATCH_SPLIT;
	clear_all(ncalls, res);
	if (ok || committed) {
		for (size_t i = 0; i < n; i++)
			if (!v[i]->settled)
				settle(v[i], STORE_OK, NULL);
	}
	fail_rest(v, n, why);
	return out;
}

/* Writes the posts of v on a connection of the pool: once more on a new
 * one if the server had dropped it, one by one if one of them spoilt the
 * batch (may_split). */
static void write_group(struct store_pg *st, struct pending **v, size_t n, bool may_split)
{
	struct room_slot *rooms = calloc(n, sizeof *rooms);
	struct call *calls = calloc(2 * n + 8, sizeof *calls);
	PGresult **res = calloc(2 * n + 8, sizeof *res);
	if (!rooms || !calls || !res) {
		for (size_t i = 0; i < n; i++)
			settle(v[i], STORE_NOMEM, "store: out of memory");
		goto out;
	}
	for (int attempt = 0;; attempt++) {
		const char *why = NULL;
		struct conn *c = conn_get(st, &why);
		if (!c) {
			for (size_t i = 0; i < n; i++)
				settle(v[i], STORE_FAILED, why);
			break;
		}
		enum batch_outcome o = BATCH_DONE;
		if (prepare(c, &why)) {
			o = batch_tx(st, c->pq, v, n, rooms, calls, res);
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
	free(calls);
	free(res);
}

enum store_result store_pg_post(struct store_pg *st, const char *room, const char *client_id,
				size_t client_id_len, const char *text, size_t text_len,
				const char *reply, size_t reply_len, store_answer_fn build,
				void *ctx, char **answer, size_t *answer_len, bool *replayed,
				const char **why)
{
	struct pending me = {.room = room,
			     .client_id = client_id,
			     .client_id_len = client_id_len,
			     .text = text,
			     .text_len = text_len,
			     .reply = reply,
			     .reply_len = reply_len,
			     .build = build,
			     .ctx = ctx};
	struct pending *batch[STORE_PG_BATCH_MAX];
	pthread_mutex_lock(&st->batch_lock);
	*st->queue_tail = &me;
	st->queue_tail = &me.next;
	while (!me.done) {
		if (st->writing >= STORE_PG_WRITERS || !st->queue) {
			pthread_cond_wait(&st->batch_done, &st->batch_lock);
			continue;
		}
		/* This thread writes the oldest posts queued (its own among
		 * them, unless there are more than a batch takes). */
		size_t n = 0;
		while (st->queue && n < STORE_PG_BATCH_MAX) {
			batch[n++] = st->queue;
			st->queue = st->queue->next;
		}
		if (!st->queue)
			st->queue_tail = &st->queue;
		st->writing++;
		pthread_mutex_unlock(&st->batch_lock);
		write_group(st, batch, n, true);
		pthread_mutex_lock(&st->batch_lock);
		/* Once done, a waiter may return and its entry vanish. */
		for (size_t i = 0; i < n; i++)
			batch[i]->done = true;
		st->writing--;
		pthread_cond_broadcast(&st->batch_done);
	}
	pthread_mutex_unlock(&st->batch_lock);
	*answer = me.answer;
	*answer_len = me.answer_len;
	*replayed = me.replayed;
	*why = me.why;
	return me.res;
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
	int rows = PQntuples(r);
	if (rows > 0)
		*last = int_field(r, 0, 0);
	for (int i = 0; i < rows && res == STORE_OK; i++) {
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
		if (each(ctx, &e) != 0) {
			*why = "store: out of memory";
			res = STORE_NOMEM;
		}
	}
	PQclear(r);
	return res;
}

int store_pg_data_version(struct store_pg *st, uint64_t *out)
{
	*out = atomic_load(&st->version);
	return 0;
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
	if (version != STORE_SCHEMA_VERSION) {
		snprintf(why, why_size, "store: the schema version changed to %d", version);
		return -1;
	}
	return 0;
}

/* Brings the schema up to STORE_SCHEMA_VERSION in one transaction, under
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
	if (version > STORE_SCHEMA_VERSION || version < 0) {
		snprintf(err, err_size,
			 "the PostgreSQL database has schema version %d, newer than this chat-fcgi "
			 "knows (%d): run a newer chat-fcgi, or use another database",
			 version, STORE_SCHEMA_VERSION);
		goto fail;
	}
	for (int v = version; v < STORE_SCHEMA_VERSION; v++) {
		if (!run_plain(pq, migrations[v], &why)) {
			snprintf(err, err_size, "cannot migrate to schema version %d: %s", v + 1,
				 PQerrorMessage(pq));
			goto fail;
		}
	}
	if (version < STORE_SCHEMA_VERSION &&
	    !run_plain(pq,
		       "DELETE FROM chat_fcgi_schema;"
		       "INSERT INTO chat_fcgi_schema VALUES(" STR(STORE_SCHEMA_VERSION) ")",
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
			atomic_fetch_add(&st->version, 1);
			continue;
		}
		PGnotify *n;
		while ((n = PQnotifies(pq)) != NULL) {
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
	pthread_cond_init(&st->freed, NULL);
	pthread_mutex_init(&st->batch_lock, NULL);
	pthread_cond_init(&st->batch_done, NULL);
	st->queue_tail = &st->queue;
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
	pthread_cond_destroy(&st->freed);
	pthread_mutex_destroy(&st->lock);
	pthread_cond_destroy(&st->batch_done);
	pthread_mutex_destroy(&st->batch_lock);
	free(st->uri);
	free(st);
}

#endif
