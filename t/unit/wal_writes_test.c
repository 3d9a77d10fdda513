/* The VFS that gathers WAL writes (src/wal_writes.c): a transaction of many
 * pages reaches the WAL in a few writes, not two per page; everything
 * committed is in the file when COMMIT returns, as a connection through
 * SQLite's own VFS sees, with synchronous NORMAL or FULL; a rolled-back
 * transaction leaves nothing; the file passes SQLite's integrity check
 * after a checkpoint. On a file without powersafe overwrite, where SQLite
 * pads a commit and writes the last frame's tail after its sync, every
 * write goes straight through. */
#define _POSIX_C_SOURCE 200809L
#include "tap.h"
#include "wal_writes.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A VFS under the one tested, counting the writes that reach the WAL. */
static sqlite3_vfs *unix_vfs;
static sqlite3_vfs counting;
static sqlite3_io_methods counting_methods;
static int wal_writes;
/* Files opened while set say they lack powersafe overwrite, as a file
 * system that may damage a sector around a write cut short does. */
static bool no_psow;

struct counted {
	sqlite3_file base;
	sqlite3_file *real;
	int wal;
	bool no_psow;
};

static int c_write(sqlite3_file *f, const void *d, int n, sqlite3_int64 off)
{
	struct counted *c = (struct counted *)f;
	if (c->wal)
		wal_writes++;
	return c->real->pMethods->xWrite(c->real, d, n, off);
}

static int c_xDeviceCharacteristics(sqlite3_file *f)
{
	struct counted *c = (struct counted *)f;
	int dc = c->real->pMethods->xDeviceCharacteristics(c->real);
	return c->no_psow ? dc & ~SQLITE_IOCAP_POWERSAFE_OVERWRITE : dc;
}

#define PASS(name, ret, params, args)                                                              \
	static ret c_##name params                                                                 \
	{                                                                                          \
		struct counted *c = (struct counted *)f;                                           \
		return c->real->pMethods->name args;                                               \
	}
PASS(xClose, int, (sqlite3_file * f), (c->real))
PASS(xRead, int, (sqlite3_file * f, void *d, int n, sqlite3_int64 o), (c->real, d, n, o))
PASS(xTruncate, int, (sqlite3_file * f, sqlite3_int64 s), (c->real, s))
PASS(xSync, int, (sqlite3_file * f, int fl), (c->real, fl))
PASS(xFileSize, int, (sqlite3_file * f, sqlite3_int64 *s), (c->real, s))
PASS(xLock, int, (sqlite3_file * f, int l), (c->real, l))
PASS(xUnlock, int, (sqlite3_file * f, int l), (c->real, l))
PASS(xCheckReservedLock, int, (sqlite3_file * f, int *o), (c->real, o))
PASS(xFileControl, int, (sqlite3_file * f, int op, void *a), (c->real, op, a))
PASS(xSectorSize, int, (sqlite3_file * f), (c->real))
PASS(xShmMap, int, (sqlite3_file * f, int p, int s, int e, void volatile **o),
     (c->real, p, s, e, o))
PASS(xShmLock, int, (sqlite3_file * f, int o, int n, int fl), (c->real, o, n, fl))
PASS(xShmUnmap, int, (sqlite3_file * f, int d), (c->real, d))
PASS(xFetch, int, (sqlite3_file * f, sqlite3_int64 o, int n, void **p), (c->real, o, n, p))
PASS(xUnfetch, int, (sqlite3_file * f, sqlite3_int64 o, void *p), (c->real, o, p))

static void c_xShmBarrier(sqlite3_file *f)
{
	struct counted *c = (struct counted *)f;
	c->real->pMethods->xShmBarrier(c->real);
}

static int c_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
	(void)v;
	struct counted *c = (struct counted *)f;
	memset(c, 0, sizeof *c);
	c->real = (sqlite3_file *)(c + 1);
	c->wal = (flags & SQLITE_OPEN_WAL) != 0;
	c->no_psow = no_psow;
	int rc = unix_vfs->xOpen(unix_vfs, name, c->real, flags, out);
	c->base.pMethods = c->real->pMethods ? &counting_methods : NULL;
	return rc;
}

static void counting_register(void)
{
	unix_vfs = sqlite3_vfs_find("unix");
	counting = *unix_vfs;
	counting.zName = "counting";
	counting.szOsFile = (int)sizeof(struct counted) + unix_vfs->szOsFile;
	counting.xOpen = c_open;
	counting.pNext = NULL;
	counting_methods = (sqlite3_io_methods){
	    .iVersion = 3,
	    .xClose = c_xClose,
	    .xRead = c_xRead,
	    .xWrite = c_write,
	    .xTruncate = c_xTruncate,
	    .xSync = c_xSync,
	    .xFileSize = c_xFileSize,
	    .xLock = c_xLock,
	    .xUnlock = c_xUnlock,
	    .xCheckReservedLock = c_xCheckReservedLock,
	    .xFileControl = c_xFileControl,
	    .xSectorSize = c_xSectorSize,
	    .xDeviceCharacteristics = c_xDeviceCharacteristics,
	    .xShmMap = c_xShmMap,
	    .xShmLock = c_xShmLock,
	    .xShmBarrier = c_xShmBarrier,
	    .xShmUnmap = c_xShmUnmap,
	    .xFetch = c_xFetch,
	    .xUnfetch = c_xUnfetch,
	};
	/* The default, so that wal_writes_register wraps it. */
	sqlite3_vfs_register(&counting, 1);
}

static int exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK)
		diag("%s: %s", sql, err ? err : sqlite3_errstr(rc));
	sqlite3_free(err);
	return rc;
}

static long long count_rows(const char *path, const char *vfs)
{
	sqlite3 *db = NULL;
	long long n = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, vfs) == SQLITE_OK) {
		sqlite3_stmt *s = NULL;
		if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &s, NULL) == SQLITE_OK &&
		    sqlite3_step(s) == SQLITE_ROW)
			n = sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	sqlite3_close(db);
	return n;
}

/* Inserts rows of 1000 bytes in one transaction, ended by end_sql. */
static int insert(sqlite3 *db, int rows, const char *end_sql)
{
	int rc = exec(db, "BEGIN IMMEDIATE");
	for (int i = 0; i < rows && rc == SQLITE_OK; i++)
		rc = exec(db, "INSERT INTO t(b) VALUES(randomblob(1000))");
	return rc == SQLITE_OK ? exec(db, end_sql) : rc;
}

/* PRAGMA integrity_check on path, through vfs: "ok" when sound. */
static void integrity(const char *path, const char *vfs, char *out, size_t size)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	snprintf(out, size, "cannot open");
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, vfs) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK) {
		int rc = sqlite3_step(s);
		snprintf(out, size, "%s",
			 rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0)
					  : sqlite3_errmsg(db));
	}
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* Checkpoints path from a connection of its own, through vfs. */
static int checkpoint(const char *path, const char *vfs)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, vfs);
	if (rc == SQLITE_OK)
		rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

/* The WAL's size in frames after the last commit, as SQLite counts it. */
static int wal_frames;

static int count_frames(void *arg, sqlite3 *db, const char *name, int frames)
{
	(void)arg;
	(void)db;
	(void)name;
	wal_frames = frames;
	return SQLITE_OK;
}

/*
 * A file without powersafe overwrite: with synchronous = FULL, SQLite pads
 * each commit with copies of its last frame up to a sector boundary, syncs
 * there, and writes the rest of the frame that crosses it after the sync.
 * Every byte of it must be in the file when COMMIT returns, since another
 * connection reads the frames, and checkpoints them, from its own file
 * descriptor.
 */
static void test_no_psow(const char *dir)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/no_psow.db", dir);
	no_psow = true;
	sqlite3 *db = NULL;
	int rc =
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, WAL_WRITES_VFS);
	if (rc == SQLITE_OK)
		rc = exec(db, "PRAGMA journal_mode = WAL");
	if (rc == SQLITE_OK)
		rc = exec(db, "PRAGMA synchronous = FULL");
	/* Replaces SQLite's checkpoint on commit: none runs, and the hook
	 * counts the WAL's frames. */
	if (rc == SQLITE_OK)
		sqlite3_wal_hook(db, count_frames, NULL);
	if (rc == SQLITE_OK)
		rc = exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
	is_int(rc, SQLITE_OK,
	       "without powersafe overwrite: a database in WAL mode, synchronous FULL");

	char wal[4300];
	snprintf(wal, sizeof wal, "%s-wal", path);
	wal_writes = 0;
	int frames_before = wal_frames, whole = 0, commits = 5;
	long long last_size = -1, want = -1;
	for (int i = 0; i < commits && rc == SQLITE_OK; i++) {
		rc = insert(db, 20, "COMMIT");
		struct stat sb;
		want = 32 + (long long)wal_frames * (4096 + 24);
		last_size = stat(wal, &sb) == 0 ? (long long)sb.st_size : -1;
		whole += rc == SQLITE_OK && last_size == want;
	}
	is_int(rc, SQLITE_OK, "... %d transactions of 20 rows commit", commits);
	is_int(whole, commits,
	       "... after each, the WAL file holds every frame SQLite wrote (last: %lld bytes, "
	       "%d frames: %lld)",
	       last_size, wal_frames, want);
	ok(wal_writes >= 2 * (wal_frames - frames_before),
	   "... each write went straight through: %d writes for %d frames", wal_writes,
	   wal_frames - frames_before);

	char verdict[256];
	integrity(path, "unix", verdict, sizeof verdict);
	is_str(verdict, "ok", "... another connection reads a sound database");
	is_int(checkpoint(path, "unix"), SQLITE_OK, "... and checkpoints it");
	integrity(path, "unix", verdict, sizeof verdict);
	is_str(verdict, "ok", "... which then passes the integrity check");
	is_int(count_rows(path, "unix"), 20 * commits, "... with every row committed");
	is_int(sqlite3_close(db), SQLITE_OK, "it closes");
	no_psow = false;
}

int main(void)
{
	char dir[] = "/tmp/wal_writes_test.XXXXXX";
	if (!mkdtemp(dir)) {
		ok(0, "a temporary directory");
		return done_testing();
	}
	char path[sizeof dir + 16];
	snprintf(path, sizeof path, "%s/t.db", dir);

	counting_register();
	is_int(wal_writes_register(), SQLITE_OK, "the VFS registers");
	is_int(wal_writes_register(), SQLITE_OK, "... and registering again is harmless");

	sqlite3 *db = NULL;
	int rc =
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, WAL_WRITES_VFS);
	is_int(rc, SQLITE_OK, "a database opens through it");
	rc = exec(db, "PRAGMA journal_mode = WAL");
	if (rc == SQLITE_OK)
		rc = exec(db, "PRAGMA synchronous = NORMAL");
	if (rc == SQLITE_OK)
		rc = exec(db, "PRAGMA wal_autocheckpoint = 0");
	if (rc == SQLITE_OK)
		rc = exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
	is_int(rc, SQLITE_OK, "in WAL mode, with a table");

	/* 200 rows of 1000 bytes: about 50 pages, so 100 writes through
	 * SQLite's own VFS. */
	wal_writes = 0;
	rc = insert(db, 200, "COMMIT");
	is_int(rc, SQLITE_OK, "a transaction of 200 rows commits");
	ok(wal_writes > 0 && wal_writes <= 6, "... in %d writes to the WAL (at most 6)",
	   wal_writes);
	is_int(count_rows(path, "unix"), 200,
	       "... all of it in the file, for a connection through SQLite's own VFS");

	wal_writes = 0;
	rc = insert(db, 1, "COMMIT");
	is_int(rc, SQLITE_OK, "a transaction of one row commits");
	ok(wal_writes >= 1 && wal_writes <= 2, "... in %d writes", wal_writes);
	is_int(count_rows(path, "unix"), 201, "... and is in the file");

	rc = insert(db, 300, "ROLLBACK");
	is_int(rc, SQLITE_OK, "a transaction of 300 rows rolls back");
	rc = insert(db, 10, "COMMIT");
	is_int(rc, SQLITE_OK, "the next one commits");
	is_int(count_rows(path, "unix"), 211, "... and the file has what was committed only");

	/* --store-sync full: SQLite syncs at the commit and may pad the WAL
	 * with copies of the commit frame, each a commit header of its own. */
	rc = exec(db, "PRAGMA synchronous = FULL");
	for (int i = 0; i < 3 && rc == SQLITE_OK; i++)
		rc = insert(db, 40, "COMMIT");
	is_int(rc, SQLITE_OK, "with synchronous = FULL, three transactions commit");
	is_int(count_rows(path, "unix"), 331, "... and are in the file");
	rc = exec(db, "PRAGMA synchronous = NORMAL");

	rc = exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
	is_int(rc, SQLITE_OK, "a checkpoint copies the WAL into the database");
	rc = insert(db, 100, "COMMIT");
	is_int(rc, SQLITE_OK, "a transaction after it, at the start of the WAL again, commits");
	sqlite3_stmt *s = NULL;
	const char *verdict = NULL;
	if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		verdict = (const char *)sqlite3_column_text(s, 0);
	is_str(verdict, "ok", "the database passes SQLite's integrity check");
	sqlite3_finalize(s);
	is_int(sqlite3_close(db), SQLITE_OK, "it closes");
	is_int(count_rows(path, "unix"), 431, "everything committed is there after the close");

	test_no_psow(dir);

	char cmd[sizeof dir + 16];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		diag("could not remove %s", dir);
	return done_testing();
}
