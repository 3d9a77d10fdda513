/* Sends each call to the store the spec named: SQLite or PostgreSQL. */
#include "store.h"

#include "metrics.h"
#include "store_impl.h"
#include "store_pg.h"
#include "store_sqlite.h"

#include <errno.h>
#include <semaphore.h>
#include <string.h>

#define PG(st)   ((struct store_pg *)(st))
#define LITE(st) ((struct store_sqlite *)(st))

bool store_is_postgresql(const char *spec)
{
	return strncmp(spec, "postgresql://", 13) == 0 || strncmp(spec, "postgres://", 11) == 0;
}

int store_open(struct store **out, const char *spec, const struct store_options *opt, char *err,
	       size_t err_size)
{
	*out = NULL;
	if (store_is_postgresql(spec)) {
		struct store_pg *pg;
		if (store_pg_open(&pg, spec, opt, err, err_size) != 0)
			return -1;
		*out = (struct store *)pg;
	} else {
		struct store_sqlite *lite;
		if (store_sqlite_open(&lite, spec, opt, err, err_size) != 0)
			return -1;
		*out = (struct store *)lite;
	}
	return 0;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->kind == STORE_KIND_PG)
		store_pg_close(PG(st));
	else
		store_sqlite_close(LITE(st));
}

/* Both stores queue through post_queue_push, which clears the results. */
void store_post_queue(struct store *st, struct store_post *p)
{
	if (st->kind == STORE_KIND_PG)
		store_pg_queue(PG(st), p);
	else
		store_sqlite_queue(LITE(st), p);
}

/* store_post: a queued post whose caller waits. */
struct waiting_post {
	struct store_post p; /* first: done gets its address */
	sem_t stored;
};

static void post_stored(struct store_post *p)
{
	sem_post(&((struct waiting_post *)p)->stored);
}

enum store_result store_post(struct store *st, const char *room, const char *client_id,
			     size_t client_id_len, const char *text, size_t text_len,
			     const char *reply, size_t reply_len, store_answer_fn build, void *ctx,
			     char **answer, size_t *answer_len, bool *replayed, const char **why)
{
	struct waiting_post w = {.p = {.room = room,
				       .client_id = client_id,
				       .client_id_len = client_id_len,
				       .text = text,
				       .text_len = text_len,
				       .reply = reply,
				       .reply_len = reply_len,
				       .build = build,
				       .ctx = ctx,
				       .done = post_stored}};
	*answer = NULL;
	*answer_len = 0;
	*replayed = false;
	if (sem_init(&w.stored, 0, 0) != 0) {
		*why = "store: cannot make a semaphore";
		return STORE_NOMEM;
	}
	store_post_queue(st, &w.p);
	while (sem_wait(&w.stored) != 0 && errno == EINTR)
		;
	sem_destroy(&w.stored);
	*answer = w.p.answer;
	*answer_len = w.p.answer_len;
	*replayed = w.p.replayed;
	if (w.p.result != STORE_OK)
		*why = w.p.why;
	return w.p.result;
}

enum store_result store_read(struct store *st, const char *room, int64_t after, unsigned limit,
			     store_entry_fn each, void *ctx, int64_t *last, const char **why)
{
	metrics_store_read();
	if (st->kind == STORE_KIND_PG)
		return store_pg_read(PG(st), room, after, limit, each, ctx, last, why);
	return store_sqlite_read(LITE(st), room, after, limit, each, ctx, last, why);
}

bool store_reads_wait(const struct store *st)
{
	return st->kind == STORE_KIND_PG;
}

/* SQLite's reads: made at once, on the caller's thread. */
static void read_now(struct store_sqlite *st, struct store_read *r)
{
	r->result = STORE_OK;
	r->last = 0;
	r->why = NULL;
	r->check_why[0] = '\0';
	r->next = NULL;
	if (!r->check) {
		r->result = store_sqlite_read(st, r->room, r->after, r->limit, r->each, r->ctx,
					      &r->last, &r->why);
	} else if (store_sqlite_check(st, r->check_why, sizeof r->check_why) != 0) {
		r->result = STORE_FAILED;
		r->why = r->check_why;
	} else {
		r->check_why[0] = '\0'; /* a sentence only when the check failed */
	}
	r->done(r);
}

void store_read_queue(struct store *st, struct store_read *r)
{
	if (!r->check)
		metrics_store_read();
	if (st->kind != STORE_KIND_PG) {
		read_now(LITE(st), r);
		return;
	}
	if (!store_pg_read_queue(PG(st), r)) {
		r->result = STORE_FAILED;
		r->last = 0;
		r->why = "store: too many reads waiting";
		r->done(r);
	}
}

int store_data_version(struct store *st, uint64_t *out)
{
	return st->kind == STORE_KIND_PG ? store_pg_data_version(PG(st), out)
					 : store_sqlite_data_version(LITE(st), out);
}

void store_changed_rooms(struct store *st, struct store_changes *out)
{
	if (st->kind == STORE_KIND_PG) {
		store_pg_changed_rooms(PG(st), out);
		return;
	}
	out->all = true;
	out->n = 0;
}

int store_check(struct store *st, char *why, size_t why_size)
{
	return st->kind == STORE_KIND_PG ? store_pg_check(PG(st), why, why_size)
					 : store_sqlite_check(LITE(st), why, why_size);
}
