/*
 * Power cuts under the SQLite store, the way SQLite tests itself.
 *
 * A VFS of this test's own is made the default one before the store opens,
 * so the store's VFS (src/wal_writes.c, which wraps the default) sits on
 * it: the shim sees every write, truncate and sync that reaches the
 * database, its journal and its WAL. For a cut at operation N, a child
 * process opens a fresh store and posts a sequence; at the Nth of those
 * operations the shim cuts the power: it writes what a disk would hold to
 * other directories, and the process stops. A disk holds, for each file,
 * what was synced, then each write made since its last sync dropped, kept
 * whole, or torn (each 512-byte sector of it kept or not), chosen by a PRNG
 * seeded with N: DISKS such disks, each from its own seed. On a file
 * without powersafe overwrite, a write not kept whole may also garble the
 * rest of the sectors it touches. The -shm file is left out, as after a
 * reboot. The shim's syncs reach no disk: the model is the disk.
 *
 * The child tells the parent over a pipe of each post the store
 * acknowledged (its done called with STORE_OK: the server answers 200
 * then), with its seq. The parent opens the image with store_open and
 * checks that each of them is there, once, at its seq, that no room's seqs
 * have a gap, and that the database passes PRAGMA integrity_check. The
 * same cuts with synchronous NORMAL must lose acknowledged posts: that
 * the test can see a loss is checked in every run.
 *
 *   crash_test                 every case, synchronous FULL as chat-fcgi's default
 *   crash_test --sync normal   every case with NORMAL: acknowledged posts are
 *                              lost, and the test says where
 *   crash_test --seed N        other drops and tears (1 by default)
 */
#include "store.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The granularity of a tear: a disk writes a sector whole or not at all. */
#define SECTOR 512
/* The sector size the shim reports: SQLite pads a commit up to it when the
 * file lacks powersafe overwrite, and a write cut short on such a file may
 * garble the rest of it. */
#define DEVICE_SECTOR 4096

/* How a child ends: the power was cut (the image is written), or the test
 * itself failed. */
#define EXIT_CUT   3
#define EXIT_ERROR 4
/* A child that takes longer is stuck. */
#define CHILD_SECONDS 60
/* Disks made of each cut, each with its own drops and tears. */
#define DISKS 3

/* ---- the sequence of posts ---- */

/* Small posts and posts of one to three overflow pages (a page is 4 KiB),
 * to three rooms, queued in groups that the store's thread may write as
 * one transaction. */
#define POSTS 18
#define ROOMS 3
static const size_t text_sizes[] = {40, 6000, 300, 11000, 120, 4500};
static const int group_sizes[] = {1, 3, 2};

static void room_of(int i, char *out, size_t size)
{
	snprintf(out, size, "room-%d", i % ROOMS);
}

static void client_id_of(int i, char *out, size_t size)
{
	snprintf(out, size, "c%d", i);
}

static size_t text_len_of(int i)
{
	return text_sizes[(size_t)i % (sizeof text_sizes / sizeof text_sizes[0])];
}

/* Post i's text, text_len_of(i) bytes: its number, then letters. */
static void text_of(int i, char *out)
{
	size_t n = text_len_of(i);
	int head = snprintf(out, n + 1, "post %d ", i);
	for (size_t k = (size_t)head; k < n; k++)
		out[k] = (char)('a' + (size_t)(i + (int)k) % 26);
}

static void reply_of(int i, char *out, size_t size)
{
	snprintf(out, size, "reply to post %d", i);
}

/* ---- what the child tells the parent ---- */

enum report_kind { REPORT_ACK, REPORT_FAILED, REPORT_CUT };

struct counts {
	long events; /* writes, truncates and syncs of the files recorded */
	long writes, truncates, syncs;
	long db_syncs;   /* of the database file: one per checkpoint that copied */
	long wal_starts; /* writes of the WAL's header: its creation, then each restart */
	/* Writes to the WAL while the database had writes not yet synced: a
	 * checkpoint in flight as posts are written. */
	long wal_writes_in_checkpoint;
	bool cut_in_checkpoint; /* the power went while one was */
};

struct report {
	int32_t kind;
	int32_t index;        /* ACK, FAILED: the post */
	int64_t seq;          /* ACK: its user entry's seq */
	struct counts counts; /* CUT: the run up to the cut */
};

/* ---- the disk model ---- */

struct bytes {
	unsigned char *b;
	size_t len, cap;
};

/* A write or truncate made since the file's last sync. */
struct op {
	bool truncate;
	size_t off; /* a write's offset; a truncate's size */
	size_t len;
	unsigned char *data;
	struct op *next;
};

enum file_kind { FILE_DB, FILE_JOURNAL, FILE_WAL };

/* One file as the disk holds it. */
struct model {
	char *name;
	enum file_kind kind;
	bool deleted; /* kept, as a file still open may refer to it */
	struct bytes synced;
	struct op *pending, **tail; /* oldest first */
	struct model *next;
};

static struct {
	sqlite3_vfs *base; /* SQLite's unix VFS */
	pthread_mutex_t lock;
	/* Set in a child: files under run are recorded, and a cut writes
	 * the disk to image. */
	bool recording;
	char run[PATH_MAX + 8], image[PATH_MAX + 8];
	long cut_at; /* the event that cuts the power; 0: the end of the run */
	bool no_psow;
	uint64_t rng;
	struct model *files;
	int report_fd;
	struct counts counts;
} shim = {.lock = PTHREAD_MUTEX_INITIALIZER, .report_fd = -1};

/* splitmix64: small, and the same sequence for the same seed. */
static uint64_t next_random(void)
{
	uint64_t z = (shim.rng += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* The shim cannot go on without memory: the child stops, as a failure. */
static void *must(void *p)
{
	if (!p) {
		fprintf(stderr, "crash_test: out of memory in the child\n");
		_exit(EXIT_ERROR);
	}
	return p;
}

static void bytes_resize(struct bytes *b, size_t len)
{
	if (len > b->cap) {
		size_t cap = b->cap ? b->cap : 64 * 1024;
		while (cap < len)
			cap *= 2;
		b->b = must(realloc(b->b, cap));
		b->cap = cap;
	}
	if (len > b->len)
		memset(b->b + b->len, 0, len - b->len);
	b->len = len;
}

static void bytes_write(struct bytes *b, const unsigned char *data, size_t len, size_t off)
{
	if (off + len > b->len)
		bytes_resize(b, off + len);
	memcpy(b->b + off, data, len);
}

static void op_apply(struct bytes *b, const struct op *o)
{
	if (o->truncate)
		bytes_resize(b, o->off);
	else
		bytes_write(b, o->data, o->len, o->off);
}

static void ops_free(struct op *o)
{
	while (o) {
		struct op *next = o->next;
		free(o->data);
		free(o);
		o = next;
	}
}

/* The file's pending writes reach the disk: an fsync. */
static void model_sync(struct model *m)
{
	for (struct op *o = m->pending; o; o = o->next)
		op_apply(&m->synced, o);
	ops_free(m->pending);
	m->pending = NULL;
	m->tail = &m->pending;
}

static void model_add(struct model *m, bool truncate, size_t off, const void *data, size_t len)
{
	struct op *o = must(calloc(1, sizeof *o));
	o->truncate = truncate;
	o->off = off;
	o->len = len;
	if (len > 0) {
		o->data = must(malloc(len));
		memcpy(o->data, data, len);
	}
	*m->tail = o;
	m->tail = &o->next;
}

static struct model *model_find(const char *name)
{
	for (struct model *m = shim.files; m; m = m->next)
		if (strcmp(m->name, name) == 0)
			return m;
	return NULL;
}

static struct model *model_of(const char *name, enum file_kind kind)
{
	struct model *m = model_find(name);
	if (m) {
		m->deleted = false;
		return m;
	}
	m = must(calloc(1, sizeof *m));
	m->name = must(strdup(name));
	m->kind = kind;
	m->tail = &m->pending;
	m->next = shim.files;
	shim.files = m;
	return m;
}

/* A file deleted is gone from the disk at once (directory entries are not
 * modelled). */
static void model_delete(const char *name)
{
	struct model *m = model_find(name);
	if (!m)
		return;
	ops_free(m->pending);
	m->pending = NULL;
	m->tail = &m->pending;
	m->synced.len = 0;
	m->deleted = true;
}

/* Bytes [from, to) of b, within its length, garbled or not. */
static void maybe_garble(struct bytes *b, size_t from, size_t to)
{
	if (to > b->len)
		to = b->len;
	if (from >= to || next_random() % 2 == 0)
		return;
	for (size_t k = from; k < to; k++)
		b->b[k] = (unsigned char)next_random();
}

/* A write not synced, as the power cut leaves it: dropped, kept, or torn
 * sector by sector. */
static void op_cut(struct bytes *b, const struct op *o)
{
	if (o->truncate) {
		if (next_random() % 2)
			op_apply(b, o);
		return;
	}
	uint64_t fate = next_random() % 3;
	if (fate == 1) {
		op_apply(b, o);
		return;
	}
	if (fate == 2) {
		size_t end = o->off + o->len;
		for (size_t s = o->off; s < end;) {
			size_t next = (s / SECTOR + 1) * SECTOR;
			if (next > end)
				next = end;
			if (next_random() % 2)
				bytes_write(b, o->data + (s - o->off), next - s, s);
			s = next;
		}
	}
	if (shim.no_psow) {
		size_t first = o->off / DEVICE_SECTOR * DEVICE_SECTOR;
		size_t last = (o->off + o->len + DEVICE_SECTOR - 1) / DEVICE_SECTOR * DEVICE_SECTOR;
		maybe_garble(b, first, o->off);
		maybe_garble(b, o->off + o->len, last);
	}
}

static void write_all(int fd, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "crash_test: write: %s\n", strerror(errno));
			_exit(EXIT_ERROR);
		}
		p += n;
		len -= (size_t)n;
	}
}

/* Has the database writes not yet synced (a checkpoint copying)? */
static bool db_pending(void)
{
	for (struct model *m = shim.files; m; m = m->next)
		if (m->kind == FILE_DB && m->pending)
			return true;
	return false;
}

/* Writes each file as one disk would hold it to dir. */
static void write_disk(const char *dir)
{
	for (struct model *m = shim.files; m; m = m->next) {
		if (m->deleted)
			continue;
		struct bytes b = {0};
		bytes_resize(&b, m->synced.len);
		if (m->synced.len)
			memcpy(b.b, m->synced.b, m->synced.len);
		for (struct op *o = m->pending; o; o = o->next)
			op_cut(&b, o);
		const char *base = strrchr(m->name, '/');
		char path[PATH_MAX + 64];
		snprintf(path, sizeof path, "%s/%s", dir, base ? base + 1 : m->name);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0) {
			fprintf(stderr, "crash_test: %s: %s\n", path, strerror(errno));
			_exit(EXIT_ERROR);
		}
		write_all(fd, b.b ? (const void *)b.b : "", b.len);
		if (close(fd) != 0)
			_exit(EXIT_ERROR);
		free(b.b);
	}
}

/* The power goes: DISKS disks are written to the image directory, the
 * parent is told where the run was, and the process stops. Called with
 * shim.lock held, which no other thread then gets. */
static _Noreturn void cut(void)
{
	shim.counts.cut_in_checkpoint = db_pending();
	uint64_t seed = shim.rng;
	for (int d = 0; d < DISKS; d++) {
		char dir[sizeof shim.image + 16];
		snprintf(dir, sizeof dir, "%s/%d", shim.image, d);
		shim.rng = seed ^ ((uint64_t)d << 56);
		write_disk(dir);
	}
	struct report r = {.kind = REPORT_CUT, .counts = shim.counts};
	write_all(shim.report_fd, &r, sizeof r);
	_exit(EXIT_CUT);
}

/* Counts an operation, and cuts the power at the chosen one, before it
 * happens (a write is then among the pending ones, cut short). */
static void event(void)
{
	if (++shim.counts.events == shim.cut_at)
		cut();
}

/* ---- the shim VFS ---- */

struct shim_file {
	sqlite3_file base;
	sqlite3_file *real; /* the unix VFS's file, right after this */
	struct model *m;    /* NULL: not recorded */
};

static int s_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
	struct shim_file *f = (struct shim_file *)file;
	if (!f->m || amt < 0 || off < 0)
		return f->real->pMethods->xWrite(f->real, data, amt, off);
	pthread_mutex_lock(&shim.lock);
	model_add(f->m, false, (size_t)off, data, (size_t)amt);
	shim.counts.writes++;
	if (f->m->kind == FILE_WAL && off == 0)
		shim.counts.wal_starts++;
	if (f->m->kind == FILE_WAL && db_pending())
		shim.counts.wal_writes_in_checkpoint++;
	event();
	int rc = f->real->pMethods->xWrite(f->real, data, amt, off);
	pthread_mutex_unlock(&shim.lock);
	return rc;
}

static int s_truncate(sqlite3_file *file, sqlite3_int64 size)
{
	struct shim_file *f = (struct shim_file *)file;
	if (!f->m || size < 0)
		return f->real->pMethods->xTruncate(f->real, size);
	pthread_mutex_lock(&shim.lock);
	model_add(f->m, true, (size_t)size, NULL, 0);
	shim.counts.truncates++;
	event();
	int rc = f->real->pMethods->xTruncate(f->real, size);
	pthread_mutex_unlock(&shim.lock);
	return rc;
}

static int s_sync(sqlite3_file *file, int flags)
{
	struct shim_file *f = (struct shim_file *)file;
	if (!f->m)
		return f->real->pMethods->xSync(f->real, flags);
	pthread_mutex_lock(&shim.lock);
	shim.counts.syncs++;
	if (f->m->kind == FILE_DB)
		shim.counts.db_syncs++;
	event();
	model_sync(f->m);
	pthread_mutex_unlock(&shim.lock);
	return SQLITE_OK;
}

static int s_device_characteristics(sqlite3_file *file)
{
	struct shim_file *f = (struct shim_file *)file;
	int dc = f->real->pMethods->xDeviceCharacteristics(f->real);
	return shim.no_psow ? dc & ~SQLITE_IOCAP_POWERSAFE_OVERWRITE : dc;
}

static int s_sector_size(sqlite3_file *file)
{
	(void)file;
	return DEVICE_SECTOR;
}

#define PASS(name, ret, params, args)                                                              \
	static ret s_##name params                                                                 \
	{                                                                                          \
		struct shim_file *f = (struct shim_file *)file;                                    \
		return f->real->pMethods->name args;                                               \
	}
PASS(xClose, int, (sqlite3_file * file), (f->real))
PASS(xRead, int, (sqlite3_file * file, void *d, int n, sqlite3_int64 o), (f->real, d, n, o))
PASS(xFileSize, int, (sqlite3_file * file, sqlite3_int64 *s), (f->real, s))
PASS(xLock, int, (sqlite3_file * file, int l), (f->real, l))
PASS(xUnlock, int, (sqlite3_file * file, int l), (f->real, l))
PASS(xCheckReservedLock, int, (sqlite3_file * file, int *o), (f->real, o))
PASS(xFileControl, int, (sqlite3_file * file, int op, void *a), (f->real, op, a))
PASS(xShmMap, int, (sqlite3_file * file, int p, int s, int e, void volatile **o),
     (f->real, p, s, e, o))
PASS(xShmLock, int, (sqlite3_file * file, int o, int n, int fl), (f->real, o, n, fl))
PASS(xShmUnmap, int, (sqlite3_file * file, int d), (f->real, d))
PASS(xFetch, int, (sqlite3_file * file, sqlite3_int64 o, int n, void **p), (f->real, o, n, p))
PASS(xUnfetch, int, (sqlite3_file * file, sqlite3_int64 o, void *p), (f->real, o, p))

static void s_xShmBarrier(sqlite3_file *file)
{
	struct shim_file *f = (struct shim_file *)file;
	f->real->pMethods->xShmBarrier(f->real);
}

static const sqlite3_io_methods shim_methods = {
    .iVersion = 3,
    .xClose = s_xClose,
    .xRead = s_xRead,
    .xWrite = s_write,
    .xTruncate = s_truncate,
    .xSync = s_sync,
    .xFileSize = s_xFileSize,
    .xLock = s_xLock,
    .xUnlock = s_xUnlock,
    .xCheckReservedLock = s_xCheckReservedLock,
    .xFileControl = s_xFileControl,
    .xSectorSize = s_sector_size,
    .xDeviceCharacteristics = s_device_characteristics,
    .xShmMap = s_xShmMap,
    .xShmLock = s_xShmLock,
    .xShmBarrier = s_xShmBarrier,
    .xShmUnmap = s_xShmUnmap,
    .xFetch = s_xFetch,
    .xUnfetch = s_xUnfetch,
};

/* Is name a file of the run's store? */
static bool in_run(const char *name)
{
	size_t n = strlen(shim.run);
	return shim.recording && name && strncmp(name, shim.run, n) == 0 && name[n] == '/';
}

static int s_open(sqlite3_vfs *v, const char *name, sqlite3_file *file, int flags, int *out)
{
	(void)v;
	struct shim_file *f = (struct shim_file *)file;
	memset(f, 0, sizeof *f);
	f->real = (sqlite3_file *)(f + 1);
	int rc = shim.base->xOpen(shim.base, name, f->real, flags, out);
	f->base.pMethods = f->real->pMethods ? &shim_methods : NULL;
	int kinds = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL;
	if (rc == SQLITE_OK && (flags & kinds) && in_run(name)) {
		enum file_kind kind = flags & SQLITE_OPEN_WAL            ? FILE_WAL
				      : flags & SQLITE_OPEN_MAIN_JOURNAL ? FILE_JOURNAL
									 : FILE_DB;
		pthread_mutex_lock(&shim.lock);
		f->m = model_of(name, kind);
		pthread_mutex_unlock(&shim.lock);
	}
	return rc;
}

static int s_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
	(void)v;
	if (in_run(name)) {
		pthread_mutex_lock(&shim.lock);
		model_delete(name);
		pthread_mutex_unlock(&shim.lock);
	}
	return shim.base->xDelete(shim.base, name, sync_dir);
}

static sqlite3_vfs shim_vfs;

/* The shim becomes the default VFS, under whatever registers later. */
static int shim_register(void)
{
	shim.base = sqlite3_vfs_find("unix");
	if (!shim.base)
		return SQLITE_ERROR;
	shim_vfs = *shim.base;
	shim_vfs.zName = "crash-shim";
	shim_vfs.szOsFile = (int)sizeof(struct shim_file) + shim.base->szOsFile;
	shim_vfs.xOpen = s_open;
	shim_vfs.xDelete = s_delete;
	shim_vfs.pNext = NULL;
	return sqlite3_vfs_register(&shim_vfs, 1);
}

/* ---- the child: a store, the posts, the cut ---- */

struct child_post {
	struct store_post p; /* first: done gets its address */
	int index;
	int64_t seq; /* set by the answer's builder */
	char room[32], client_id[32], reply[64];
	char *text;
};

static pthread_mutex_t child_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t child_done = PTHREAD_COND_INITIALIZER;
static int child_finished;

static char *answer(void *ctx, const struct store_entry *user, const struct store_entry *bot,
		    size_t *len)
{
	(void)bot;
	struct child_post *cp = ctx;
	cp->seq = user->seq;
	char *a = malloc(32);
	if (!a)
		return NULL;
	*len = (size_t)snprintf(a, 32, "%" PRId64, user->seq);
	return a;
}

/* On the store's thread: the post is acknowledged (or failed), and the
 * parent hears of it before this thread writes anything more. */
static void posted(struct store_post *p)
{
	struct child_post *cp = (struct child_post *)p;
	struct report r = {.kind = p->result == STORE_OK ? REPORT_ACK : REPORT_FAILED,
			   .index = cp->index,
			   .seq = cp->seq};
	write_all(shim.report_fd, &r, sizeof r);
	free(p->answer);
	p->answer = NULL;
	pthread_mutex_lock(&child_lock);
	child_finished++;
	pthread_cond_signal(&child_done);
	pthread_mutex_unlock(&child_lock);
}

static _Noreturn void child_run(const struct store_options *opt)
{
	alarm(CHILD_SECONDS);
	char path[PATH_MAX + 64], err[512];
	snprintf(path, sizeof path, "%s/chat.db", shim.run);
	struct store *st = NULL;
	if (store_open(&st, path, opt, err, sizeof err) != 0) {
		fprintf(stderr, "crash_test: store_open: %s\n", err);
		_exit(EXIT_ERROR);
	}
	static struct child_post posts[POSTS];
	int queued = 0;
	for (size_t g = 0; queued < POSTS; g++) {
		int n = group_sizes[g % (sizeof group_sizes / sizeof group_sizes[0])];
		if (n > POSTS - queued)
			n = POSTS - queued;
		pthread_mutex_lock(&child_lock);
		child_finished = 0;
		pthread_mutex_unlock(&child_lock);
		for (int k = 0; k < n; k++) {
			int i = queued + k;
			struct child_post *cp = &posts[i];
			cp->index = i;
			room_of(i, cp->room, sizeof cp->room);
			client_id_of(i, cp->client_id, sizeof cp->client_id);
			reply_of(i, cp->reply, sizeof cp->reply);
			cp->text = must(malloc(text_len_of(i) + 1));
			text_of(i, cp->text);
			cp->p = (struct store_post){.room = cp->room,
						    .client_id = cp->client_id,
						    .client_id_len = strlen(cp->client_id),
						    .text = cp->text,
						    .text_len = text_len_of(i),
						    .reply = cp->reply,
						    .reply_len = strlen(cp->reply),
						    .build = answer,
						    .ctx = cp,
						    .done = posted};
			store_post_queue(st, &cp->p);
		}
		pthread_mutex_lock(&child_lock);
		while (child_finished < n)
			pthread_cond_wait(&child_done, &child_lock);
		pthread_mutex_unlock(&child_lock);
		queued += n;
	}
	/* The run ended before the chosen operation: the power goes now. */
	pthread_mutex_lock(&shim.lock);
	cut();
}

/* ---- the parent: the image, checked ---- */

struct found {
	int64_t seq;
	enum store_role role;
	char *text;
	size_t text_len;
	char *client_id;
};

struct room_read {
	struct found e[2 * POSTS + 2];
	size_t n;
	bool overflow;
};

static int collect(void *ctx, const struct store_entry *e)
{
	struct room_read *r = ctx;
	if (r->n == sizeof r->e / sizeof r->e[0]) {
		r->overflow = true;
		return 1;
	}
	struct found *f = &r->e[r->n];
	f->seq = e->seq;
	f->role = e->role;
	f->text_len = e->text_len;
	f->text = malloc(e->text_len + 1);
	f->client_id = e->client_id ? strndup(e->client_id, e->client_id_len) : NULL;
	if (!f->text || (e->client_id && !f->client_id)) {
		free(f->text);
		free(f->client_id);
		return -1;
	}
	memcpy(f->text, e->text, e->text_len);
	f->text[e->text_len] = '\0';
	r->n++;
	return 0;
}

/* What the parent knows of a run, and what it found on one disk. */
struct outcome {
	int64_t acked[POSTS]; /* the seq of each post acknowledged; 0: none */
	int acks, failed_posts;
	bool cut;
	struct counts counts;
	char why[512]; /* the first problem found, for a diagnostic */
	int problems, lost;
};

static void problem(struct outcome *o, bool lost, const char *fmt, ...) TAP_PRINTF(3, 4);
static void problem(struct outcome *o, bool lost, const char *fmt, ...)
{
	if (o->problems++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(o->why, sizeof o->why, fmt, ap);
		va_end(ap);
	}
	if (lost)
		o->lost++;
}

static void integrity(const char *path, char *out, size_t size)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	snprintf(out, size, "cannot open");
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK) {
		int rc = sqlite3_step(s);
		snprintf(out, size, "%s",
			 rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0)
					  : sqlite3_errmsg(db));
	}
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* Checks one room of the image against what was acknowledged. */
static void check_room(struct store *st, int room, struct outcome *o, bool *seen)
{
	char name[32];
	room_of(room, name, sizeof name);
	struct room_read *r = calloc(1, sizeof *r);
	if (!r) {
		problem(o, false, "out of memory");
		return;
	}
	int64_t last = 0;
	const char *why = NULL;
	enum store_result res = store_read(st, name, 0, 1000, collect, r, &last, &why);
	if (res != STORE_OK || r->overflow) {
		problem(o, false, "%s: the read failed: %s", name, why ? why : "too many entries");
		goto out;
	}
	if ((int64_t)r->n != last)
		problem(o, false, "%s: %zu entries, last seq %" PRId64, name, r->n, last);
	for (size_t k = 0; k < r->n; k++) {
		struct found *f = &r->e[k];
		if (f->seq != (int64_t)k + 1) {
			problem(o, false, "%s: a gap: entry %zu has seq %" PRId64, name, k + 1,
				f->seq);
			break;
		}
		if (f->role != STORE_USER)
			continue;
		int i = -1;
		if (!f->client_id || sscanf(f->client_id, "c%d", &i) != 1 || i < 0 || i >= POSTS ||
		    i % ROOMS != room) {
			problem(o, false, "%s: seq %" PRId64 " is no post of the sequence", name,
				f->seq);
			continue;
		}
		char *want = malloc(text_len_of(i) + 1);
		if (want)
			text_of(i, want);
		char reply[64];
		reply_of(i, reply, sizeof reply);
		struct found *bot = k + 1 < r->n ? &r->e[k + 1] : NULL;
		if (!want || f->text_len != text_len_of(i) || memcmp(f->text, want, f->text_len))
			problem(o, false, "%s: seq %" PRId64 ": post %d's text differs", name,
				f->seq, i);
		else if (!bot || bot->role != STORE_BOT || strcmp(bot->text, reply) != 0)
			problem(o, false, "%s: seq %" PRId64 ": post %d without its reply", name,
				f->seq, i);
		free(want);
		if (seen[i])
			problem(o, false, "post %d is there twice", i);
		seen[i] = true;
		if (o->acked[i] && o->acked[i] != f->seq)
			problem(o, false,
				"post %d: acknowledged at seq %" PRId64 ", found at %" PRId64, i,
				o->acked[i], f->seq);
	}
out:
	for (size_t k = 0; k < r->n; k++) {
		free(r->e[k].text);
		free(r->e[k].client_id);
	}
	free(r);
}

static void check_image(const char *image, const struct store_options *opt, struct outcome *o)
{
	char path[PATH_MAX + 64], err[512];
	snprintf(path, sizeof path, "%s/chat.db", image);
	struct store *st = NULL;
	if (store_open(&st, path, opt, err, sizeof err) != 0) {
		problem(o, false, "the image does not open: %s", err);
		return;
	}
	bool seen[POSTS] = {false};
	for (int room = 0; room < ROOMS; room++)
		check_room(st, room, o, seen);
	for (int i = 0; i < POSTS; i++)
		if (o->acked[i] && !seen[i])
			problem(o, true, "post %d, acknowledged at seq %" PRId64 ", is lost", i,
				o->acked[i]);
	char verdict[256];
	integrity(path, verdict, sizeof verdict);
	if (strcmp(verdict, "ok") != 0)
		problem(o, false, "integrity_check: %s", verdict);
	store_close(st);
}

/* Empties a directory of the store's files. */
static void clear_dir(const char *dir)
{
	static const char *const names[] = {"chat.db", "chat.db-wal", "chat.db-shm",
					    "chat.db-journal"};
	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
		char path[PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/%s", dir, names[k]);
		if (unlink(path) != 0 && errno != ENOENT)
			diag("unlink %s: %s", path, strerror(errno));
	}
}

static char top[PATH_MAX], run_dir[PATH_MAX + 8], image_dir[PATH_MAX + 8];
static uint64_t base_seed = 1;

/* The directory of disk d of a cut. */
static void disk_dir(int d, char *out, size_t size)
{
	snprintf(out, size, "%s/%d", image_dir, d);
}

static void read_reports(int fd, struct outcome *o)
{
	struct report r;
	for (;;) {
		ssize_t n = read(fd, &r, sizeof r);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if ((size_t)n != sizeof r) {
			problem(o, false, "a report cut short");
			break;
		}
		if (r.kind == REPORT_ACK && r.index >= 0 && r.index < POSTS) {
			o->acked[r.index] = r.seq;
			o->acks++;
		} else if (r.kind == REPORT_FAILED) {
			o->failed_posts++;
		} else if (r.kind == REPORT_CUT) {
			o->cut = true;
			o->counts = r.counts;
		}
	}
}

/* A case: how the store syncs, whether the file has powersafe overwrite,
 * and when checkpoints run. */
struct scenario {
	const char *name;
	bool sync_full;
	bool no_psow;
	unsigned checkpoint_frames; /* 0: the store's own, none in so short a run */
};

/* What the cuts of a case found. */
struct tally {
	struct counts ref; /* the run cut after its last post */
	long cuts, disks, acks_checked;
	long cuts_in_checkpoint, wal_writes_in_checkpoint; /* over every run */
	long lossy, bad; /* disks that lost an acknowledged post; that had any problem */
};

/* One run: a child posts and the power goes at operation cut_at (0: after
 * the last post); then each disk of it is checked. */
static void run_once(const struct scenario *sc, int case_no, long cut_at, struct tally *t)
{
	struct outcome o = {0};
	for (int d = 0; d < DISKS; d++) {
		char dir[sizeof image_dir + 16];
		disk_dir(d, dir, sizeof dir);
		clear_dir(dir);
	}
	clear_dir(run_dir);
	struct store_options opt = {.history = 1000,
				    .sync_full = sc->sync_full,
				    .checkpoint_frames = sc->checkpoint_frames};
	int fds[2] = {-1, -1};
	pid_t pid = -1;
	/* Else the child would print the parent's buffered output again. */
	if (fflush(stdout) != 0 || pipe(fds) != 0 || (pid = fork()) < 0) {
		problem(&o, false, "fflush, pipe or fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		if (close(fds[0]) != 0)
			_exit(EXIT_ERROR);
		shim.report_fd = fds[1];
		shim.recording = true;
		snprintf(shim.run, sizeof shim.run, "%s", run_dir);
		snprintf(shim.image, sizeof shim.image, "%s", image_dir);
		shim.cut_at = cut_at;
		shim.no_psow = sc->no_psow;
		shim.rng = base_seed ^ ((uint64_t)case_no << 40) ^ (uint64_t)cut_at;
		child_run(&opt);
	}
	/* The child's end, closed here, ends the reports when the child goes. */
	bool closed = close(fds[1]) == 0;
	fds[1] = -1;
	if (closed)
		read_reports(fds[0], &o);
	closed = close(fds[0]) == 0 && closed;
	fds[0] = -1;
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!closed) {
		problem(&o, false, "close: %s", strerror(errno));
		goto out;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != EXIT_CUT || !o.cut) {
		problem(&o, false, "the child ended with status %d", status);
		goto out;
	}
	if (cut_at == 0)
		t->ref = o.counts;
	t->cuts++;
	t->cuts_in_checkpoint += o.counts.cut_in_checkpoint;
	t->wal_writes_in_checkpoint += o.counts.wal_writes_in_checkpoint;
	if (o.failed_posts)
		problem(&o, false, "%d posts failed before the cut", o.failed_posts);
	for (int d = 0; d < DISKS; d++) {
		struct outcome disk = o;
		disk.problems = disk.lost = 0;
		char dir[sizeof image_dir + 16];
		disk_dir(d, dir, sizeof dir);
		check_image(dir, &opt, &disk);
		t->disks++;
		t->acks_checked += disk.acks;
		t->lossy += disk.lost > 0;
		if (disk.problems + o.problems > 0 && t->bad++ < 5)
			diag("%s, the power cut %s%ld (seed %" PRIu64 ", disk %d): %s", sc->name,
			     cut_at ? "at operation " : "after the last post, operation ",
			     cut_at ? cut_at : o.counts.events, base_seed, d,
			     o.problems ? o.why : disk.why);
	}
	return;
out:
	t->bad++;
	if (cut_at)
		diag("%s, the run to be cut at operation %ld: %s", sc->name, cut_at, o.why);
	else
		diag("%s, the run to be cut after its last post: %s", sc->name, o.why);
	for (int k = 0; k < 2; k++)
		if (fds[k] >= 0 && close(fds[k]) != 0)
			diag("close: %s", strerror(errno));
}

/* Every cut of a case: after the last post, then at each operation of
 * that run (a later run may make more or fewer: the store's threads take
 * turns as they will). */
static void run_case(const struct scenario *sc, int case_no, struct tally *t)
{
	memset(t, 0, sizeof *t);
	run_once(sc, case_no, 0, t);
	for (long n = 1; n <= t->ref.events; n++)
		run_once(sc, case_no, n, t);
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;
	if (clock_gettime(CLOCK_MONOTONIC, &t1) != 0)
		return 0;
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void usage(void)
{
	fprintf(stderr, "usage: crash_test [--sync normal|full] [--seed N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	bool full = true;
	for (int k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--sync") == 0 && k + 1 < argc) {
			k++;
			if (strcmp(argv[k], "normal") != 0 && strcmp(argv[k], "full") != 0)
				usage();
			full = strcmp(argv[k], "full") == 0;
		} else if (strcmp(argv[k], "--seed") == 0 && k + 1 < argc) {
			char *end;
			errno = 0;
			base_seed = strtoull(argv[++k], &end, 10);
			if (errno || *end)
				usage();
		} else {
			usage();
		}
	}
	if (shim_register() != SQLITE_OK) {
		ok(0, "the shim VFS registers");
		return done_testing();
	}
	char tmpl[] = "/tmp/crash_test.XXXXXX";
	bool dirs = mkdtemp(tmpl) != NULL;
	snprintf(top, sizeof top, "%s", tmpl);
	snprintf(run_dir, sizeof run_dir, "%s/run", top);
	snprintf(image_dir, sizeof image_dir, "%s/image", top);
	dirs = dirs && mkdir(run_dir, 0700) == 0 && mkdir(image_dir, 0700) == 0;
	for (int d = 0; d < DISKS && dirs; d++) {
		char dir[sizeof image_dir + 16];
		disk_dir(d, dir, sizeof dir);
		dirs = mkdir(dir, 0700) == 0;
	}
	if (!dirs) {
		ok(0, "the test's directories under %s", tmpl);
		return done_testing();
	}

	const struct scenario cases[] = {
	    {.name = "no checkpoint", .sync_full = full},
	    {.name = "checkpoints in flight", .sync_full = full, .checkpoint_frames = 6},
	    {.name = "no powersafe overwrite, checkpoints in flight",
	     .sync_full = full,
	     .no_psow = true,
	     .checkpoint_frames = 6},
	    /* The test sees a loss: with NORMAL, a commit is not synced. */
	    {.name = "synchronous NORMAL, no checkpoint"},
	};
	size_t n_cases = sizeof cases / sizeof cases[0] - (full ? 0 : 1);
	diag("%d posts to %d rooms, of %zu to %zu bytes; synchronous %s; %d disks per cut; seed "
	     "%" PRIu64,
	     POSTS, ROOMS, text_sizes[0], text_sizes[3], full ? "FULL" : "NORMAL", DISKS,
	     base_seed);
	for (size_t c = 0; c < n_cases; c++) {
		const struct scenario *sc = &cases[c];
		struct timespec t0 = {0};
		if (clock_gettime(CLOCK_MONOTONIC, &t0) != 0)
			diag("clock_gettime: %s", strerror(errno));
		struct tally t;
		run_case(sc, (int)c, &t);
		const struct counts *r = &t.ref;
		diag("%s: the run cut after its last post made %ld writes, %ld truncates and %ld "
		     "syncs (%ld of the database); %.1f s",
		     sc->name, r->writes, r->truncates, r->syncs, r->db_syncs, seconds_since(&t0));
		if (full && !sc->sync_full) {
			ok(t.lossy > 0 && t.bad == t.lossy,
			   "%s: %ld of %ld disks lost an acknowledged post, and nothing else went "
			   "wrong",
			   sc->name, t.lossy, t.disks);
			continue;
		}
		ok(t.bad == 0 && t.cuts == r->events + 1,
		   "%s: %ld cuts, %ld disks, %ld acknowledged posts checked: each there once "
		   "at its seq, the database sound (%ld disks lost one, %ld had a problem)",
		   sc->name, t.cuts, t.disks, t.acks_checked, t.lossy, t.bad);
		if (sc->checkpoint_frames)
			ok(r->db_syncs > 1 && r->wal_starts > 1 && t.cuts_in_checkpoint > 0 &&
			       t.wal_writes_in_checkpoint > 0,
			   "... with checkpoints among the posts (the last run: %ld database "
			   "syncs, the WAL started over %ld times); %ld cuts came while a "
			   "checkpoint's writes to the database were not synced, and the runs "
			   "wrote the WAL %ld times meanwhile",
			   r->db_syncs, r->wal_starts - 1, t.cuts_in_checkpoint,
			   t.wal_writes_in_checkpoint);
	}

	clear_dir(run_dir);
	bool removed = rmdir(run_dir) == 0;
	for (int d = 0; d < DISKS; d++) {
		char dir[sizeof image_dir + 16];
		disk_dir(d, dir, sizeof dir);
		clear_dir(dir);
		removed = rmdir(dir) == 0 && removed;
	}
	if (!removed || rmdir(image_dir) != 0 || rmdir(top) != 0)
		diag("could not remove %s", top);
	return done_testing();
}
