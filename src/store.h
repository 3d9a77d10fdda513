/*
 * The room history, kept in SQLite or PostgreSQL: entries per room with
 * gapless sequence numbers, the newest N kept, and the first answer to each
 * (room, client id) kept for idempotent retries. Safe to use from many
 * threads at once, and from several processes (or machines, on PostgreSQL)
 * sharing one database.
 */
#ifndef STORE_H
#define STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The schema versions this binary writes; older databases are migrated
 * forward on open, newer ones refused. */
#define STORE_SQLITE_SCHEMA_VERSION 4
#define STORE_PG_SCHEMA_VERSION     2

/* How long a write waits for another writer (thread or process) before the
 * request gets 503. A write takes well under a millisecond, so this is only
 * reached when something holds the database for real. */
#define STORE_BUSY_TIMEOUT_MS 2000

/* Default for --room-history, and its bounds. */
#define STORE_HISTORY_DEFAULT 1000u
#define STORE_HISTORY_MAX     100000000u

struct store;

struct store_options {
	unsigned history; /* entries kept per room */
	bool sync_full;   /* synchronous=FULL (survives power loss) instead of NORMAL */
	/* SQLite: the WAL frames that wake the store's checkpoint thread; 0,
	 * its own default. Tests set a few, for checkpoints among the posts. */
	unsigned checkpoint_frames;
};

enum store_role { STORE_USER = 0, STORE_BOT = 1 };

struct store_entry {
	int64_t seq;
	enum store_role role;
	const char *text; /* may hold NUL bytes */
	size_t text_len;
	int64_t time_ms;       /* Unix time in milliseconds, UTC */
	const char *client_id; /* NULL when the post had none */
	size_t client_id_len;
};

/* Results of the calls below. */
enum store_result {
	STORE_OK = 0,
	STORE_FAILED = -1, /* the database failed: answer 503; *why says how */
	STORE_NOMEM = -2   /* out of memory */
};

/* PostgreSQL's connections: at most this many per process, shared by its
 * threads; and how long a connection attempt may take. */
#define STORE_PG_POOL              4
#define STORE_PG_CONNECT_TIMEOUT_S 2

/* Does spec name PostgreSQL (a postgresql:// or postgres:// URI)? */
bool store_is_postgresql(const char *spec);

/*
 * Opens the store spec names: a libpq connection URI (postgresql://...) or
 * else the path of a SQLite file, created if needed, in WAL mode. The
 * schema is migrated forward. Returns 0, or -1 with a sentence in err (the
 * directory is missing or unwritable, the file is not a database, the
 * server cannot be reached, or the schema is newer than this binary).
 */
int store_open(struct store **out, const char *spec, const struct store_options *opt, char *err,
	       size_t err_size);
void store_close(struct store *st);

/*
 * Builds the answer to a post from its two entries. It must depend on
 * nothing else (the room aside): PostgreSQL keeps the answer built when the
 * post is stored, while SQLite builds it again from the stored entries for
 * a retry, and a retry gets the first answer byte for byte either way.
 * Returns a malloc'd buffer (its length in *len), or NULL when out of memory.
 */
typedef char *(*store_answer_fn)(void *ctx, const struct store_entry *user,
				 const struct store_entry *bot, size_t *len);

/*
 * Stores a user's text and the bot's reply as two entries of room, or, when
 * client_id is not NULL and (room, client_id) was posted before, stores
 * nothing and returns the first answer. *answer is malloc'd (caller frees);
 * *replayed tells which case it was. why is set on failure, to a static
 * sentence for the log.
 */
enum store_result store_post(struct store *st, const char *room, const char *client_id,
			     size_t client_id_len, const char *text, size_t text_len,
			     const char *reply, size_t reply_len, store_answer_fn build, void *ctx,
			     char **answer, size_t *answer_len, bool *replayed, const char **why);

/*
 * A post for store_post_queue: the same fields and results as store_post's.
 * The caller leaves it alone from the call until done is called with it.
 */
struct store_post {
	const char *room;
	const char *client_id; /* NULL: none */
	size_t client_id_len;
	const char *text;
	size_t text_len;
	const char *reply;
	size_t reply_len;
	store_answer_fn build;
	void *ctx;
	void (*done)(struct store_post *p);
	/* Set before done is called. */
	enum store_result result;
	char *answer; /* malloc'd; NULL unless STORE_OK */
	size_t answer_len;
	bool replayed;
	const char *why;
	struct store_post *next; /* the store's own */
};

/*
 * Queues p, to be written by a thread of the store's own with the posts
 * queued alongside it, in one transaction; p->done is then called on that
 * thread, which it should not keep long (or at once, in the caller's
 * thread, when out of memory). A request need not wait for its post:
 * store_post is this and a wait.
 */
void store_post_queue(struct store *st, struct store_post *p);

/* Called for each entry read, oldest first: 0 goes on; a negative value
 * stops the read with STORE_NOMEM; a positive one stops it with STORE_OK,
 * the entries so far being all the caller wants. */
typedef int (*store_entry_fn)(void *ctx, const struct store_entry *e);

/*
 * Reads up to limit entries of room with seq > after, oldest first; with
 * after < 0, the newest limit entries. *last is the room's newest seq (0
 * for a room never posted to), read in the same snapshot, whether or not
 * each stopped the read early.
 */
enum store_result store_read(struct store *st, const char *room, int64_t after, unsigned limit,
			     store_entry_fn each, void *ctx, int64_t *last, const char **why);

/*
 * A read for store_read_queue: store_read's arguments and results, or with
 * check, store_check's. The caller leaves it alone from the call until done
 * is called with it.
 */
struct store_read {
	bool check; /* store_check instead of store_read */
	const char *room;
	int64_t after;
	unsigned limit;
	store_entry_fn each; /* called on the store's thread */
	void *ctx;
	void (*done)(struct store_read *r);
	/* Set before done is called. */
	enum store_result result;
	int64_t last;
	const char *why;
	char check_why[256];     /* check: store_check's sentence, which why points to */
	struct store_read *next; /* the store's own */
};

/* Does a read of this store wait on a network (PostgreSQL)? Then the server
 * queues its reads (store_read_queue) instead of making them on its own
 * threads. SQLite reads a local file, on the caller's thread. */
bool store_reads_wait(const struct store *st);

/*
 * Queues r, to be made by a thread of the store's own, which then calls
 * r->done with the results; done should hand r on and not keep that thread.
 * A store whose reads do not wait makes it at once, on the caller's thread,
 * and calls done there. At most STORE_READS_QUEUED wait at once: past that,
 * done comes at once with STORE_FAILED ("too many reads waiting").
 */
void store_read_queue(struct store *st, struct store_read *r);
#define STORE_READS_QUEUED 1024u

/*
 * A number that changes whenever another process commits a post to the
 * database, and may change for this process's own posts too (the server
 * wakes their waiters itself). SQLite: PRAGMA data_version, on the
 * writer's connection when it is free (which leaves out its own commits),
 * else on a connection of its own; PostgreSQL: a counter of the
 * notifications posts send, bumped too whenever the listening connection
 * was lost, as posts may have been missed. Cheap and never blocks: the
 * server polls it, from one thread at a time, to wake held requests.
 */
int store_data_version(struct store *st, uint64_t *out);

/* Rooms other processes posted to, as far as the store can tell. */
#define STORE_CHANGES_MAX 64
#define STORE_ROOM_MAX    64 /* the longest room name (CHAT_ROOM_MAX) */
struct store_changes {
	bool all; /* the store cannot tell which: any room may have changed */
	size_t n;
	char room[STORE_CHANGES_MAX][STORE_ROOM_MAX + 1];
};

/*
 * The rooms that posts by other processes changed since the last call, for
 * the server to wake only their waiters after store_data_version moved.
 * PostgreSQL: the rooms its notifications named (all, when there were more
 * than STORE_CHANGES_MAX or its listening connection was lost meanwhile);
 * SQLite cannot tell, and says all. Cheap and never blocks; called from one
 * thread at a time.
 */
void store_changed_rooms(struct store *st, struct store_changes *out);

/*
 * Is the database usable? Reads its schema version: 0, or -1 with a
 * sentence in why (the file is gone, unreadable, corrupt; the server is
 * down). For GET /chat/health.
 */
int store_check(struct store *st, char *why, size_t why_size);

#endif
