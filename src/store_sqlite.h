/* The SQLite store behind store.h (see there for what each call does). */
#ifndef STORE_SQLITE_H
#define STORE_SQLITE_H

#include "store.h"

struct store_sqlite;

int store_sqlite_open(struct store_sqlite **out, const char *path, const struct store_options *opt,
		      char *err, size_t err_size);
void store_sqlite_close(struct store_sqlite *st);
void store_sqlite_queue(struct store_sqlite *st, struct store_post *p);
enum store_result store_sqlite_read(struct store_sqlite *st, const char *room, int64_t after,
				    unsigned limit, store_entry_fn each, void *ctx, int64_t *last,
				    const char **why);
int store_sqlite_data_version(struct store_sqlite *st, uint64_t *out);
int store_sqlite_check(struct store_sqlite *st, char *why, size_t why_size);

#endif
