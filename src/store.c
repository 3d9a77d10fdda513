/* Sends each call to the store the spec named: SQLite or PostgreSQL. */
#include "store.h"

#include "store_pg.h"
#include "store_sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store {
	struct store_sqlite *lite; /* exactly one of the two is set */
	struct store_pg *pg;
};

bool store_is_postgresql(const char *spec)
{
	return strncmp(spec, "postgresql://", 13) == 0 || strncmp(spec, "postgres://", 11) == 0;
}

int store_open(struct store **out, const char *spec, const struct store_options *opt, char *err,
	       size_t err_size)
{
	*out = NULL;
	struct store *st = calloc(1, sizeof *st);
	if (!st) {
		snprintf(err, err_size, "out of memory");
		return -1;
	}
	int r = store_is_postgresql(spec) ? store_pg_open(&st->pg, spec, opt, err, err_size)
					  : store_sqlite_open(&st->lite, spec, opt, err, err_size);
	if (r != 0) {
		free(st);
		return -1;
	}
	*out = st;
	return 0;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->pg)
		store_pg_close(st->pg);
	else
		store_sqlite_close(st->lite);
	free(st);
}

enum store_result store_post(struct store *st, const char *room, const char *client_id,
			     size_t client_id_len, const char *text, size_t text_len,
			     const char *reply, size_t reply_len, store_answer_fn build, void *ctx,
			     char **answer, size_t *answer_len, bool *replayed, const char **why)
{
	if (st->pg)
		return store_pg_post(st->pg, room, client_id, client_id_len, text, text_len, reply,
				     reply_len, build, ctx, answer, answer_len, replayed, why);
	return store_sqlite_post(st->lite, room, client_id, client_id_len, text, text_len, reply,
				 reply_len, build, ctx, answer, answer_len, replayed, why);
}

enum store_result store_read(struct store *st, const char *room, int64_t after, unsigned limit,
			     store_entry_fn each, void *ctx, int64_t *last, const char **why)
{
	if (st->pg)
		return store_pg_read(st->pg, room, after, limit, each, ctx, last, why);
	return store_sqlite_read(st->lite, room, after, limit, each, ctx, last, why);
}

int store_data_version(struct store *st, uint64_t *out)
{
	return st->pg ? store_pg_data_version(st->pg, out)
		      : store_sqlite_data_version(st->lite, out);
}

int store_check(struct store *st, char *why, size_t why_size)
{
	return st->pg ? store_pg_check(st->pg, why, why_size)
		      : store_sqlite_check(st->lite, why, why_size);
}
