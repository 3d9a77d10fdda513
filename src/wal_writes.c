/*
 * A SQLite VFS that gathers a transaction's writes to the WAL into one.
 *
 * SQLite writes each WAL frame as two pwrite calls, its 24-byte header and
 * its page, so a post, which changes a few pages, cost about six system
 * calls in the store's thread (bench/run --rooms, strace). This VFS wraps
 * the default one and, for WAL files only, keeps writes that each start
 * where the last one ended in a buffer, written out in one call:
 *
 * - with the header of a commit frame (one that gives the database size,
 *   bytes 4-7, non-zero), inside that xWrite, so a failure reaches SQLite,
 *   which fails the commit; the commit frame's page then goes straight
 *   through. A transaction is two writes, however many pages it changed.
 *   A commit header is never left in the buffer: SQLite may rewrite one
 *   in place, after the commit, with nothing written after it.
 * - before any other access to the file (a read, a write elsewhere, a
 *   size, a truncate, a sync, a file control, a close), so the file looks
 *   to SQLite as it would without the buffer.
 *
 * So every frame is in the file before COMMIT returns, and before the WAL
 * index (in shared memory, written after the frames) tells any other
 * connection of them: a post acknowledged is in the file, as without this
 * VFS. Every other file (the database itself, its journal) goes straight
 * through.
 *
 * Only a WAL that reports SQLITE_IOCAP_POWERSAFE_OVERWRITE is buffered
 * (SQLite's unix VFS does, unless told otherwise). Without it, SQLite with
 * synchronous=FULL pads a commit with copies of its last frame up to a
 * sector boundary, syncs there, and writes the tail of the frame that
 * crosses the boundary after the sync, as the transaction's last write: no
 * commit header or sync would follow to flush it, and other connections
 * read the WAL from their own file descriptors.
 */
#include "wal_writes.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Flushed past this, commit or not (a batch of many posts). SQLite's unix
 * VFS writes at most 128 KiB - 1 in one call (seekAndWriteFd masks the
 * length with 0x1ffff). */
#define BUF_MAX      ((size_t)112 * 1024)
#define FRAME_HEADER 24

struct wal_file {
	sqlite3_file base;  /* first: SQLite's view of it */
	sqlite3_file *real; /* the default VFS's file, right after this */
	bool wal;           /* a WAL file on a powersafe-overwrite device: buffered */
	unsigned char *buf; /* writes not yet made, for [at, at + len) */
	size_t len, cap;
	sqlite3_int64 at;
	bool commit_page; /* the last write was a commit frame's header */
};

static sqlite3_vfs *base_vfs;
static sqlite3_vfs vfs;

static int flush(struct wal_file *f)
{
	if (f->len == 0)
		return SQLITE_OK;
	/* Emptied whatever happens: SQLite treats a failed write as lost and
	 * writes the frames again, or rolls back. */
	size_t len = f->len;
	f->len = 0;
	if (len > (size_t)0x7fffffff)
		return SQLITE_IOERR_WRITE;
	return f->real->pMethods->xWrite(f->real, f->buf, (int)len, f->at);
}

static int x_close(sqlite3_file *file)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	int rc2 = f->real->pMethods->xClose(f->real);
	free(f->buf);
	f->buf = NULL;
	return rc != SQLITE_OK ? rc : rc2;
}

static int x_read(sqlite3_file *file, void *out, int amt, sqlite3_int64 off)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, amt, off);
}

/* Adds the write to the buffer; false when it does not follow it or does
 * not fit, and the caller writes it through. */
static bool gather(struct wal_file *f, const void *data, size_t amt, sqlite3_int64 off)
{
	if (f->len > 0 && off != f->at + (sqlite3_int64)f->len)
		return false;
	if (f->len + amt > BUF_MAX)
		return false;
	if (f->len + amt > f->cap) {
		size_t cap = f->cap ? f->cap : 16 * 1024;
		while (cap < f->len + amt)
			cap *= 2;
		unsigned char *b = realloc(f->buf, cap);
		if (!b)
			return false;
		f->buf = b;
		f->cap = cap;
	}
	if (f->len == 0)
		f->at = off;
	memcpy(f->buf + f->len, data, amt);
	f->len += amt;
	return true;
}

static bool is_commit_header(const void *data, int amt)
{
	const unsigned char *h = data;
	return amt == FRAME_HEADER && (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int x_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
	struct wal_file *f = (struct wal_file *)file;
	if (!f->wal || amt <= 0)
		return f->real->pMethods->xWrite(f->real, data, amt, off);
	if (f->commit_page) {
		/* The buffer went out with the header. */
		f->commit_page = false;
		return f->real->pMethods->xWrite(f->real, data, amt, off);
	}
	if (!gather(f, data, (size_t)amt, off)) {
		int rc = flush(f);
		if (rc != SQLITE_OK)
			return rc;
		if (!gather(f, data, (size_t)amt, off))
			return f->real->pMethods->xWrite(f->real, data, amt, off);
	}
	if (!is_commit_header(data, amt))
		return SQLITE_OK;
	f->commit_page = true;
	return flush(f);
}

static int x_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int x_sync(sqlite3_file *file, int flags)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int x_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int x_lock(sqlite3_file *file, int level)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xLock(f->real, level);
}

static int x_unlock(sqlite3_file *file, int level)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	int rc2 = f->real->pMethods->xUnlock(f->real, level);
	return rc != SQLITE_OK ? rc : rc2;
}

static int x_check_reserved_lock(sqlite3_file *file, int *out)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int x_file_control(sqlite3_file *file, int op, void *arg)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int x_sector_size(sqlite3_file *file)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xSectorSize(f->real);
}

static int x_device_characteristics(sqlite3_file *file)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int x_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **out)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xShmMap(f->real, page, size, extend, out);
}

static int x_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void x_shm_barrier(sqlite3_file *file)
{
	struct wal_file *f = (struct wal_file *)file;
	/* The WAL index is the database file's shared memory, not the WAL's. */
	f->real->pMethods->xShmBarrier(f->real);
}

static int x_shm_unmap(sqlite3_file *file, int delete_flag)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int x_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **out)
{
	struct wal_file *f = (struct wal_file *)file;
	int rc = flush(f);
	return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, off, amt, out);
}

static int x_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
	struct wal_file *f = (struct wal_file *)file;
	return f->real->pMethods->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods methods = {
    .iVersion = 3,
    .xClose = x_close,
    .xRead = x_read,
    .xWrite = x_write,
    .xTruncate = x_truncate,
    .xSync = x_sync,
    .xFileSize = x_file_size,
    .xLock = x_lock,
    .xUnlock = x_unlock,
    .xCheckReservedLock = x_check_reserved_lock,
    .xFileControl = x_file_control,
    .xSectorSize = x_sector_size,
    .xDeviceCharacteristics = x_device_characteristics,
    .xShmMap = x_shm_map,
    .xShmLock = x_shm_lock,
    .xShmBarrier = x_shm_barrier,
    .xShmUnmap = x_shm_unmap,
    .xFetch = x_fetch,
    .xUnfetch = x_unfetch,
};

static int x_open(sqlite3_vfs *v, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
	(void)v;
	struct wal_file *f = (struct wal_file *)file;
	memset(f, 0, sizeof *f);
	f->real = (sqlite3_file *)(f + 1);
	int rc = base_vfs->xOpen(base_vfs, name, f->real, flags, out_flags);
	/* SQLite calls xClose only on a file whose pMethods is set. */
	f->base.pMethods = f->real->pMethods ? &methods : NULL;
	f->wal = f->real->pMethods && (flags & SQLITE_OPEN_WAL) != 0 &&
		 (f->real->pMethods->xDeviceCharacteristics(f->real) &
		  SQLITE_IOCAP_POWERSAFE_OVERWRITE) != 0;
	return rc;
}

static int x_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
	(void)v;
	return base_vfs->xDelete(base_vfs, name, sync_dir);
}

static int x_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
	(void)v;
	return base_vfs->xAccess(base_vfs, name, flags, out);
}

static int x_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
	(void)v;
	return base_vfs->xFullPathname(base_vfs, name, n, out);
}

static int x_randomness(sqlite3_vfs *v, int n, char *out)
{
	(void)v;
	return base_vfs->xRandomness(base_vfs, n, out);
}

static int x_sleep(sqlite3_vfs *v, int us)
{
	(void)v;
	return base_vfs->xSleep(base_vfs, us);
}

static int x_current_time(sqlite3_vfs *v, double *out)
{
	(void)v;
	return base_vfs->xCurrentTime(base_vfs, out);
}

static int x_get_last_error(sqlite3_vfs *v, int n, char *out)
{
	(void)v;
	return base_vfs->xGetLastError(base_vfs, n, out);
}

static int x_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out)
{
	(void)v;
	return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

static int registered = SQLITE_ERROR;

static void register_once(void)
{
	sqlite3_vfs *base = sqlite3_vfs_find(NULL);
	if (!base || base->iVersion < 2 || !base->xCurrentTimeInt64)
		return;
	vfs = (sqlite3_vfs){
	    .iVersion = 2,
	    .szOsFile = (int)sizeof(struct wal_file) + base->szOsFile,
	    .mxPathname = base->mxPathname,
	    .zName = WAL_WRITES_VFS,
	    .xOpen = x_open,
	    .xDelete = x_delete,
	    .xAccess = x_access,
	    .xFullPathname = x_full_pathname,
	    .xRandomness = x_randomness,
	    .xSleep = x_sleep,
	    .xCurrentTime = x_current_time,
	    .xGetLastError = x_get_last_error,
	    .xCurrentTimeInt64 = x_current_time_int64,
	};
	base_vfs = base;
	registered = sqlite3_vfs_register(&vfs, 0);
}

int wal_writes_register(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	if (pthread_once(&once, register_once) != 0)
		return SQLITE_ERROR;
	return registered;
}
