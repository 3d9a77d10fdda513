/* The PostgreSQL store behind store.h (see there for what each call does). */
#ifndef STORE_PG_H
#define STORE_PG_H

#include "store.h"

struct store_pg;

/* Without PostgreSQL support (configure --without-postgresql) this only
 * fails, saying so. */
int store_pg_open(struct store_pg **out, const char *uri, const struct store_options *opt,
		  char *err, size_t err_size);
void store_pg_close(struct store_pg *st);
/* Without PostgreSQL support, fails p at once. */
void store_pg_queue(struct store_pg *st, struct store_post *p);
enum store_result store_pg_read(struct store_pg *st, const char *room, int64_t after,
				unsigned limit, store_entry_fn each, void *ctx, int64_t *last,
				const char **why);
/* Queues r for the store's reading threads; false when STORE_READS_QUEUED
 * wait already, r left for the caller to fail. Without PostgreSQL support,
 * fails r at once. */
bool store_pg_read_queue(struct store_pg *st, struct store_read *r);
int store_pg_data_version(struct store_pg *st, uint64_t *out);
void store_pg_changed_rooms(struct store_pg *st, struct store_changes *out);
int store_pg_check(struct store_pg *st, char *why, size_t why_size);

#endif
