/* The store: ordering, idempotency, retention, migration, refusal of a
 * newer schema, locking, and several processes sharing one database. On
 * SQLite files by default; on PostgreSQL when CHAT_TEST_PG_HOST and
 * CHAT_TEST_PG_PORT name a server (t/store_pg.t starts one), a fresh
 * database per case. */
#include "store.h"
#include "tap.h"

#ifdef CHAT_POSTGRESQL
#include <libpq-fe.h>
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[4096];
static const char *pg_host, *pg_port; /* set: the run is on PostgreSQL */
#define SCHEMA_VERSION (pg_host ? STORE_PG_SCHEMA_VERSION : STORE_SQLITE_SCHEMA_VERSION)

#ifdef CHAT_POSTGRESQL
/* Database name for a case's file name: "order.db" -> "order_db". */
static void pg_name(char *out, size_t size, const char *name)
{
	snprintf(out, size, "%s", name);
	for (char *p = out; *p; p++)
		if (*p == '.' || *p == '/')
			*p = '_';
}

static void quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static PGconn *pg_admin(const char *db)
{
	const char *const keys[] = {"host", "port", "user", "dbname", NULL};
	const char *const vals[] = {pg_host, pg_port, "postgres", db, NULL};
	PGconn *pq = PQconnectdbParams(keys, vals, 0);
	if (PQstatus(pq) != CONNECTION_OK) {
		diag("connect to %s: %s", db, PQerrorMessage(pq));
		PQfinish(pq);
		return NULL;
	}
	PQsetNoticeProcessor(pq, quiet, NULL);
	return pq;
}

static int pg_exec(const char *db, const char *sql)
{
	PGconn *pq = pg_admin(db);
	if (!pq)
		return -1;
	PGresult *r = PQexec(pq, sql);
	int rc =
	    PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
	if (rc)
		diag("%s: %s", sql, PQerrorMessage(pq));
	PQclear(r);
	PQfinish(pq);
	return rc;
}
#endif

/* The store spec of a case: a path in the test's directory, or the URI of
 * a fresh (empty) PostgreSQL database. */
static const char *db_path(const char *name)
{
	static char path[4200];
#ifdef CHAT_POSTGRESQL
	if (pg_host) {
		char db[128], sql[256];
		pg_name(db, sizeof db, name);
		snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\"", db);
		pg_exec("postgres", sql);
		snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", db);
		pg_exec("postgres", sql);
		snprintf(path, sizeof path, "postgresql://postgres@/%s?host=%s&port=%s", db,
			 pg_host, pg_port);
		return path;
	}
#endif
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return path;
}

/* The same spec again, without making anything. */
static const char *db_again(const char *name)
{
	static char path[4200];
#ifdef CHAT_POSTGRESQL
	if (pg_host) {
		char db[128];
		pg_name(db, sizeof db, name);
		snprintf(path, sizeof path, "postgresql://postgres@/%s?host=%s&port=%s", db,
			 pg_host, pg_port);
		return path;
	}
#endif
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return path;
}

static struct store *open_store(const char *path, unsigned history)
{
	struct store *st;
	char err[512];
	struct store_options o = {.history = history};
	if (store_open(&st, path, &o, err, sizeof err) != 0) {
		diag("store_open %s: %s", path, err);
		return NULL;
	}
	return st;
}

/* The answer is "answer <user seq> <bot seq>", enough to tell posts apart. */
static char *answer(void *ctx, const struct store_entry *user, const struct store_entry *bot,
		    size_t *len)
{
	(void)ctx;
	char *a = malloc(64);
	if (!a)
		return NULL;
	int n = snprintf(a, 64, "answer %" PRId64 " %" PRId64, user->seq, bot->seq);
	*len = (size_t)n;
	return a;
}

/* Posts text to room; returns the answer (caller frees) or NULL. */
static char *post(struct store *st, const char *room, const char *cid, const char *text,
		  bool *replayed)
{
	char reply[256];
	snprintf(reply, sizeof reply, "received %s", text);
	char *a;
	size_t len;
	bool r;
	const char *why = NULL;
	enum store_result res = store_post(st, room, cid, cid ? strlen(cid) : 0, text, strlen(text),
					   reply, strlen(reply), answer, NULL, &a, &len, &r, &why);
	if (res != STORE_OK) {
		diag("store_post: %d %s", (int)res, why ? why : "");
		return NULL;
	}
	if (replayed)
		*replayed = r;
	return a;
}

/* What store_read gave, flattened. */
struct seen {
	size_t n;
	int64_t seq[2048];
	int role[2048];
	char text[2048][48];
	bool has_cid[2048];
};

static int collect(void *ctx, const struct store_entry *e)
{
	struct seen *s = ctx;
	if (s->n >= 2048)
		return -1;
	s->seq[s->n] = e->seq;
	s->role[s->n] = (int)e->role;
	size_t n = e->text_len < 47 ? e->text_len : 47;
	memcpy(s->text[s->n], e->text, n);
	s->text[s->n][n] = '\0';
	s->has_cid[s->n] = e->client_id != NULL;
	s->n++;
	return 0;
}

/* collect, stopping the read once it holds two entries. */
static int collect_two(void *ctx, const struct store_entry *e)
{
	struct seen *s = ctx;
	if (collect(ctx, e) != 0)
		return -1;
	return s->n >= 2 ? 1 : 0;
}

/* Out of memory at the first entry. */
static int refuse(void *ctx, const struct store_entry *e)
{
	(void)ctx, (void)e;
	return -1;
}

static enum store_result read_room(struct store *st, const char *room, int64_t after,
				   unsigned limit, struct seen *s, int64_t *last)
{
	const char *why = NULL;
	memset(s, 0, sizeof *s);
	enum store_result r = store_read(st, room, after, limit, collect, s, last, &why);
	if (r != STORE_OK)
		diag("store_read: %s", why ? why : "");
	return r;
}

static int sql_int(const char *name, const char *sql)
{
#ifdef CHAT_POSTGRESQL
	if (pg_host) {
		char dbn[128];
		pg_name(dbn, sizeof dbn, name);
		PGconn *pq = pg_admin(dbn);
		if (!pq)
			return -1;
		PGresult *r = PQexec(pq, sql);
		int v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
			    ? atoi(PQgetvalue(r, 0, 0))
			    : -1;
		PQclear(r);
		PQfinish(pq);
		return v;
	}
#endif
	const char *path = db_again(name);
	sqlite3 *db;
	sqlite3_stmt *s;
	int v = -1;
	if (sqlite3_open(path, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			v = sqlite3_column_int(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return v;
}

static int sql_exec(const char *name, const char *sql)
{
#ifdef CHAT_POSTGRESQL
	if (pg_host) {
		char dbn[128];
		pg_name(dbn, sizeof dbn, name);
		return pg_exec(dbn, sql) == 0 ? SQLITE_OK : SQLITE_ERROR;
	}
#endif
	const char *path = db_again(name);
	sqlite3 *db;
	int rc = sqlite3_open(path, &db);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

/* The schema version the database records. */
static int schema_version(const char *name)
{
	return sql_int(name,
		       pg_host ? "SELECT version FROM chat_fcgi_schema" : "PRAGMA user_version");
}

static void test_order_and_idempotency(void)
{
	struct store *st = open_store(db_path("order.db"), 1000);
	if (!ok(st, "a new database is created"))
		return;
	is_int(schema_version("order.db"), SCHEMA_VERSION,
	       "the new database has the current schema version");
	if (!pg_host)
		is_int(sql_int("order.db", "SELECT journal_mode = 'wal' FROM pragma_journal_mode"),
		       1, "the file is in WAL mode");

	bool replayed = true;
	char *a = post(st, "lobby", "c-1", "hi", &replayed);
	is_str(a, "answer 1 2", "the first post in a room gets seq 1 (user) and 2 (bot)");
	ok(!replayed, "... and is not a replay");
	free(a);
	a = post(st, "lobby", "c-1", "hi again", &replayed);
	is_str(a, "answer 1 2", "the same client id in the same room gets the first answer");
	ok(replayed, "... marked as a replay");
	free(a);
	a = post(st, "other", "c-1", "elsewhere", NULL);
	is_str(a, "answer 1 2", "the same client id in another room is a new post");
	free(a);
	a = post(st, "lobby", NULL, "no id", NULL);
	is_str(a, "answer 3 4", "a post without client id continues the room's sequence");
	free(a);
	a = post(st, "lobby", NULL, "no id", NULL);
	is_str(a, "answer 5 6", "... and is never deduplicated");
	free(a);

	struct seen s;
	int64_t last;
	if (read_room(st, "lobby", 0, 100, &s, &last) == STORE_OK) {
		is_int(s.n, 6, "lobby holds 6 entries: the retry stored nothing");
		is_int(last, 6, "its last seq is 6");
		bool ordered = true;
		for (size_t i = 0; i < s.n; i++)
			ordered = ordered && s.seq[i] == (int64_t)i + 1 &&
				  s.role[i] == (i % 2 ? STORE_BOT : STORE_USER);
		ok(ordered, "entries come oldest first, user then bot");
		is_str(s.text[0], "hi", "the user's text is stored");
		is_str(s.text[1], "received hi", "so is the reply");
		ok(s.has_cid[0] && s.has_cid[1] && !s.has_cid[2], "client ids are kept, or NULL");
	}
	read_room(st, "lobby", 4, 100, &s, &last);
	ok(s.n == 2 && s.seq[0] == 5 && s.seq[1] == 6, "after=4 gives seq 5 and 6");
	read_room(st, "lobby", 1, 2, &s, &last);
	ok(s.n == 2 && s.seq[0] == 2 && s.seq[1] == 3, "after=1 limit=2 gives seq 2 and 3");
	read_room(st, "lobby", -1, 3, &s, &last);
	ok(s.n == 3 && s.seq[0] == 4 && s.seq[2] == 6,
	   "no after, limit 3: the newest 3, oldest first");
	read_room(st, "lobby", 6, 100, &s, &last);
	ok(s.n == 0 && last == 6, "after the last seq: nothing, and the last seq");
	read_room(st, "nobody-here", -1, 100, &s, &last);
	ok(s.n == 0 && last == 0, "an unknown room is empty, last seq 0");

	const char *why_stop = NULL;
	memset(&s, 0, sizeof s);
	enum store_result stop = store_read(st, "lobby", 1, 100, collect_two, &s, &last, &why_stop);
	ok(stop == STORE_OK && s.n == 2 && s.seq[0] == 2 && s.seq[1] == 3,
	   "a callback that says stop (> 0) ends the read, STORE_OK, with what it took");
	is_int(last, 6, "... and the room's last seq is still the newest");
	stop = store_read(st, "lobby", 1, 100, refuse, NULL, &last, &why_stop);
	is_int(stop, STORE_NOMEM, "a callback out of memory (< 0): STORE_NOMEM");

	/* Texts are bytes: NUL inside, and the empty string. */
	char reply[] = "received a\0b";
	char *ans;
	size_t len;
	bool r;
	const char *why;
	store_post(st, "bytes", NULL, 0, "a\0b", 3, reply, sizeof reply - 1, answer, NULL, &ans,
		   &len, &r, &why);
	free(ans);
	store_post(st, "bytes", NULL, 0, "", 0, "received ", 9, answer, NULL, &ans, &len, &r, &why);
	free(ans);
	struct seen *b = calloc(1, sizeof *b);
	if (!b)
		abort();
	const char *w;
	int64_t l;
	store_read(st, "bytes", 0, 10, collect, b, &l, &w);
	ok(b->n == 4 && memcmp(b->text[0], "a\0b", 3) == 0 && b->text[2][0] == '\0',
	   "a NUL byte and an empty text survive");
	free(b);
	store_close(st);
}

static void test_retention(void)
{
	struct store *st = open_store(db_path("keep.db"), 10);
	if (!st)
		return;
	for (int i = 0; i < 20; i++) {
		char cid[16], text[16];
		snprintf(cid, sizeof cid, "c%d", i);
		snprintf(text, sizeof text, "m%d", i);
		free(post(st, "r", cid, text, NULL));
	}
	struct seen s;
	int64_t last;
	read_room(st, "r", 0, 500, &s, &last);
	ok(s.n == 10 && s.seq[0] == 31 && s.seq[9] == 40 && last == 40,
	   "--room-history 10: the newest 10 of 40 entries are kept (31..40)");
	is_int(sql_int("keep.db", pg_host ? "SELECT count(*) FROM posts"
					  : "SELECT count(*) FROM entries WHERE role = 0 AND"
					    " client_id IS NOT NULL"),
	       5, "the client ids of posts whose entries fell out are dropped too");
	bool replayed = false;
	char *a = post(st, "r", "c19", "again", &replayed);
	ok(replayed && a && strcmp(a, "answer 39 40") == 0, "a kept post still replays");
	free(a);
	read_room(st, "r", -1, 100, &s, &last);
	ok(s.n == 10 && s.seq[0] == 31, "newest-N reads stay right after trimming");
	store_close(st);

	/* A shorter history from the next start: the first posts delete
	 * everything below it, not only what they push out. */
	st = open_store(db_again("keep.db"), 4);
	if (!st)
		return;
	free(post(st, "r", "d1", "shorter", NULL));
	is_int(sql_int("keep.db", "SELECT count(*) FROM entries"), 4,
	       "reopened with --room-history 4: a post leaves the newest 4 entries");
	free(post(st, "r", "d2", "shorter", NULL));
	free(post(st, "r", "d3", "shorter", NULL));
	read_room(st, "r", 0, 500, &s, &last);
	ok(s.n == 4 && s.seq[0] == 43 && last == 46 &&
	       sql_int("keep.db", "SELECT count(*) FROM entries") == 4,
	   "... and so do the posts after it (43..46)");
	store_close(st);
}

/* With a longer history, SQLite deletes a room's oldest entries every few
 * posts rather than on each: what is out of the history but not deleted
 * yet is never read, nor replayed. */
static void test_retention_batched(void)
{
	struct store *st = open_store(db_path("keep100.db"), 100);
	if (!st)
		return;
	for (int i = 0; i < 80; i++) {
		char cid[16];
		snprintf(cid, sizeof cid, "k%d", i);
		free(post(st, "r", cid, cid, NULL));
	}
	struct seen s;
	int64_t last;
	read_room(st, "r", 0, 500, &s, &last);
	ok(s.n == 100 && s.seq[0] == 61 && s.seq[99] == 160 && last == 160,
	   "--room-history 100: the newest 100 of 160 entries are read (61..160)");
	read_room(st, "r", -1, 500, &s, &last);
	ok(s.n == 100 && s.seq[0] == 61, "... as the newest 500");
	read_room(st, "r", 10, 5, &s, &last);
	ok(s.n == 5 && s.seq[0] == 61, "... and after a seq out of the history");
	bool replayed = false;
	char *a = post(st, "r", "k30", "again", &replayed);
	ok(replayed && a && strcmp(a, "answer 61 62") == 0, "the oldest kept post replays");
	free(a);
	replayed = true;
	a = post(st, "r", "k29", "again", &replayed);
	ok(!replayed && a && strcmp(a, "answer 161 162") == 0,
	   "a post out of the history is stored again: %s", a ? a : "(failed)");
	free(a);
	read_room(st, "r", 0, 500, &s, &last);
	ok(s.n == 100 && s.seq[0] == 63 && s.seq[99] == 162 && strcmp(s.text[98], "again") == 0,
	   "... as the newest entries (63..162)");
	int kept = sql_int("keep100.db", "SELECT count(*) FROM entries");
	ok(kept >= 100 && kept <= 110, "the file holds 100 to 110 entries of the room: %d", kept);
	store_close(st);
}

/* The schema of version 1, as released: migrated forward on open. */
static void test_migration(void)
{
	const char *path = db_path("v1.db");
	int rc =
	    pg_host
		? sql_exec("v1.db",
			   "CREATE TABLE chat_fcgi_schema(version integer NOT NULL);"
			   "INSERT INTO chat_fcgi_schema VALUES(1);"
			   "CREATE TABLE rooms(name text PRIMARY KEY, last_seq bigint NOT NULL);"
			   "CREATE TABLE entries(room text NOT NULL, seq bigint NOT NULL,"
			   " role smallint NOT NULL, text bytea NOT NULL, time_ms bigint NOT NULL,"
			   " client_id text, PRIMARY KEY(room, seq));"
			   "INSERT INTO rooms VALUES('old', 2);"
			   "INSERT INTO entries VALUES('old', 1, 0, 'before', 1700000000000, NULL);"
			   "INSERT INTO entries VALUES('old', 2, 1, 'received before',"
			   " 1700000000000, NULL);")
		: sql_exec(
		      "v1.db",
		      "PRAGMA journal_mode = WAL;"
		      "CREATE TABLE rooms(name TEXT PRIMARY KEY NOT NULL, last_seq INTEGER NOT "
		      "NULL);"
		      "CREATE TABLE entries(room TEXT NOT NULL, seq INTEGER NOT NULL, role "
		      "INTEGER NOT NULL, text BLOB NOT NULL, time_ms INTEGER NOT NULL, client_id "
		      "TEXT, PRIMARY KEY(room, seq));"
		      "INSERT INTO rooms VALUES('old', 2);"
		      "INSERT INTO entries VALUES('old', 1, 0, 'before', 1700000000000, NULL);"
		      "INSERT INTO entries VALUES('old', 2, 1, 'received before', 1700000000000, "
		      "NULL);"
		      "PRAGMA user_version = 1;");
	is_int(rc, SQLITE_OK, "a version-1 database is made by hand");
	struct store *st = open_store(path, 1000);
	if (!ok(st, "a version-1 database opens"))
		return;
	is_int(schema_version("v1.db"), SCHEMA_VERSION, "... and is migrated to version %d",
	       SCHEMA_VERSION);
	struct seen s;
	int64_t last;
	read_room(st, "old", 0, 10, &s, &last);
	ok(s.n == 2 && strcmp(s.text[0], "before") == 0, "its entries are still there");
	char *a = post(st, "old", "c", "after", NULL);
	is_str(a, "answer 3 4", "new posts continue its sequence");
	free(a);
	bool replayed = false;
	a = post(st, "old", "c", "after", &replayed);
	ok(replayed, "idempotency, new in version 2, works on the migrated file");
	free(a);
	store_close(st);

	st = open_store(path, 1000);
	ok(st, "opening it again migrates nothing and works");
	store_close(st);
}

/* SQLite's version 2, as released, with a post and its stored answer:
 * version 3 drops the answers and builds them again from the entries. */
static void test_migration_v2(void)
{
	if (pg_host)
		return;
	const char *path = db_path("v2.db");
	int rc = sql_exec(
	    "v2.db",
	    "PRAGMA journal_mode = WAL;"
	    "CREATE TABLE rooms(name TEXT PRIMARY KEY NOT NULL, last_seq INTEGER NOT NULL);"
	    "CREATE TABLE entries(room TEXT NOT NULL, seq INTEGER NOT NULL, role INTEGER NOT NULL,"
	    " text BLOB NOT NULL, time_ms INTEGER NOT NULL, client_id TEXT,"
	    " PRIMARY KEY(room, seq));"
	    "CREATE TABLE posts(room TEXT NOT NULL, client_id TEXT NOT NULL, seq INTEGER NOT NULL,"
	    " answer BLOB NOT NULL, PRIMARY KEY(room, client_id));"
	    "CREATE INDEX posts_by_seq ON posts(room, seq);"
	    "INSERT INTO rooms VALUES('old', 2);"
	    "INSERT INTO entries VALUES('old', 1, 0, 'before', 1700000000000, 'k');"
	    "INSERT INTO entries VALUES('old', 2, 1, 'received before', 1700000000000, 'k');"
	    "INSERT INTO posts VALUES('old', 'k', 1, 'answer 1 2');"
	    "PRAGMA user_version = 2;");
	is_int(rc, SQLITE_OK, "a version-2 database is made by hand");
	struct store *st = open_store(path, 1000);
	if (!ok(st, "a version-2 database opens"))
		return;
	is_int(schema_version("v2.db"), SCHEMA_VERSION, "... and is migrated to version %d",
	       SCHEMA_VERSION);
	is_int(sql_int("v2.db", "SELECT count(*) FROM sqlite_schema WHERE name = 'posts'"), 0,
	       "... which has no table of answers");
	bool replayed = false;
	char *a = post(st, "old", "k", "changed", &replayed);
	ok(replayed && a && strcmp(a, "answer 1 2") == 0,
	   "a post made before the migration still replays, its answer built from its entries");
	free(a);
	a = post(st, "old", "n", "after", &replayed);
	ok(!replayed && a && strcmp(a, "answer 3 4") == 0, "new posts continue its sequence");
	free(a);
	a = post(st, "old", "n", "after", &replayed);
	ok(replayed && a && strcmp(a, "answer 3 4") == 0, "... and replay");
	free(a);
	store_close(st);
}

/* SQLite's version 3, as released, with two rooms: version 4 keys the
 * entries by room number and seq, and keeps their order, client ids and
 * retries. */
static void test_migration_v3(void)
{
	if (pg_host)
		return;
	const char *path = db_path("v3.db");
	int rc = sql_exec(
	    "v3.db",
	    "PRAGMA journal_mode = WAL;"
	    "CREATE TABLE entries(room TEXT NOT NULL, seq INTEGER NOT NULL, role INTEGER NOT NULL,"
	    " text BLOB NOT NULL, time_ms INTEGER NOT NULL, client_id TEXT,"
	    " PRIMARY KEY(room, seq));"
	    "CREATE INDEX entries_by_client ON entries(room, client_id, seq)"
	    " WHERE client_id IS NOT NULL AND role = 0;"
	    "CREATE TABLE rooms(name TEXT PRIMARY KEY NOT NULL, last_seq INTEGER NOT NULL)"
	    " WITHOUT ROWID;"
	    "INSERT INTO rooms VALUES('zed', 4), ('alpha', 2);"
	    "INSERT INTO entries VALUES('zed', 1, 0, 'z one', 1700000000000, 'k');"
	    "INSERT INTO entries VALUES('zed', 2, 1, 'received z one', 1700000000000, 'k');"
	    "INSERT INTO entries VALUES('zed', 3, 0, 'z two', 1700000000001, NULL);"
	    "INSERT INTO entries VALUES('zed', 4, 1, 'received z two', 1700000000001, NULL);"
	    "INSERT INTO entries VALUES('alpha', 1, 0, 'a one', 1700000000002, 'k');"
	    "INSERT INTO entries VALUES('alpha', 2, 1, 'received a one', 1700000000002, 'k');"
	    "PRAGMA user_version = 3;");
	is_int(rc, SQLITE_OK, "a version-3 database is made by hand");
	struct store *st = open_store(path, 1000);
	if (!ok(st, "a version-3 database opens"))
		return;
	is_int(schema_version("v3.db"), SCHEMA_VERSION, "... and is migrated to version %d",
	       SCHEMA_VERSION);
	is_int(sql_int("v3.db", "SELECT count(*) FROM pragma_index_list('entries')"), 1,
	       "... where the entries have one index, of the client ids, and no primary key's");
	is_int(sql_int("v3.db", "SELECT count(*) FROM pragma_table_info('entries')"
				" WHERE name = 'room'"),
	       0, "... and no room name in each row");
	struct seen s;
	int64_t last = 0;
	read_room(st, "zed", 0, 10, &s, &last);
	ok(s.n == 4 && s.seq[0] == 1 && s.seq[3] == 4 && strcmp(s.text[2], "z two") == 0 &&
	       s.has_cid[0] && !s.has_cid[2] && last == 4,
	   "a room's entries are all there, in order, with their client ids");
	read_room(st, "alpha", 0, 10, &s, &last);
	ok(s.n == 2 && strcmp(s.text[0], "a one") == 0 && last == 2,
	   "... and the other room's, apart");
	bool replayed = false;
	char *a = post(st, "zed", "k", "changed", &replayed);
	ok(replayed && a && strcmp(a, "answer 1 2") == 0, "a post made before it replays");
	free(a);
	a = post(st, "alpha", "n", "after", &replayed);
	ok(!replayed && a && strcmp(a, "answer 3 4") == 0, "new posts continue each sequence");
	free(a);
	a = post(st, "new-room", "k", "first", &replayed);
	ok(!replayed && a && strcmp(a, "answer 1 2") == 0,
	   "a new room starts at 1, its client ids apart from the others'");
	free(a);
	read_room(st, "zed", 2, 10, &s, &last);
	ok(s.n == 2 && s.seq[0] == 3 && last == 4, "reading after a seq still works");
	store_close(st);
}

/* The largest seq and room number an entry's key holds (2^36 - 1 and
 * 2^27 - 1): a post past them fails, saying why, and breaks nothing else. */
static void test_numbers_used_up(void)
{
	if (pg_host)
		return;
	const char *path = db_path("full.db");
	struct store *st = open_store(path, 1000);
	if (!ok(st, "a new database opens"))
		return;
	char *a = post(st, "busy", NULL, "one", NULL);
	free(a);
	a = post(st, "other", NULL, "one", NULL);
	free(a);
	store_close(st);
	is_int(sql_exec("full.db", "UPDATE rooms SET last_seq = 68719476733 WHERE name = 'busy'"),
	       SQLITE_OK, "a room is moved to 2 below the last seq");
	st = open_store(path, 1000);
	if (!st)
		return;
	a = post(st, "busy", NULL, "fits", NULL);
	is_str(a, "answer 68719476734 68719476735", "a post that takes the last seqs is stored");
	free(a);
	char *got;
	size_t len;
	bool r;
	const char *why = NULL;
	enum store_result res = store_post(st, "busy", NULL, 0, "more", 4, "received more", 13,
					   answer, NULL, &got, &len, &r, &why);
	ok(res == STORE_FAILED && why && strstr(why, "used up"),
	   "the next one fails, saying so: %s", why ? why : "(none)");
	struct seen s;
	int64_t last = 0;
	read_room(st, "busy", -1, 2, &s, &last);
	ok(s.n == 2 && s.seq[1] == 68719476735 && last == 68719476735,
	   "the room's newest entries read back");
	a = post(st, "other", NULL, "two", NULL);
	is_str(a, "answer 3 4", "other rooms go on");
	free(a);
	store_close(st);

	is_int(sql_exec("full.db", "INSERT INTO rooms VALUES('last', 134217727, 0)"), SQLITE_OK,
	       "a room is given the last room number");
	st = open_store(path, 1000);
	if (!st)
		return;
	why = NULL;
	res = store_post(st, "one-too-many", NULL, 0, "hi", 2, "received hi", 11, answer, NULL,
			 &got, &len, &r, &why);
	ok(res == STORE_FAILED && why && strstr(why, "used up"),
	   "a new room past it fails, saying so: %s", why ? why : "(none)");
	a = post(st, "last", NULL, "hi", NULL);
	is_str(a, "answer 1 2", "the room with the last number takes posts");
	free(a);
	read_room(st, "last", 0, 10, &s, &last);
	ok(s.n == 2 && s.seq[0] == 1, "... and reads them back, apart from the others");
	store_close(st);
}

/* Posts of test_writer_rooms, queued together. */
static pthread_mutex_t queued_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queued_cv = PTHREAD_COND_INITIALIZER;
static int queued_done;

static void queued(struct store_post *p)
{
	(void)p;
	pthread_mutex_lock(&queued_lock);
	queued_done++;
	pthread_cond_signal(&queued_cv);
	pthread_mutex_unlock(&queued_lock);
}

static struct store_post queued_post(const char *room, const char *text, const char *reply)
{
	return (struct store_post){.room = room,
				   .text = text,
				   .text_len = strlen(text),
				   .reply = reply,
				   .reply_len = strlen(reply),
				   .build = answer,
				   .done = queued};
}

/* Posts text to room without a client id, expecting the answer want. */
static void posts_as(struct store *st, const char *room, const char *text, const char *want,
		     const char *name)
{
	char *got = post(st, room, NULL, text, NULL);
	is_str(got, want, "%s", name);
	free(got);
}

/* The writer keeps each room's number and last seq between its batches:
 * they must give way to another process's posts, and to a batch that
 * failed and was rolled back. */
static void test_writer_rooms(void)
{
	if (pg_host)
		return;
	const char *path = db_path("writer.db");
	struct store *a = open_store(path, 1000), *b = open_store(path, 1000);
	if (!ok(a && b, "two stores (as two processes) open one file")) {
		store_close(a);
		store_close(b);
		return;
	}
	posts_as(a, "r", "one", "answer 1 2", "the first store posts to a room");
	posts_as(b, "r", "two", "answer 3 4", "the other posts to it");
	posts_as(a, "r", "three", "answer 5 6",
		 "the first goes on after the other's post, not its own");
	posts_as(a, "r", "four", "answer 7 8", "... and after its own");
	store_close(b);

	/* A batch of a post to r and one to a room out of numbers: it fails
	 * whole, and r's next post takes the seqs the failed one did not. */
	is_int(sql_exec("writer.db", "INSERT INTO rooms VALUES('spent', 99, 68719476735)"),
	       SQLITE_OK, "a room with no seq left");
	posts_as(a, "x", "warm", "answer 1 2", "a post sees that change");
	sqlite3 *holder = NULL;
	sqlite3_open(db_again("writer.db"), &holder);
	is_int(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK,
	       "another connection holds the write lock a moment");
	queued_done = 0;
	struct store_post first = queued_post("x", "held", "received held");
	struct store_post in_r = queued_post("r", "lost", "received lost");
	struct store_post spent = queued_post("spent", "none", "received none");
	store_post_queue(a, &first);
	/* The store's thread has taken the first alone and waits for the
	 * lock; the next two make one batch behind it. */
	struct timespec pause = {0, 100 * 1000000L};
	nanosleep(&pause, NULL);
	store_post_queue(a, &in_r);
	store_post_queue(a, &spent);
	nanosleep(&pause, NULL);
	sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(holder);
	pthread_mutex_lock(&queued_lock);
	while (queued_done < 3)
		pthread_cond_wait(&queued_cv, &queued_lock);
	pthread_mutex_unlock(&queued_lock);
	ok(first.result == STORE_OK, "the post before them is stored");
	ok(in_r.result == STORE_FAILED && spent.result == STORE_FAILED,
	   "the batch with the spent room fails whole");
	free(first.answer);
	free(in_r.answer);
	free(spent.answer);
	posts_as(a, "r", "five", "answer 9 10",
		 "r's next post takes 9 and 10, as if the failed one never was");
	struct seen s;
	int64_t last = 0;
	read_room(a, "r", 0, 20, &s, &last);
	bool gapless = s.n == 10 && last == 10;
	for (size_t i = 0; i < s.n; i++)
		gapless = gapless && s.seq[i] == (int64_t)i + 1;
	ok(gapless, "r runs 1..10 with no gap");
	store_close(a);
}

static void test_refusals(void)
{
	const char *path = db_path("future.db");
	sql_exec("future.db", pg_host ? "CREATE TABLE chat_fcgi_schema(version integer NOT NULL);"
					"INSERT INTO chat_fcgi_schema VALUES(99)"
				      : "PRAGMA user_version = 99");
	struct store *st = NULL;
	char err[512] = "";
	struct store_options o = {.history = 10};
	is_int(store_open(&st, path, &o, err, sizeof err), -1,
	       "a database newer than this binary is refused");
	ok(strstr(err, "schema version 99") && strstr(err, "newer"), "... saying so: %s", err);
	is_int(schema_version("future.db"), 99, "... and left as it was");

	if (pg_host) {
		/* A port nobody listens on (the server's, plus one). */
		char uri[512];
		snprintf(uri, sizeof uri, "postgresql://postgres@/x?host=%s&port=%d", pg_host,
			 atoi(pg_port) + 1);
		err[0] = '\0';
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		is_int(store_open(&st, uri, &o, err, sizeof err), -1,
		       "an unreachable PostgreSQL is refused");
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ok(strstr(err, "cannot connect"), "... saying so: %s", err);
		ok(t1.tv_sec - t0.tv_sec < 10, "... at once");
		return;
	}

	err[0] = '\0';
	is_int(store_open(&st, db_path("no/such/dir/chat.db"), &o, err, sizeof err), -1,
	       "a missing directory is refused");
	ok(strstr(err, "does not exist"), "... saying so: %s", err);

	FILE *f = fopen(db_path("junk.db"), "w");
	if (f) {
		fputs("this is not a database, but it is long enough to have a header....\n"
		      "more text, more text, more text, more text, more text, more text\n",
		      f);
		fclose(f);
	}
	err[0] = '\0';
	is_int(store_open(&st, db_path("junk.db"), &o, err, sizeof err), -1,
	       "a file that is not a database is refused");
	ok(strstr(err, "junk.db"), "... naming it: %s", err);

	err[0] = '\0';
	is_int(store_open(&st, db_path("junk.db/chat.db"), &o, err, sizeof err), -1,
	       "a directory that is a file is refused");
	ok(strstr(err, "not a directory"), "... saying so: %s", err);
}

/* A writer holding the lock past the busy timeout: the post fails cleanly,
 * then works once the lock is gone. */
static void test_locked(void)
{
	const char *path = db_path("locked.db");
	struct store *st = open_store(path, 100);
	if (!st)
		return;
	sqlite3 *holder = NULL;
#ifdef CHAT_POSTGRESQL
	PGconn *pg_holder = NULL;
	if (pg_host) {
		/* A post to room x waits for this uncommitted row of x. */
		pg_holder = pg_admin("locked_db");
		PGresult *res = PQexec(pg_holder, "BEGIN; INSERT INTO rooms VALUES('x', 0)");
		is_int(PQresultStatus(res), PGRES_COMMAND_OK, "another connection locks room x");
		PQclear(res);
	}
#endif
	if (!pg_host) {
		sqlite3_open(path, &holder);
		is_int(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK,
		       "another connection takes the write lock");
	}
	char *a;
	size_t len;
	bool r;
	const char *why = NULL;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	enum store_result res = store_post(st, "x", NULL, 0, "m", 1, "received m", 10, answer, NULL,
					   &a, &len, &r, &why);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	is_int(res, STORE_FAILED, "a post under a held lock fails");
	ok(why && strstr(why, "locked"), "... saying the database is locked: %s", why ? why : "");
	ok(secs < 30, "... without hanging (%.1f s)", secs);
	struct seen s;
	int64_t last;
	is_int(read_room(st, "x", 0, 10, &s, &last), STORE_OK, "reads go on during the lock");
	if (holder) {
		sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(holder);
	}
#ifdef CHAT_POSTGRESQL
	if (pg_holder) {
		PQclear(PQexec(pg_holder, "ROLLBACK"));
		PQfinish(pg_holder);
	}
#endif
	a = post(st, "x", NULL, "m", NULL);
	is_str(a, "answer 1 2", "once the lock is gone, posts work again");
	free(a);
	store_close(st);
}

/* Waits up to 2 s for the store's data version to move from was; the
 * milliseconds it took. */
static double version_changes(struct store *st, uint64_t was, uint64_t *now)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 400; i++) {
		if (store_data_version(st, now) == 0 && *now != was)
			break;
		struct timespec pause = {0, 5 * 1000000L};
		nanosleep(&pause, NULL);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
}

static void test_data_version(void)
{
	const char *path = db_path("version.db");
	struct store *a = open_store(path, 100), *b = open_store(path, 100);
	if (!a || !b) {
		store_close(a);
		store_close(b);
		return;
	}
	uint64_t v1 = 0, v2 = 0, v3 = 0;
	is_int(store_data_version(a, &v1), 0, "store_data_version works");
	store_data_version(a, &v2);
	ok(v1 == v2, "it is stable while nothing is written");
	free(post(b, "r", NULL, "x", NULL));
	/* On PostgreSQL the change arrives as a notification: soon. */
	double waited = version_changes(a, v2, &v3);
	ok(v3 != v2, "it changes when another store on the database commits (%.0f ms)", waited);
	ok(waited < 500, "... within 500 ms");
	v1 = v3;
	free(post(a, "r", NULL, "y", NULL));
	if (pg_host) {
		version_changes(a, v1, &v3);
		ok(v3 != v1, "... and when this store's own posts commit (their notification)");
	} else {
		/* Asked on the writer's connection: the server wakes the waiters
		 * of its own posts itself, so they need not wake everyone. (The
		 * first post opened the writer, which counts as a change.) */
		store_data_version(a, &v1);
		free(post(a, "r", NULL, "y2", NULL));
		store_data_version(a, &v3);
		store_data_version(a, &v3);
		ok(v3 == v1, "... but not for this store's own posts");
	}
	v1 = v3;
	free(post(b, "r", NULL, "z", NULL));
	waited = version_changes(a, v1, &v3);
	ok(v3 != v1, "... and again for the other store's next post (%.0f ms)", waited);
	char why[256] = "";
	is_int(store_check(a, why, sizeof why), 0, "store_check: a sound store is healthy");
	sql_exec("version.db",
		 pg_host ? "UPDATE chat_fcgi_schema SET version = 99" : "PRAGMA user_version = 99");
	is_int(store_check(a, why, sizeof why), -1, "a file changed under it is reported");
	ok(strstr(why, "99") != NULL, "... saying how: %s", why);
	store_close(a);
	store_close(b);
}

/* Reads through store_read_queue: on SQLite made at once, on the caller's
 * thread; on PostgreSQL by the store's own threads. Each is done once,
 * with what store_read gives. */
static pthread_mutex_t reads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reads_cv = PTHREAD_COND_INITIALIZER;
static int reads_done;

/* How long a queued read may take before the test calls it lost. */
#define READ_PATIENCE_S 15

struct queued_read {
	struct store_read r; /* first: done gets its address */
	struct seen *s;      /* NULL: only counted */
	size_t n;
	int64_t seq_sum;
	int dones;
	pthread_t done_on;
};

static int count_entry(void *ctx, const struct store_entry *e)
{
	struct queued_read *q = ctx;
	q->n++;
	q->seq_sum += e->seq;
	return 0;
}

static int collect_queued(void *ctx, const struct store_entry *e)
{
	struct queued_read *q = ctx;
	q->n++;
	return collect(q->s, e);
}

static void read_done(struct store_read *r)
{
	struct queued_read *q = (struct queued_read *)r;
	pthread_mutex_lock(&reads_lock);
	q->dones++;
	q->done_on = pthread_self();
	reads_done++;
	pthread_cond_broadcast(&reads_cv);
	pthread_mutex_unlock(&reads_lock);
}

static void queued_read_init(struct queued_read *q, const char *room, int64_t after, unsigned limit,
			     struct seen *s)
{
	*q = (struct queued_read){.s = s};
	q->r = (struct store_read){.room = room,
				   .after = after,
				   .limit = limit,
				   .each = s ? collect_queued : count_entry,
				   .ctx = q,
				   .done = read_done};
	if (s)
		memset(s, 0, sizeof *s);
}

/* Waits until reads_done reaches want; false if it did not in time. */
static bool reads_await(int want)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += READ_PATIENCE_S;
	pthread_mutex_lock(&reads_lock);
	while (reads_done < want)
		if (pthread_cond_timedwait(&reads_cv, &reads_lock, &until) == ETIMEDOUT)
			break;
	bool got = reads_done >= want;
	pthread_mutex_unlock(&reads_lock);
	return got;
}

/* Queues q and waits for it; whether its done came at once on this thread
 * (SQLite) or later on another (PostgreSQL), as the store says it should. */
static bool queue_and_wait(struct store *st, struct queued_read *q)
{
	pthread_mutex_lock(&reads_lock);
	int want = reads_done + 1;
	pthread_mutex_unlock(&reads_lock);
	store_read_queue(st, &q->r);
	/* Done at once, or not until another thread takes q: no lock. */
	if (!store_reads_wait(st))
		return q->dones == 1 && pthread_equal(q->done_on, pthread_self());
	if (!reads_await(want))
		return false;
	pthread_mutex_lock(&reads_lock);
	bool right = q->dones == 1 && !pthread_equal(q->done_on, pthread_self());
	pthread_mutex_unlock(&reads_lock);
	return right;
}

static bool same_entries(const struct seen *a, const struct seen *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->seq[i] != b->seq[i] || a->role[i] != b->role[i] ||
		    strcmp(a->text[i], b->text[i]) != 0 || a->has_cid[i] != b->has_cid[i])
			return false;
	return true;
}

static void test_read_queue(void)
{
	struct store *st = open_store(db_path("queued.db"), 1000);
	if (!st)
		return;
	const char *where = pg_host ? "on the store's thread" : "at once, on the caller's thread";
	is_int(store_reads_wait(st), pg_host != NULL, "store_reads_wait: %s",
	       pg_host ? "true on PostgreSQL" : "false on SQLite");
	for (int i = 0; i < 5; i++) {
		char text[16];
		snprintf(text, sizeof text, "q%d", i);
		free(post(st, "q", i % 2 ? text : NULL, text, NULL));
	}
	free(post(st, "elsewhere", NULL, "x", NULL));

	struct seen *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
	if (!want || !got)
		abort();
	static const struct {
		int64_t after;
		unsigned limit;
	} reads[] = {{0, 100}, {4, 3}, {-1, 4}, {10, 5}, {-1, 0}};
	for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
		int64_t last = 0;
		read_room(st, "q", reads[i].after, reads[i].limit, want, &last);
		struct queued_read q;
		queued_read_init(&q, "q", reads[i].after, reads[i].limit, got);
		q.r.why = "stale";
		q.r.last = -1;
		bool done = queue_and_wait(st, &q);
		ok(done, "a queued read (after %lld, limit %u) is done once, %s",
		   (long long)reads[i].after, reads[i].limit, where);
		ok(q.r.result == STORE_OK && q.r.why == NULL && q.r.last == last &&
		       same_entries(got, want),
		   "... with store_read's %zu entries and last seq %lld", want->n, (long long)last);
	}
	struct queued_read q;
	bool done;
	queued_read_init(&q, "nobody", -1, 10, got);
	done = queue_and_wait(st, &q);
	ok(done && q.r.result == STORE_OK && q.r.last == 0 && got->n == 0,
	   "a queued read of an unknown room: empty, last seq 0");
	queued_read_init(&q, "q", 0, 100, got);
	q.r.each = collect_two;
	q.r.ctx = got;
	done = queue_and_wait(st, &q);
	ok(done && q.r.result == STORE_OK && got->n == 2 && q.r.last == 10,
	   "a callback that says stop ends a queued read, STORE_OK, last seq still 10");
	queued_read_init(&q, "q", 0, 100, NULL);
	q.r.each = refuse;
	done = queue_and_wait(st, &q);
	ok(done && q.r.result == STORE_NOMEM && q.r.why,
	   "a callback out of memory: STORE_NOMEM, saying so: %s", q.r.why ? q.r.why : "(none)");

	queued_read_init(&q, NULL, 0, 0, NULL);
	q.r.check = true;
	memcpy(q.r.check_why, "stale", 6);
	done = queue_and_wait(st, &q);
	ok(done && q.r.result == STORE_OK && q.r.why == NULL && q.r.check_why[0] == '\0',
	   "a queued check of a sound store: STORE_OK, no sentence, %s", where);

	/* Many at once: on PostgreSQL they queue, and the store's threads
	 * take them all. */
	enum { MANY = 200 };
	struct queued_read *many = calloc(MANY, sizeof *many);
	if (!many)
		abort();
	pthread_mutex_lock(&reads_lock);
	int before = reads_done;
	pthread_mutex_unlock(&reads_lock);
	for (int i = 0; i < MANY; i++) {
		queued_read_init(&many[i], i % 2 ? "q" : "elsewhere", 0, 100, NULL);
		store_read_queue(st, &many[i].r);
	}
	ok(reads_await(before + MANY), "%d reads queued at once are all done", MANY);
	bool right = true;
	pthread_mutex_lock(&reads_lock);
	for (int i = 0; i < MANY; i++)
		right = right && many[i].dones == 1 && many[i].r.result == STORE_OK &&
			many[i].n == (i % 2 ? 10u : 2u) && many[i].r.last == (i % 2 ? 10 : 2);
	pthread_mutex_unlock(&reads_lock);
	ok(right, "... each once, with its room's entries");

	/* A check that fails says why in check_why, which why points to. */
	sql_exec("queued.db",
		 pg_host ? "UPDATE chat_fcgi_schema SET version = 99" : "PRAGMA user_version = 99");
	queued_read_init(&q, NULL, 0, 0, NULL);
	q.r.check = true;
	done = queue_and_wait(st, &q);
	ok(done && q.r.result == STORE_FAILED && q.r.why == q.r.check_why &&
	       strstr(q.r.check_why, "99"),
	   "a queued check of a changed schema fails, saying so: %s", q.r.check_why);

	/* Closed with reads queued: each is done by the time store_close
	 * returns, made or failed as closing. */
	pthread_mutex_lock(&reads_lock);
	before = reads_done;
	pthread_mutex_unlock(&reads_lock);
	for (int i = 0; i < MANY; i++) {
		queued_read_init(&many[i], "q", 0, 100, NULL);
		store_read_queue(st, &many[i].r);
	}
	store_close(st);
	int made = 0, closing = 0;
	pthread_mutex_lock(&reads_lock);
	int after_close = reads_done - before;
	for (int i = 0; i < MANY; i++) {
		if (many[i].dones != 1)
			continue;
		if (many[i].r.result == STORE_OK && many[i].n == 10)
			made++;
		else if (many[i].r.result == STORE_FAILED && many[i].r.why &&
			 strcmp(many[i].r.why, "store: closing") == 0)
			closing++;
	}
	pthread_mutex_unlock(&reads_lock);
	is_int(after_close, MANY, "closed with %d reads queued: all are done once it returns",
	       MANY);
	is_int(made + closing, MANY, "... %d made, %d failed as closing", made, closing);
	free(many);
	free(want);
	free(got);
}

/* Asks t/store_pg.t, on stdout, to stop or start PostgreSQL, and waits for
 * its word on stdin that it has. */
static bool ask(const char *what)
{
	printf("# please %s PostgreSQL\n", what);
	fflush(stdout);
	char line[64];
	return fgets(line, sizeof line, stdin) != NULL;
}

static double since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Queued reads while PostgreSQL is down fail, and do not hang; they work
 * again once it is back. t/store_pg.t runs this alone (store_test
 * reads-while-down), stopping and starting the server when asked. */
static void test_reads_while_down(void)
{
	struct store *st = open_store(db_path("down.db"), 100);
	if (!ok(st, "a store on PostgreSQL opens"))
		return;
	free(post(st, "d", NULL, "before", NULL));
	struct queued_read q;
	queued_read_init(&q, "d", 0, 10, NULL);
	bool done = queue_and_wait(st, &q);
	ok(done && q.r.result == STORE_OK && q.n == 2, "a queued read works while it is up");
	if (!ok(ask("stop"), "PostgreSQL is stopped")) {
		store_close(st);
		return;
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	queued_read_init(&q, "d", 0, 10, NULL);
	done = queue_and_wait(st, &q);
	double secs = since(&t0);
	ok(done && q.r.result == STORE_FAILED && q.r.why, "a read queued now fails: %s",
	   q.r.why ? q.r.why : "(none)");
	ok(secs < 5, "... within a few seconds (%.1f s)", secs);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	queued_read_init(&q, NULL, 0, 0, NULL);
	q.r.check = true;
	done = queue_and_wait(st, &q);
	secs = since(&t0);
	ok(done && q.r.result == STORE_FAILED && q.r.why == q.r.check_why && q.r.check_why[0],
	   "a queued check fails, saying why: %s", q.r.check_why);
	ok(secs < 5, "... within a few seconds (%.1f s)", secs);

	enum { MANY = 50 };
	struct queued_read many[MANY];
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_mutex_lock(&reads_lock);
	int before = reads_done;
	pthread_mutex_unlock(&reads_lock);
	for (int i = 0; i < MANY; i++) {
		queued_read_init(&many[i], "d", 0, 10, NULL);
		store_read_queue(st, &many[i].r);
	}
	ok(reads_await(before + MANY), "%d reads queued at once are all done", MANY);
	secs = since(&t0);
	bool failed = true;
	pthread_mutex_lock(&reads_lock);
	for (int i = 0; i < MANY; i++)
		failed = failed && many[i].dones == 1 && many[i].r.result == STORE_FAILED;
	pthread_mutex_unlock(&reads_lock);
	ok(failed, "... each failed once");
	ok(secs < 5, "... within a few seconds (%.1f s)", secs);

	if (!ok(ask("start"), "PostgreSQL is started again")) {
		store_close(st);
		return;
	}
	/* The store tries to connect again only a while after its last
	 * attempt failed: until then reads fail at once. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		queued_read_init(&q, "d", 0, 10, NULL);
		done = queue_and_wait(st, &q);
		if (done && q.r.result != STORE_OK)
			nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
	} while (done && q.r.result != STORE_OK && since(&t0) < 5);
	secs = since(&t0);
	ok(done && q.r.result == STORE_OK && q.n == 2,
	   "a queued read works again, on a new connection (%.1f s): %s", secs,
	   q.r.why ? q.r.why : "no error");
	store_close(st);
}

/* Several processes, each with several threads, post into one room at
 * once: every entry arrives once, with seq 1..N in order and no gaps. */
#define PROCS   4
#define THREADS 3
#define POSTS   25

struct poster {
	struct store *st; /* one per process, shared by its threads */
	int proc, thread;
	int failures;
};

static void *post_many(void *arg)
{
	struct poster *p = arg;
	struct store *st = p->st;
	for (int i = 0; i < POSTS; i++) {
		char text[48], cid[48];
		snprintf(text, sizeof text, "p%d t%d n%d", p->proc, p->thread, i);
		snprintf(cid, sizeof cid, "%d-%d-%d", p->proc, p->thread, i);
		char *a = post(st, "shared", cid, text, NULL);
		if (!a)
			p->failures++;
		free(a);
	}
	return NULL;
}

static void test_processes(void)
{
	/* The children fork before this process opens the file: a store has a
	 * thread, and fork copies only the calling one. */
	const char *path = db_path("shared.db");
	if (pg_host) {
		/* Made before the children start, so they open, not create, it. */
		struct store *first = open_store(path, 1000000);
		store_close(first);
	}
	pid_t pids[PROCS];
	for (int i = 0; i < PROCS; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			pthread_t t[THREADS];
			struct poster p[THREADS];
			int failures = 0;
			struct store *own = open_store(path, 1000000);
			if (!own)
				_exit(3);
			for (int j = 0; j < THREADS; j++) {
				p[j] = (struct poster){.st = own, .proc = i, .thread = j};
				if (pthread_create(&t[j], NULL, post_many, &p[j]) != 0)
					_exit(2);
			}
			for (int j = 0; j < THREADS; j++) {
				pthread_join(t[j], NULL);
				failures += p[j].failures;
			}
			store_close(own);
			_exit(failures ? 1 : 0);
		}
	}
	int bad = 0;
	for (int i = 0; i < PROCS; i++) {
		int status;
		if (pids[i] < 0 || waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			bad++;
	}
	is_int(bad, 0, "%d processes of %d threads each posted %d times without an error", PROCS,
	       THREADS, POSTS);
	struct store *st = open_store(path, 1000000);
	if (!st)
		return;

	enum { TOTAL = 2 * PROCS * THREADS * POSTS };
	struct seen *s = calloc(1, sizeof *s);
	if (!s)
		abort();
	const char *why;
	int64_t last;
	store_read(st, "shared", 0, 2048, collect, s, &last, &why);
	is_int(s->n, TOTAL, "the room holds every entry (%d)", TOTAL);
	bool gapless = true, paired = true;
	for (size_t i = 0; i < s->n; i++) {
		gapless = gapless && s->seq[i] == (int64_t)i + 1;
		if (i % 2 == 1)
			paired = paired && strncmp(s->text[i], "received ", 9) == 0 &&
				 strcmp(s->text[i] + 9, s->text[i - 1]) == 0;
	}
	ok(gapless, "seq runs 1..%d with no gap and no repeat", TOTAL);
	ok(paired, "each user entry is followed by its own reply");
	bool unique = true;
	for (size_t i = 0; i < s->n && unique; i += 2)
		for (size_t j = i + 2; j < s->n && unique; j += 2)
			unique = strcmp(s->text[i], s->text[j]) != 0;
	ok(unique, "no post is stored twice");
	free(s);
	store_close(st);
}

/* Group commit: threads of one process post the same client ids at once,
 * so a retry often shares a batch (one transaction) with its first post.
 * Each client id is stored once, and every thread gets its first answer. */
#define RACERS 8
#define RACES  40

struct racer {
	struct store *st;
	char *answers[RACES];
	int replays, failures;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	for (int i = 0; i < RACES; i++) {
		char cid[32];
		snprintf(cid, sizeof cid, "race-%d", i);
		bool replayed = false;
		r->answers[i] = post(r->st, "race", cid, cid, &replayed);
		if (!r->answers[i])
			r->failures++;
		else if (replayed)
			r->replays++;
	}
	return NULL;
}

static void test_group_commit(void)
{
	struct store *st = open_store(db_path("race.db"), 1000);
	if (!st)
		return;
	pthread_t t[RACERS];
	struct racer r[RACERS];
	int started = 0;
	for (int j = 0; j < RACERS; j++) {
		r[j] = (struct racer){.st = st};
		if (pthread_create(&t[j], NULL, race, &r[j]) == 0)
			started++;
	}
	is_int(started, RACERS, "%d threads post the same %d client ids at once", RACERS, RACES);
	int failures = 0, replays = 0;
	bool same = true;
	for (int j = 0; j < started; j++) {
		pthread_join(t[j], NULL);
		failures += r[j].failures;
		replays += r[j].replays;
	}
	for (int j = 1; j < started; j++)
		for (int i = 0; i < RACES; i++)
			same = same && r[j].answers[i] && r[0].answers[i] &&
			       strcmp(r[j].answers[i], r[0].answers[i]) == 0;
	for (int j = 0; j < started; j++)
		for (int i = 0; i < RACES; i++)
			free(r[j].answers[i]);
	is_int(failures, 0, "no post failed");
	is_int(replays, (started - 1) * RACES, "all but the first post of each client id replayed");
	ok(same, "every thread got the first answer of each client id, byte for byte");
	struct seen *s = calloc(1, sizeof *s);
	if (!s)
		abort();
	int64_t last;
	if (read_room(st, "race", 0, 500, s, &last) == STORE_OK) {
		bool gapless = s->n == 2 * RACES;
		for (size_t i = 0; i < s->n; i++)
			gapless = gapless && s->seq[i] == (int64_t)i + 1;
		ok(gapless, "the room holds each client id's post once: seq 1..%d", 2 * RACES);
	}
	free(s);
	store_close(st);
}

/* Steady posts from many threads: the writer always has the next batch
 * going while the checkpoint copies, and the WAL used to grow with every
 * post, as SQLite writes it from its start again only once all of it has
 * been copied (350 MB after these posts). Now it starts over after each
 * checkpoint: it holds what is posted while one copies, tens of MB. */
#define WAL_POSTERS 8
#define WAL_POSTS   1500
#define WAL_MAX     (32768 * (4096 + 24))

struct wal_poster {
	struct store *st;
	int thread, failures;
	off_t wal_max; /* the largest WAL seen after a post */
	const char *wal;
};

static void *post_steadily(void *arg)
{
	struct wal_poster *p = arg;
	for (int i = 0; i < WAL_POSTS; i++) {
		char room[32], cid[32];
		snprintf(room, sizeof room, "wal-%d", (p->thread * WAL_POSTS + i) % 100);
		snprintf(cid, sizeof cid, "%d-%d", p->thread, i);
		char *a = post(p->st, room, cid, "steady", NULL);
		if (!a)
			p->failures++;
		free(a);
		struct stat sb;
		if (stat(p->wal, &sb) == 0 && sb.st_size > p->wal_max)
			p->wal_max = sb.st_size;
	}
	return NULL;
}

/* Group commit across rooms, with a post the database refuses among the
 * others: threads post at once to four rooms, one thread with a client id
 * holding a NUL byte (PostgreSQL's text refuses it, SQLite keeps it). Every
 * other post is acknowledged, each room's seq runs without a gap, and a
 * refused post leaves nothing behind. */
#define SPOILERS     6
#define SPOILS       30
#define SPOILT_ROOMS 4

struct spoiler {
	struct store *st;
	int thread;
	int failures, refused;
};

static void *spoil(void *arg)
{
	struct spoiler *s = arg;
	for (int i = 0; i < SPOILS; i++) {
		char room[16], text[48], cid[48];
		snprintf(room, sizeof room, "mixed-%d", (s->thread + i) % SPOILT_ROOMS);
		snprintf(text, sizeof text, "t%d n%d", s->thread, i);
		int n = snprintf(cid, sizeof cid, "%d-%d", s->thread, i);
		bool bad = s->thread == 0;
		if (bad)
			cid[1] = '\0';
		char *a;
		size_t len;
		bool r;
		const char *why = NULL;
		char reply[64];
		snprintf(reply, sizeof reply, "received %s", text);
		enum store_result res =
		    store_post(s->st, room, cid, (size_t)n, text, strlen(text), reply,
			       strlen(reply), answer, NULL, &a, &len, &r, &why);
		if (res != STORE_OK) {
			if (bad)
				s->refused++;
			else
				s->failures++;
			continue;
		}
		free(a);
	}
	return NULL;
}

static void test_wal_bounded(void)
{
	if (pg_host)
		return;
	const char *path = db_path("steady.db");
	struct store *st = open_store(path, 100);
	if (!st)
		return;
	char wal[4300];
	snprintf(wal, sizeof wal, "%s-wal", path);
	pthread_t t[WAL_POSTERS];
	struct wal_poster p[WAL_POSTERS];
	int started = 0, failures = 0;
	off_t wal_max = 0;
	for (int j = 0; j < WAL_POSTERS; j++) {
		p[j] = (struct wal_poster){.st = st, .thread = j, .wal = wal};
		if (pthread_create(&t[started], NULL, post_steadily, &p[j]) == 0)
			started++;
	}
	for (int j = 0; j < started; j++) {
		pthread_join(t[j], NULL);
		failures += p[j].failures;
		if (p[j].wal_max > wal_max)
			wal_max = p[j].wal_max;
	}
	is_int(started, WAL_POSTERS, "%d threads post %d times each", WAL_POSTERS, WAL_POSTS);
	is_int(failures, 0, "... without an error");
	ok(wal_max > 0 && wal_max <= WAL_MAX, "the WAL stays bounded: %lld bytes at most",
	   (long long)wal_max);
	store_close(st);
}

static void test_spoilt_batch(void)
{
	struct store *st = open_store(db_path("mixed.db"), 100000);
	if (!st)
		return;
	pthread_t t[SPOILERS];
	struct spoiler s[SPOILERS];
	int started = 0;
	for (int j = 0; j < SPOILERS; j++) {
		s[j] = (struct spoiler){.st = st, .thread = j};
		if (pthread_create(&t[j], NULL, spoil, &s[j]) == 0)
			started++;
	}
	is_int(started, SPOILERS, "%d threads post to %d rooms at once", SPOILERS, SPOILT_ROOMS);
	int failures = 0, refused = 0;
	for (int j = 0; j < started; j++) {
		pthread_join(t[j], NULL);
		failures += s[j].failures;
		refused += s[j].refused;
	}
	is_int(failures, 0, "every post with a sound client id was acknowledged");
	if (pg_host)
		is_int(refused, SPOILS, "each post with a NUL in its client id failed, alone");
	else
		is_int(refused, 0, "SQLite keeps a client id with a NUL byte");
	struct seen *seen = calloc(1, sizeof *seen);
	if (!seen)
		abort();
	size_t total = 0;
	bool gapless = true, paired = true;
	for (int r = 0; r < SPOILT_ROOMS; r++) {
		char room[16];
		snprintf(room, sizeof room, "mixed-%d", r);
		int64_t last;
		if (read_room(st, room, 0, 2000, seen, &last) != STORE_OK) {
			gapless = false;
			continue;
		}
		gapless = gapless && last == (int64_t)seen->n;
		for (size_t i = 0; i < seen->n; i++) {
			gapless = gapless && seen->seq[i] == (int64_t)i + 1;
			if (i % 2 == 1)
				paired = paired && strncmp(seen->text[i], "received ", 9) == 0 &&
					 strcmp(seen->text[i] + 9, seen->text[i - 1]) == 0;
		}
		total += seen->n;
	}
	free(seen);
	ok(gapless, "each room's seq runs 1..last with no gap, refused posts or not");
	ok(paired, "each user entry is followed by its own reply");
	is_int((int)total, 2 * (SPOILERS * SPOILS - refused),
	       "the rooms hold the acknowledged posts");
	store_close(st);
}

/* Two stores on one database (two nodes): each remembers its rooms' last
 * seq from its own posts, and must not trust it once the other posted,
 * even where the numbers it would reuse fell out of the history. */
static void test_other_node(void)
{
	const char *path = db_path("nodes.db");
	struct store *a = open_store(path, 2), *b = open_store(path, 2);
	if (!a || !b) {
		store_close(a);
		store_close(b);
		return;
	}
	char *s = post(a, "n", NULL, "a1", NULL);
	is_str(s, "answer 1 2", "node a posts first");
	free(s);
	for (int i = 0; i < 3; i++)
		free(post(b, "n", NULL, "b", NULL));
	s = post(a, "n", NULL, "a2", NULL);
	is_str(s, "answer 9 10", "node a's next post follows node b's three (1..2 are gone)");
	free(s);
	s = post(b, "n", "cid-b", "b4", NULL);
	is_str(s, "answer 11 12", "node b posts with a client id");
	free(s);
	bool replayed = false;
	s = post(a, "n", "cid-b", "b4", &replayed);
	is_str(s, "answer 11 12", "its retry through node a gets node b's answer");
	ok(replayed, "... as a replay");
	free(s);
	struct seen *seen = calloc(1, sizeof *seen);
	if (!seen)
		abort();
	int64_t last = 0;
	if (read_room(a, "n", 0, 10, seen, &last) == STORE_OK) {
		is_int((int)last, 12, "the room's last seq is 12");
		ok(seen->n == 2 && seen->seq[0] == 11 && seen->seq[1] == 12,
		   "it keeps the newest 2 entries, 11 and 12");
	}
	free(seen);
	store_close(a);
	store_close(b);
}

int main(int argc, char **argv)
{
	/* reads-while-down: test_reads_while_down alone (see there). */
	bool down = argc > 1 && strcmp(argv[1], "reads-while-down") == 0;
	pg_host = getenv("CHAT_TEST_PG_HOST");
	pg_port = getenv("CHAT_TEST_PG_PORT");
	if (!pg_host || !*pg_host || !pg_port || !*pg_port)
		pg_host = pg_port = NULL;
#ifndef CHAT_POSTGRESQL
	if (pg_host) {
		printf("1..0 # SKIP built without PostgreSQL\n");
		return 0;
	}
#else
	if (pg_host)
		diag("on PostgreSQL at %s, port %s", pg_host, pg_port);
#endif
	if (down && !pg_host) {
		printf("1..0 # SKIP reads-while-down is for t/store_pg.t, on PostgreSQL\n");
		return 0;
	}
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/store_test.XXXXXX", tmp && *tmp ? tmp : ".");
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (down) {
		test_reads_while_down();
		goto out;
	}
	test_order_and_idempotency();
	test_retention();
	test_retention_batched();
	test_migration();
	test_migration_v2();
	test_migration_v3();
	test_numbers_used_up();
	test_writer_rooms();
	test_refusals();
	test_locked();
	test_data_version();
	test_read_queue();
	test_processes();
	test_group_commit();
	test_wal_bounded();
	test_spoilt_batch();
	test_other_node();

out:
	/* Remove what was made, unless the run is to be looked at. */
	if (!getenv("CHAT_KEEP")) {
		char cmd[4200];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			diag("could not remove %s", dir);
	} else {
		diag("kept %s", dir);
	}
	return done_testing();
}
