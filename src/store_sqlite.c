#include "store_sqlite.h"

#include "post_queue.h"
#include "store_impl.h"
#include "wal_writes.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Schema history: step i brings a file from user_version i to i + 1. Steps
 * are never edited once released; a change is a new step.
 * Entries are an ordinary rowid table: its rows hold whole messages (up to
 * 64 KiB), which WITHOUT ROWID tables store badly.
 */
static const char *const migrations[STORE_SQLITE_SCHEMA_VERSION] = {
    /* 1: rooms and their entries */
    "CREATE TABLE rooms(name TEXT PRIMARY KEY NOT NULL, last_seq INTEGER NOT NULL);"
    "CREATE TABLE entries(room TEXT NOT NULL, seq INTEGER NOT NULL, role INTEGER NOT NULL,"
    " text BLOB NOT NULL, time_ms INTEGER NOT NULL, client_id TEXT,"
    " PRIMARY KEY(room, seq));",
    /* 2: the first answer to each (room, client id), for idempotent retries */
    "CREATE TABLE posts(room TEXT NOT NULL, client_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " answer BLOB NOT NULL, PRIMARY KEY(room, client_id));"
    "CREATE INDEX posts_by_seq ON posts(room, seq);",
    /* 3: a retry's answer is built again from its entries, found by an
     * index of the client ids: posts and its two indexes were three of
     * the seven B-trees a post wrote, and their pages about half of the
     * WAL it wrote (bench/run --rooms). Rooms are tiny rows: one B-tree,
     * not a table and its index. */
    "DROP TABLE posts;"
    "CREATE INDEX entries_by_client ON entries(room, client_id, seq)"
    " WHERE client_id IS NOT NULL AND role = 0;"
    "CREATE TABLE rooms_v3(name TEXT PRIMARY KEY NOT NULL, last_seq INTEGER NOT NULL)"
    " WITHOUT ROWID;"
    "INSERT INTO rooms_v3 SELECT name, last_seq FROM rooms;"
    "DROP TABLE rooms;"
    "ALTER TABLE rooms_v3 RENAME TO rooms;",
    /* 4: an entry's key is its room's number and its seq in one integer
     * (entry_key), the rowid: a post wrote each entry twice, to the table
     * and to the (room, seq) primary key's index, and compared room names
     * in both; now once, keyed by an integer: about a fifth less of the
     * store thread's CPU per post (bench/run --rooms, A/B). */
    "CREATE TABLE rooms_v4(name TEXT PRIMARY KEY NOT NULL, id INTEGER NOT NULL UNIQUE,"
    " last_seq INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO rooms_v4 SELECT name, row_number() OVER (ORDER BY name), last_seq FROM rooms;"
    "CREATE TABLE entries_v4(id INTEGER PRIMARY KEY, role INTEGER NOT NULL,"
    " text BLOB NOT NULL, time_ms INTEGER NOT NULL, client_id TEXT);"
    "INSERT INTO entries_v4 SELECT r.id * 68719476736 + e.seq, e.role, e.text, e.time_ms,"
    " e.client_id FROM entries e JOIN rooms_v4 r ON r.name = e.room"
    " WHERE e.seq BETWEEN 1 AND 68719476735 ORDER BY 1;"
    "DROP TABLE entries;"
    "DROP TABLE rooms;"
    "ALTER TABLE rooms_v4 RENAME TO rooms;"
    "ALTER TABLE entries_v4 RENAME TO entries;"
    "CREATE INDEX entries_by_client ON entries(client_id)"
    " WHERE client_id IS NOT NULL AND role = 0;",
};

/* An entry's key: its room's number above the seq's SEQ_BITS. That is 68
 * billion entries per room (a thousand a second for two years) and 134
 * million rooms; past either, a post fails with a clear error rather than
 * wrapping. */
#define SEQ_BITS    36
#define SEQ_MAX     ((INT64_C(1) << SEQ_BITS) - 1)
#define ROOM_ID_MAX ((INT64_C(1) << (63 - SEQ_BITS)) - 1)

static int64_t entry_key(int64_t room_id, int64_t seq)
{
	return (room_id << SEQ_BITS) | seq;
}

/* Page cache per connection, in KiB (SQLite's default is 2 MiB): there is
 * a connection per busy thread, and reads touch few pages. */
#define STORE_CACHE_KIB "512"
/* The writer's: a post also deletes the oldest entries of its room and the
 * answers that made them, pages far from the newest ones, one set per
 * active room. With the readers' 512 KiB these missed the cache and were
 * read again on nearly every post (about 7 reads per post with 100 busy
 * rooms, bench/run --rooms). */
#define STORE_WRITER_CACHE_KIB "8192"
/* WAL frames after which the checkpoint thread is woken early; it also
 * runs every STORE_CHECKPOINT_MS. A checkpoint copies each page once,
 * however many posts rewrote it: 4000 frames (16 MiB) rather than 1000
 * took about 15% off the backend's CPU per post with 100 busy rooms. */
#define STORE_CHECKPOINT_FRAMES 4000
#define STORE_CHECKPOINT_MS     1000
/* WAL frames after which the writer checkpoints too, in case the
 * checkpoint thread is not getting to it (a busy machine); while that
 * thread copies, the writer's attempt returns at once (busy). */
#define STORE_CHECKPOINT_FRAMES_MAX 16000

enum stmt_id {
	ST_BEGIN_WRITE,
	ST_BEGIN_READ,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_FIND_POST,
	ST_ROOM,
	ST_NEXT_ROOM_ID,
	ST_ADD_ROOM,
	ST_ADD_ENTRY,
	ST_SET_LAST_SEQ,
	ST_TRIM_ENTRIES,
	ST_READ_AFTER,
	ST_DATA_VERSION,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    /* The newest: older ones may still wait for the trim (see trim_every).
     * Pinned to its index: the primary key also gives seq's order, and a
     * planner that took it would read the whole history for a new id. */
    [ST_FIND_POST] = "SELECT id FROM entries INDEXED BY entries_by_client"
		     " WHERE client_id = ?1 AND role = 0 AND client_id IS NOT NULL"
		     " AND id > ?2 AND id <= ?3 ORDER BY id DESC LIMIT 1",
    [ST_ROOM] = "SELECT id, last_seq FROM rooms WHERE name = ?1",
    [ST_NEXT_ROOM_ID] = "SELECT coalesce(max(id), 0) + 1 FROM rooms",
    [ST_ADD_ROOM] = "INSERT INTO rooms(name, id, last_seq) VALUES(?1, ?2, 0)",
    [ST_ADD_ENTRY] = "INSERT INTO entries(id, role, text, time_ms, client_id)"
		     " VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_SET_LAST_SEQ] = "UPDATE rooms SET last_seq = ?2 WHERE name = ?1",
    [ST_TRIM_ENTRIES] = "DELETE FROM entries WHERE id > ?1 AND id <= ?2",
    [ST_READ_AFTER] = "SELECT id, role, text, time_ms, client_id FROM entries"
		      " WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
    [ST_DATA_VERSION] = "PRAGMA data_version",
};

/*
 * The writer's rooms: each one's number and last seq as its own posts left
 * them, so that a post need not look its room up (one statement in six of
 * a post). Only while no other connection has committed since the
 * writer's last commit, which PRAGMA data_version tells (it does not move
 * for a connection's own commits): another process may have posted. A
 * failed batch, rolled back, empties it. Direct-mapped by a hash of the
 * name: a room pushed out is only looked up again.
 */
#define ROOM_CACHE_SLOTS 256
#define ROOM_CACHE_NAME  64
/* rooms_version when they hold for no version: data_version never is. */
#define ROOMS_STALE UINT64_MAX

struct room_cached {
	char name[ROOM_CACHE_NAME + 1]; /* "" for an empty slot */
	int64_t id, last;
};

/* One connection, used by one thread at a time (SQLITE_OPEN_NOMUTEX). */
struct conn {
	sqlite3 *db;
	sqlite3_stmt *stmt[ST_COUNT];
	struct timespec wait_start; /* when the current wait for a lock began */
	struct conn *next;
};

struct store_sqlite {
	struct store base; /* first: see store_impl.h */
	char *path;
	struct store_options opt;
	pthread_mutex_t lock; /* guards idle */
	struct conn *idle;    /* connections no thread is using */
	/* Writers of this process take turns here rather than in SQLite's
	 * busy handler, which sleeps for milliseconds between tries. */
	pthread_mutex_t write_lock;
	/* The one connection posts use, under write_lock: a connection drops
	 * its page cache whenever another one has written, so posts spread
	 * over the pool re-read every page they touch (bench/run --rooms:
	 * about 200 rather than 130 backend CPU-us per post). */
	struct conn *writer;
	/* Under write_lock, with the writer: see struct room_cached. */
	struct room_cached *rooms;
	uint64_t rooms_version; /* the writer's data_version they hold for */
	/* Group commit: posts queue here, and a thread of the store's own
	 * writes all that are queued in one transaction, then takes the next
	 * lot. A commit costs two writes per page it touches, and posts share
	 * most of their pages (the tables' last leaves, the rooms row), so a
	 * batch costs far less than its posts one by one. The requests never
	 * wait for the commit themselves (store_post_queue): a thread that
	 * waited had to be woken for each post, which cost as much CPU as
	 * its SQL (bench/run --rooms). */
	struct post_queue posts;
	pthread_mutex_t version_lock;
	sqlite3 *version_db; /* for store_data_version only */
	/* store_data_version's: the last value of each source (0 the watcher,
	 * 1 the writer) and the changes it counted; one caller at a time. */
	uint64_t version_last[2];
	bool version_seen[2];
	uint64_t version_changes;

	/* Checkpoints run on a thread of their own: a checkpoint syncs the
	 * database (with synchronous=NORMAL, the one step that syncs), and in
	 * the committing thread (SQLite's default) it would hold up every few
	 * hundredth batch of posts. */
	pthread_t checkpointer;
	bool checkpointer_started;
	pthread_mutex_t checkpoint_lock;
	pthread_cond_t checkpoint_due;
	bool checkpoint_wanted, stopping; /* under checkpoint_lock */
	int wal_frames;                   /* the WAL's frames after the writer's last commit */
	int checkpoint_frames;            /* that wake the checkpoint thread */
	sqlite3 *checkpoint_db;
};

/* What post_one answers when a key would not fit (see entry_key): a code
 * no statement of this file gives otherwise. */
#define NUMBERS_USED_UP SQLITE_RANGE

/* A static sentence for the log, by SQLite's primary result code. */
static const char *failure(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return "store: the database stayed locked past the busy timeout";
	case SQLITE_FULL:
		return "store: the disk is full";
	case SQLITE_READONLY:
		return "store: the database is read-only";
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return "store: the database file is corrupt";
	case SQLITE_IOERR:
		return "store: I/O error on the database";
	case SQLITE_CANTOPEN:
		return "store: cannot open the database file";
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return "store: no permission to write the database";
	case NUMBERS_USED_UP:
		return "store: the room's sequence numbers, or the store's room numbers, are used "
		       "up";
	default:
		return "store: SQLite failed";
	}
}

/* Is a connection still sound after this error? Only waiting for a lock
 * leaves it as it was; after anything else it is reopened, so that a
 * database fixed from outside (made writable again, space freed) is seen. */
static bool conn_survives(int rc)
{
	return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

static void db_conn_close(struct conn *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(c->stmt[i]);
	sqlite3_close(c->db);
	free(c);
}

/*
 * Waiting for another process's write lock: SQLite's own handler sleeps up
 * to 100 ms between tries, far longer than a write takes, so writers of
 * several processes would mostly sleep. This one retries after 0.1 ms,
 * doubling up to 2 ms, until STORE_BUSY_TIMEOUT_MS have passed.
 */
static int busy_wait(void *arg, int count)
{
	struct conn *c = arg;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (count == 0)
		c->wait_start = now;
	long long waited_ms = (long long)(now.tv_sec - c->wait_start.tv_sec) * 1000 +
			      (now.tv_nsec - c->wait_start.tv_nsec) / 1000000;
	if (waited_ms >= STORE_BUSY_TIMEOUT_MS)
		return 0;
	long us = count < 5 ? 100L << count : 2000L;
	struct timespec pause = {0, us * 1000};
	nanosleep(&pause, NULL);
	return 1;
}

/*
 * Switches the file to WAL. Processes started together on a new file
 * (spawn-fcgi -F N) race to do it, and SQLite then answers "locked" at once
 * rather than through the busy handler (waiting there could deadlock), so
 * the switch is tried again for as long as the busy handler would wait.
 */
static bool set_wal(struct conn *c)
{
	for (int count = 0;; count++) {
		sqlite3_stmt *s = NULL;
		int rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
		const unsigned char *mode = NULL;
		if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
			mode = sqlite3_column_text(s, 0);
		bool wal = mode && strcmp((const char *)mode, "wal") == 0;
		sqlite3_finalize(s);
		if (wal)
			return true;
		if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
			return false;
		if (!busy_wait(c, count))
			return false;
	}
}

/* Called after each commit with the WAL's size in frames. */
static int wal_grew(void *arg, sqlite3 *db, const char *name, int frames)
{
	(void)db;
	(void)name;
	struct store_sqlite *st = arg;
	st->wal_frames = frames;
	if (frames >= st->checkpoint_frames) {
		pthread_mutex_lock(&st->checkpoint_lock);
		st->checkpoint_wanted = true;
		pthread_cond_signal(&st->checkpoint_due);
		pthread_mutex_unlock(&st->checkpoint_lock);
	}
	return SQLITE_OK;
}

static void *checkpoint_loop(void *arg)
{
	struct store_sqlite *st = arg;
	pthread_mutex_lock(&st->checkpoint_lock);
	while (!st->stopping) {
		if (!st->checkpoint_wanted) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += STORE_CHECKPOINT_MS / 1000;
			pthread_cond_timedwait(&st->checkpoint_due, &st->checkpoint_lock, &until);
			if (st->stopping)
				break;
		}
		st->checkpoint_wanted = false;
		pthread_mutex_unlock(&st->checkpoint_lock);
		/* PASSIVE: copies what no reader still needs, never waits for
		 * writers or readers. A failure is tried again next round. */
		int frames = 0;
		int rc = sqlite3_wal_checkpoint_v2(st->checkpoint_db, NULL,
						   SQLITE_CHECKPOINT_PASSIVE, &frames, NULL);
		/* SQLite writes the WAL from its start again only once all of it
		 * has been copied, and under steady posts the writer always
		 * added frames while this copied: the WAL grew without end (440
		 * MB in 10 s of bench/run --rooms), every commit writing fresh
		 * blocks of the file, which the kernel zeroes first. The frames
		 * added meanwhile are few: copied with this process's writers
		 * held back, the next commit starts the WAL over. */
		if (rc == SQLITE_OK && frames >= st->checkpoint_frames) {
			pthread_mutex_lock(&st->write_lock);
			sqlite3_wal_checkpoint_v2(st->checkpoint_db, NULL,
						  SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
			pthread_mutex_unlock(&st->write_lock);
		}
		pthread_mutex_lock(&st->checkpoint_lock);
	}
	pthread_mutex_unlock(&st->checkpoint_lock);
	return NULL;
}

static int conn_setup(struct store_sqlite *st, struct conn *c)
{
	const struct store_options *opt = &st->opt;
	sqlite3 *db = c->db;
	int rc = sqlite3_busy_handler(db, busy_wait, c);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db,
				  opt->sync_full ? "PRAGMA synchronous = FULL"
						 : "PRAGMA synchronous = NORMAL",
				  NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "PRAGMA cache_size = -" STORE_CACHE_KIB, NULL, NULL, NULL);
	/* Replaces SQLite's checkpoint-on-commit (sqlite3_wal_autocheckpoint). */
	if (rc == SQLITE_OK)
		sqlite3_wal_hook(db, wal_grew, st);
	return rc;
}

static int conn_open(struct store_sqlite *st, int flags, struct conn **out)
{
	struct conn *c = calloc(1, sizeof *c);
	*out = NULL;
	if (!c)
		return SQLITE_NOMEM;
	int rc = sqlite3_open_v2(st->path, &c->db, flags | SQLITE_OPEN_NOMUTEX, WAL_WRITES_VFS);
	if (rc == SQLITE_OK)
		rc = conn_setup(st, c);
	if (rc != SQLITE_OK) {
		if (c->db)
			rc = sqlite3_extended_errcode(c->db) ? sqlite3_extended_errcode(c->db) : rc;
		db_conn_close(c);
		return rc;
	}
	*out = c;
	return SQLITE_OK;
}

/* A connection for this thread: an idle one, or a new one. */
static int conn_get(struct store_sqlite *st, struct conn **out)
{
	pthread_mutex_lock(&st->lock);
	struct conn *c = st->idle;
	if (c)
		st->idle = c->next;
	pthread_mutex_unlock(&st->lock);
	if (c) {
		c->next = NULL;
		*out = c;
		return SQLITE_OK;
	}
	return conn_open(st, SQLITE_OPEN_READWRITE, out);
}

static void conn_put(struct store_sqlite *st, struct conn *c, int rc)
{
	if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW && !conn_survives(rc)) {
		db_conn_close(c);
		return;
	}
	pthread_mutex_lock(&st->lock);
	c->next = st->idle;
	st->idle = c;
	pthread_mutex_unlock(&st->lock);
}

static int stmt(struct conn *c, enum stmt_id id, sqlite3_stmt **out)
{
	if (!c->stmt[id]) {
		int rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
					    &c->stmt[id], NULL);
		if (rc != SQLITE_OK)
			return rc;
	} else {
		sqlite3_reset(c->stmt[id]);
		sqlite3_clear_bindings(c->stmt[id]);
	}
	*out = c->stmt[id];
	return SQLITE_OK;
}

/* Runs a statement without parameters or rows (BEGIN, COMMIT...). */
static int run(struct conn *c, enum stmt_id id)
{
	sqlite3_stmt *s;
	int rc = stmt(c, id, &s);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Ends a failed transaction; a connection that cannot roll back is broken. */
static int rollback(struct conn *c, int rc)
{
	if (sqlite3_get_autocommit(c->db))
		return rc;
	if (run(c, ST_ROLLBACK) != SQLITE_OK)
		return SQLITE_IOERR;
	return rc;
}

static int64_t unix_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Binds text that may be empty: SQLite turns a NULL pointer into NULL. */
static int bind_bytes(sqlite3_stmt *s, int i, const char *p, size_t len)
{
	if (len > INT_MAX)
		return SQLITE_TOOBIG;
	return sqlite3_bind_blob(s, i, len ? p : "", (int)len, SQLITE_STATIC);
}

static int bind_text(sqlite3_stmt *s, int i, const char *p, size_t len)
{
	if (len > INT_MAX)
		return SQLITE_TOOBIG;
	return sqlite3_bind_text(s, i, p, (int)len, SQLITE_STATIC);
}

static int add_entry(struct conn *c, int64_t room_id, const struct store_entry *e)
{
	sqlite3_stmt *s;
	int rc = stmt(c, ST_ADD_ENTRY, &s);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 1, entry_key(room_id, e->seq));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 2, (int)e->role);
	if (rc == SQLITE_OK)
		rc = bind_bytes(s, 3, e->text, e->text_len);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 4, e->time_ms);
	if (rc == SQLITE_OK)
		rc = e->client_id ? bind_text(s, 5, e->client_id, e->client_id_len)
				  : sqlite3_bind_null(s, 5);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Runs a statement with (room, int64) parameters and no rows. */
static int run_room_int(struct conn *c, enum stmt_id id, const char *room, int64_t v)
{
	sqlite3_stmt *s;
	int rc = stmt(c, id, &s);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 1, room, strlen(room));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, v);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Runs a statement with two int64 parameters and no rows. */
static int run_ints(struct conn *c, enum stmt_id id, int64_t a, int64_t b)
{
	sqlite3_stmt *s;
	int rc = stmt(c, id, &s);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 1, a);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, b);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The room's number and last seq; *id 0 (and *last 0) when it has none. */
static int find_room(struct conn *c, const char *room, int64_t *id, int64_t *last)
{
	sqlite3_stmt *s;
	int rc = stmt(c, ST_ROOM, &s);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 1, room, strlen(room));
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	*id = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	*last = rc == SQLITE_ROW ? sqlite3_column_int64(s, 1) : 0;
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Gives a room its number, the next after the highest (rooms are never
 * deleted, so numbers are never reused). */
static int add_room(struct conn *c, const char *room, int64_t *id)
{
	sqlite3_stmt *s;
	int rc = stmt(c, ST_NEXT_ROOM_ID, &s);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	*id = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	sqlite3_reset(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? SQLITE_CORRUPT : rc;
	if (*id < 1 || *id > ROOM_ID_MAX)
		return NUMBERS_USED_UP;
	rc = stmt(c, ST_ADD_ROOM, &s);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 1, room, strlen(room));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, *id);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static struct room_cached *room_slot(struct store_sqlite *st, const char *room)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const char *p = room; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return &st->rooms[h % ROOM_CACHE_SLOTS];
}

/* PRAGMA data_version on c, through its prepared statement. */
static int conn_data_version(struct conn *c, uint64_t *out)
{
	sqlite3_stmt *s;
	int rc = stmt(c, ST_DATA_VERSION, &s);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*out = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? SQLITE_OK : rc == SQLITE_DONE ? SQLITE_ERROR : rc;
}

/* At the start of a batch's transaction: empties the writer's rooms unless
 * they still hold (see struct room_cached). */
static int rooms_check(struct store_sqlite *st, struct conn *c)
{
	if (!st->rooms) {
		st->rooms = calloc(ROOM_CACHE_SLOTS, sizeof *st->rooms);
		if (!st->rooms)
			return SQLITE_OK; /* posts look their rooms up */
		st->rooms_version = ROOMS_STALE;
	}
	uint64_t v = 0;
	int rc = conn_data_version(c, &v);
	if (rc != SQLITE_OK)
		return rc;
	if (v != st->rooms_version) {
		for (size_t i = 0; i < ROOM_CACHE_SLOTS; i++)
			st->rooms[i].name[0] = '\0';
		st->rooms_version = v;
	}
	return SQLITE_OK;
}

/* As find_room, from the writer's rooms when they have it. */
static int writer_room(struct store_sqlite *st, struct conn *c, const char *room, int64_t *id,
		       int64_t *last)
{
	struct room_cached *r = st->rooms ? room_slot(st, room) : NULL;
	if (r && r->name[0] && strcmp(r->name, room) == 0) {
		*id = r->id;
		*last = r->last;
		return SQLITE_OK;
	}
	return find_room(c, room, id, last);
}

/* What a post left its room as, within the batch's transaction. */
static void writer_room_set(struct store_sqlite *st, const char *room, int64_t id, int64_t last)
{
	size_t n = strlen(room);
	if (!st->rooms || n > ROOM_CACHE_NAME)
		return;
	struct room_cached *r = room_slot(st, room);
	memcpy(r->name, room, n + 1);
	r->id = id;
	r->last = last;
}

/* Binds ST_READ_AFTER's range: room_id's entries with a seq above after. */
static int bind_after(sqlite3_stmt *s, int64_t room_id, int64_t after, int64_t limit)
{
	/* Kept inside the room's keys, whatever the request asked. */
	after = after < 0 ? 0 : after > SEQ_MAX ? SEQ_MAX : after;
	int rc = sqlite3_bind_int64(s, 1, entry_key(room_id, after));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, entry_key(room_id, SEQ_MAX));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, limit);
	return rc;
}

/* The entry in the current row of ST_READ_AFTER; valid until the next step. */
static void entry_of(sqlite3_stmt *s, struct store_entry *e)
{
	*e = (struct store_entry){
	    .seq = sqlite3_column_int64(s, 0) & SEQ_MAX,
	    .role = sqlite3_column_int(s, 1) == STORE_BOT ? STORE_BOT : STORE_USER,
	    .text = sqlite3_column_blob(s, 2),
	    .text_len = (size_t)sqlite3_column_bytes(s, 2),
	    .time_ms = sqlite3_column_int64(s, 3),
	    .client_id = (const char *)sqlite3_column_text(s, 4),
	    .client_id_len = (size_t)sqlite3_column_bytes(s, 4),
	};
	if (!e->text)
		e->text = "";
}

/* The seq of the user's entry of (room, client_id), of a post still in the
 * history (seq above cutoff); 0 when there is none. */
static int find_post(struct conn *c, int64_t room_id, const char *client_id, size_t client_id_len,
		     int64_t cutoff, int64_t *seq)
{
	sqlite3_stmt *s;
	*seq = 0;
	int rc = stmt(c, ST_FIND_POST, &s);
	if (rc == SQLITE_OK)
		rc = bind_text(s, 1, client_id, client_id_len);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 2, entry_key(room_id, cutoff > 0 ? cutoff : 0));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, entry_key(room_id, SEQ_MAX));
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*seq = sqlite3_column_int64(s, 0) & SEQ_MAX;
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The answer to the post whose user entry is seq, built again from its two
 * entries (seq and seq + 1, stored together); *answer NULL if they are not
 * both there. */
static int rebuild_answer(struct conn *c, int64_t room_id, int64_t seq, store_answer_fn build,
			  void *ctx, char **answer, size_t *len)
{
	sqlite3_stmt *s;
	*answer = NULL;
	int rc = stmt(c, ST_READ_AFTER, &s);
	if (rc == SQLITE_OK)
		rc = bind_after(s, room_id, seq - 1, 2);
	struct store_entry user, bot;
	char *copy = NULL;
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		entry_of(s, &user);
		/* The row's bytes go at the next step: the user's are copied. */
		size_t n = user.text_len + user.client_id_len + 2;
		copy = malloc(n);
		if (!copy) {
			rc = SQLITE_NOMEM;
		} else {
			memcpy(copy, user.text, user.text_len);
			copy[user.text_len] = '\0';
			if (user.client_id)
				memcpy(copy + user.text_len + 1, user.client_id,
				       user.client_id_len);
			copy[n - 1] = '\0';
			user.text = copy;
			if (user.client_id)
				user.client_id = copy + user.text_len + 1;
			rc = sqlite3_step(s);
		}
	}
	if (rc == SQLITE_ROW) {
		entry_of(s, &bot);
		if (user.seq == seq && user.role == STORE_USER && bot.seq == seq + 1 &&
		    bot.role == STORE_BOT) {
			*answer = build(ctx, &user, &bot, len);
			rc = *answer ? SQLITE_OK : SQLITE_NOMEM;
		} else {
			rc = SQLITE_OK;
		}
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_OK;
	}
	sqlite3_reset(s);
	free(copy);
	return rc;
}

static enum store_result result(int rc, const char **why)
{
	if (rc == SQLITE_OK)
		return STORE_OK;
	if ((rc & 0xff) == SQLITE_NOMEM) {
		*why = "store: out of memory";
		return STORE_NOMEM;
	}
	*why = failure(rc);
	return STORE_FAILED;
}

/*
 * Every how many posts of a room its entries out of the history are
 * deleted. One DELETE of the oldest rows touches the same few pages (the
 * oldest leaves of the entries and their indexes) whether it
 * deletes one post's rows or many: on each post they were about a fifth
 * of the pages a post wrote to the WAL (bench/run --rooms). Up to 2k - 2
 * entries more than the history stay in the file meanwhile.
 */
static unsigned trim_every(unsigned history)
{
	unsigned k = history / 16;
	return k < 1 ? 1 : k > 32 ? 32 : k;
}

/* One post inside the batch's transaction. */
static int post_one(struct store_sqlite *st, struct conn *c, struct store_post *p)
{
	int64_t room_id = 0, last = 0;
	int rc = writer_room(st, c, p->room, &room_id, &last);
	if (rc == SQLITE_OK && room_id > 0 && p->client_id) {
		int64_t seq = 0;
		rc = find_post(c, room_id, p->client_id, p->client_id_len,
			       last - (int64_t)st->opt.history, &seq);
		if (rc == SQLITE_OK && seq > 0)
			rc = rebuild_answer(c, room_id, seq, p->build, p->ctx, &p->answer,
					    &p->answer_len);
		if (rc != SQLITE_OK || p->answer) {
			p->replayed = p->answer != NULL;
			return rc;
		}
	}
	if (rc == SQLITE_OK && room_id == 0)
		rc = add_room(c, p->room, &room_id);
	if (rc == SQLITE_OK && last > SEQ_MAX - 2)
		rc = NUMBERS_USED_UP;
	if (rc != SQLITE_OK)
		return rc;

	int64_t t = unix_ms();
	struct store_entry user = {.seq = last + 1,
				   .role = STORE_USER,
				   .text = p->text,
				   .text_len = p->text_len,
				   .time_ms = t,
				   .client_id = p->client_id,
				   .client_id_len = p->client_id_len};
	struct store_entry bot = user;
	bot.seq = last + 2;
	bot.role = STORE_BOT;
	bot.text = p->reply;
	bot.text_len = p->reply_len;
	rc = add_entry(c, room_id, &user);
	if (rc == SQLITE_OK)
		rc = add_entry(c, room_id, &bot);
	if (rc == SQLITE_OK)
		rc = run_room_int(c, ST_SET_LAST_SEQ, p->room, bot.seq);
	if (rc == SQLITE_OK)
		writer_room_set(st, p->room, room_id, bot.seq);
	/* Entries up to cutoff fall out of the history, and with them the
	 * client ids that made them: deleted every few posts of the room, not
	 * on each (see trim_every); reads and retries skip them meanwhile. */
	int64_t cutoff = bot.seq - (int64_t)st->opt.history;
	bool trim = cutoff > 0 && (bot.seq / 2) % trim_every(st->opt.history) == 0;
	if (rc == SQLITE_OK && trim)
		rc =
		    run_ints(c, ST_TRIM_ENTRIES, entry_key(room_id, 0), entry_key(room_id, cutoff));
	if (rc == SQLITE_OK) {
		p->answer = p->build(p->ctx, &user, &bot, &p->answer_len);
		if (!p->answer)
			rc = SQLITE_NOMEM;
	}
	return rc;
}

/* Writes a batch in one transaction, under write_lock. All its posts are
 * stored, or none: a failure (a full disk, a lock held past the timeout,
 * out of memory) fails every post of the batch, none is half-stored. */
static void write_batch(struct store_sqlite *st, struct store_post *batch)
{
	int rc = SQLITE_OK;
	if (!st->writer) {
		rc = conn_open(st, SQLITE_OPEN_READWRITE, &st->writer);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(st->writer->db,
					  "PRAGMA cache_size = -" STORE_WRITER_CACHE_KIB, NULL,
					  NULL, NULL);
		if (rc != SQLITE_OK && st->writer) {
			db_conn_close(st->writer);
			st->writer = NULL;
		}
	}
	if (rc == SQLITE_OK) {
		struct conn *c = st->writer;
		rc = run(c, ST_BEGIN_WRITE);
		if (rc == SQLITE_OK)
			rc = rooms_check(st, c);
		for (struct store_post *p = batch; p && rc == SQLITE_OK; p = p->next)
			rc = post_one(st, c, p);
		if (rc == SQLITE_OK)
			rc = run(c, ST_COMMIT);
		if (rc != SQLITE_OK) {
			/* They may hold what was rolled back; and a writer closed
			 * below counts data_version afresh when reopened. */
			st->rooms_version = ROOMS_STALE;
			rc = rollback(c, rc);
		}
		/* Committed: a failed checkpoint is only tried again later. */
		if (rc == SQLITE_OK && st->wal_frames >= STORE_CHECKPOINT_FRAMES_MAX)
			sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL,
						  NULL);
		/* As conn_put: reopened on the next post after an error it may
		 * not survive. */
		if (rc != SQLITE_OK && !conn_survives(rc)) {
			db_conn_close(st->writer);
			st->writer = NULL;
		}
	}
	for (struct store_post *p = batch; p; p = p->next) {
		p->result = result(rc, &p->why);
		if (rc != SQLITE_OK) {
			free(p->answer);
			p->answer = NULL;
			p->replayed = false;
		}
	}
}

/* The store's thread writes a batch under write_lock. */
static void write_queued(void *ctx, struct store_post *batch, size_t n)
{
	(void)n;
	struct store_sqlite *st = ctx;
	pthread_mutex_lock(&st->write_lock);
	write_batch(st, batch);
	pthread_mutex_unlock(&st->write_lock);
}

void store_sqlite_queue(struct store_sqlite *st, struct store_post *p)
{
	post_queue_push(&st->posts, p);
}

enum store_result store_sqlite_read(struct store_sqlite *st, const char *room, int64_t after,
				    unsigned limit, store_entry_fn each, void *ctx, int64_t *last,
				    const char **why)
{
	struct conn *c;
	*last = 0;
	int rc = conn_get(st, &c);
	if (rc != SQLITE_OK)
		return result(rc, why);

	/* One snapshot, so the entries and the room's last seq agree. */
	int64_t room_id = 0;
	rc = run(c, ST_BEGIN_READ);
	if (rc == SQLITE_OK)
		rc = find_room(c, room, &room_id, last);
	/* Sequence numbers have no gaps and retention only drops the oldest,
	 * so the newest limit entries are those above last - limit; and
	 * those out of the history, not all deleted yet, are at most
	 * last - history. */
	if (rc == SQLITE_OK && after < 0)
		after = *last > (int64_t)limit ? *last - (int64_t)limit : 0;
	if (rc == SQLITE_OK && after < *last - (int64_t)st->opt.history)
		after = *last - (int64_t)st->opt.history;

	/* An unknown room (no number) has no entries. */
	sqlite3_stmt *s = NULL;
	if (rc == SQLITE_OK && room_id > 0)
		rc = stmt(c, ST_READ_AFTER, &s);
	if (s && rc == SQLITE_OK)
		rc = bind_after(s, room_id, after, (int64_t)limit);
	while (s && rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct store_entry e;
		entry_of(s, &e);
		int go = each(ctx, &e);
		/* SQLITE_DONE ends the loop as the last row would. */
		rc = go < 0 ? SQLITE_NOMEM : go > 0 ? SQLITE_DONE : SQLITE_OK;
	}
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
	if (s)
		sqlite3_reset(s);
	if (rc == SQLITE_OK)
		rc = run(c, ST_COMMIT);
	rc = rollback(c, rc);
	conn_put(st, c, rc);
	return result(rc, why);
}

/* PRAGMA data_version on db; 0 or -1. */
static int read_data_version(sqlite3 *db, uint64_t *out)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &s, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*out = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

int store_sqlite_data_version(struct store_sqlite *st, uint64_t *out)
{
	/* Asked on the writer's own connection, data_version leaves out this
	 * process's own posts, whose waiters the server wakes at once: only
	 * other processes' posts then make it look at every held request (an
	 * own post seen here again woke all 2,000 streams of a fan-out a
	 * second time). While a batch is being written, the watcher connection
	 * answers instead, which counts every commit. Each source's own last
	 * value is kept, so moving between them is no change. */
	uint64_t v = 0;
	int source = -1;
	if (pthread_mutex_trylock(&st->write_lock) == 0) {
		if (st->writer && conn_data_version(st->writer, &v) == SQLITE_OK)
			source = 1;
		pthread_mutex_unlock(&st->write_lock);
	}
	if (source < 0) {
		pthread_mutex_lock(&st->version_lock);
		if (read_data_version(st->version_db, &v) == 0)
			source = 0;
		pthread_mutex_unlock(&st->version_lock);
	}
	if (source < 0)
		return -1;
	if (!st->version_seen[source] || st->version_last[source] != v) {
		st->version_seen[source] = true;
		st->version_last[source] = v;
		st->version_changes++;
	}
	*out = st->version_changes;
	return 0;
}

static int conn_setup_checkpointer(struct store_sqlite *st)
{
	int rc = sqlite3_busy_timeout(st->checkpoint_db, STORE_BUSY_TIMEOUT_MS);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(st->checkpoint_db,
				  st->opt.sync_full ? "PRAGMA synchronous = FULL"
						    : "PRAGMA synchronous = NORMAL",
				  NULL, NULL, NULL);
	if (rc == SQLITE_OK) {
		if (pthread_create(&st->checkpointer, NULL, checkpoint_loop, st) != 0)
			return SQLITE_NOMEM;
		st->checkpointer_started = true;
	}
	return rc;
}

/* Checks the directory the database lives in, for a clear first error:
 * SQLite says only "unable to open database file". */
static int check_directory(const char *path, char *err, size_t err_size)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	if (!dir) {
		snprintf(err, err_size, "out of memory");
		return -1;
	}
	struct stat sb;
	int r = -1;
	if (stat(dir, &sb) != 0)
		snprintf(err, err_size,
			 "the directory %s of the store does not exist (%s): create it, writable "
			 "by the user chat-fcgi runs as",
			 dir, strerror(errno));
	else if (!S_ISDIR(sb.st_mode))
		snprintf(err, err_size, "%s, where the store should be, is not a directory", dir);
	else if (access(dir, W_OK | X_OK) != 0)
		snprintf(err, err_size,
			 "the directory %s of the store is not writable (%s): SQLite needs to "
			 "create files beside the database",
			 dir, strerror(errno));
	else
		r = 0;
	free(dir);
	return r;
}

static int schema_version(sqlite3 *db, int *version)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			*version = sqlite3_column_int(s, 0);
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(s);
	return rc;
}

/* Brings the file's schema up to STORE_SQLITE_SCHEMA_VERSION in one transaction,
 * so that processes starting together migrate it once. A file already up
 * to date is only read: starting takes no write lock. */
static int migrate(struct store_sqlite *st, sqlite3 *db, char *err, size_t err_size)
{
	int version = -1;
	int rc = schema_version(db, &version);
	if (rc == SQLITE_OK && version == STORE_SQLITE_SCHEMA_VERSION)
		return 0;
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = schema_version(db, &version);
	if (rc != SQLITE_OK) {
		snprintf(err, err_size, "cannot read the schema version of %s: %s", st->path,
			 sqlite3_errmsg(db));
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	if (version > STORE_SQLITE_SCHEMA_VERSION || version < 0) {
		snprintf(err, err_size,
			 "the database %s has schema version %d, newer than this chat-fcgi "
			 "knows (%d): run a newer chat-fcgi, or use another file",
			 st->path, version, STORE_SQLITE_SCHEMA_VERSION);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	for (int v = version; v < STORE_SQLITE_SCHEMA_VERSION; v++) {
		char bump[64];
		snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
		rc = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			rc = sqlite3_exec(db, bump, NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			snprintf(err, err_size, "cannot migrate %s to schema version %d: %s",
				 st->path, v + 1, sqlite3_errmsg(db));
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -1;
		}
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, err_size, "cannot migrate %s: %s", st->path, sqlite3_errmsg(db));
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

int store_sqlite_check(struct store_sqlite *st, char *why, size_t why_size)
{
	pthread_mutex_lock(&st->version_lock);
	int version = -1;
	int rc = schema_version(st->version_db, &version);
	if (rc == SQLITE_OK && version != STORE_SQLITE_SCHEMA_VERSION)
		snprintf(why, why_size, "store: the schema version changed to %d", version);
	else if (rc != SQLITE_OK)
		snprintf(why, why_size, "%s", failure(rc));
	pthread_mutex_unlock(&st->version_lock);
	return rc == SQLITE_OK && version == STORE_SQLITE_SCHEMA_VERSION ? 0 : -1;
}

int store_sqlite_open(struct store_sqlite **out, const char *path, const struct store_options *opt,
		      char *err, size_t err_size)
{
	*out = NULL;
	if (check_directory(path, err, err_size) != 0)
		return -1;
	struct store_sqlite *st = calloc(1, sizeof *st);
	if (!st || !(st->path = strdup(path))) {
		free(st);
		snprintf(err, err_size, "out of memory");
		return -1;
	}
	st->base.kind = STORE_KIND_SQLITE;
	st->opt = *opt;
	st->checkpoint_frames = opt->checkpoint_frames > 0 && opt->checkpoint_frames < INT_MAX
				    ? (int)opt->checkpoint_frames
				    : STORE_CHECKPOINT_FRAMES;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->write_lock, NULL);
	pthread_mutex_init(&st->version_lock, NULL);
	pthread_mutex_init(&st->checkpoint_lock, NULL);
	pthread_cond_init(&st->checkpoint_due, NULL);

	struct conn *first = NULL;
	int rc = wal_writes_register();
	if (rc != SQLITE_OK) {
		snprintf(err, err_size, "cannot set up the store's file layer: %s",
			 sqlite3_errstr(rc));
		goto fail;
	}
	rc = conn_open(st, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &first);
	if (rc != SQLITE_OK) {
		snprintf(err, err_size, "cannot open the store %s: %s", path, sqlite3_errstr(rc));
		goto fail;
	}
	/* WAL: readers never wait for the writer, and a commit is one append
	 * to the log, so a killed process loses nothing it acknowledged. The
	 * mode is kept in the file. */
	if (!set_wal(first)) {
		snprintf(err, err_size, "cannot use %s as the store: %s", path,
			 sqlite3_errmsg(first->db));
		goto fail;
	}
	if (migrate(st, first->db, err, err_size) != 0)
		goto fail;

	rc = sqlite3_open_v2(path, &st->version_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			     WAL_WRITES_VFS);
	if (rc != SQLITE_OK) {
		snprintf(err, err_size, "cannot open the store %s: %s", path,
			 sqlite3_errmsg(st->version_db));
		goto fail;
	}
	rc = sqlite3_open_v2(path, &st->checkpoint_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			     WAL_WRITES_VFS);
	if (rc == SQLITE_OK)
		rc = conn_setup_checkpointer(st);
	if (rc != SQLITE_OK) {
		snprintf(err, err_size, "cannot open the store %s: %s", path,
			 sqlite3_errmsg(st->checkpoint_db));
		goto fail;
	}
	if (post_queue_start(&st->posts, SIZE_MAX, write_queued, st) != 0) {
		snprintf(err, err_size, "cannot start the store's thread");
		goto fail;
	}
	st->idle = first;
	*out = st;
	return 0;
fail:
	db_conn_close(first);
	store_sqlite_close(st);
	return -1;
}

void store_sqlite_close(struct store_sqlite *st)
{
	if (!st)
		return;
	post_queue_stop(&st->posts); /* it writes what is still queued first */
	if (st->checkpointer_started) {
		pthread_mutex_lock(&st->checkpoint_lock);
		st->stopping = true;
		pthread_cond_signal(&st->checkpoint_due);
		pthread_mutex_unlock(&st->checkpoint_lock);
		pthread_join(st->checkpointer, NULL);
	}
	sqlite3_close(st->checkpoint_db);
	pthread_cond_destroy(&st->checkpoint_due);
	pthread_mutex_destroy(&st->checkpoint_lock);
	while (st->idle) {
		struct conn *c = st->idle;
		st->idle = c->next;
		db_conn_close(c);
	}
	db_conn_close(st->writer);
	free(st->rooms);
	sqlite3_close(st->version_db);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->write_lock);
	pthread_mutex_destroy(&st->version_lock);
	free(st->path);
	free(st);
}
