/* What both stores begin with, so that store.c can tell them apart. */
#ifndef STORE_IMPL_H
#define STORE_IMPL_H

#include "store.h"

enum store_kind { STORE_KIND_SQLITE, STORE_KIND_PG };

/* The first member of struct store_sqlite and struct store_pg: a store is
 * one allocation, which its own threads keep reachable (a process exits
 * with its store open). */
struct store {
	enum store_kind kind;
};

#endif
