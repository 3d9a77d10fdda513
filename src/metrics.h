/* Counters for GET /chat/metrics, in the Prometheus text format. Updated
 * with atomics from every thread; no locks. Routes are counted by their id
 * and labelled as the table (routes.h) says; it knows no path. */
#ifndef METRICS_H
#define METRICS_H

#include "routes.h"

#include <stddef.h>
#include <stdint.h>

void metrics_request_started(void);
/* Counts an answered request and its time from being read to answered. */
void metrics_request_done(enum route_id route, int status, uint64_t micros);
void metrics_store_error(void);
/* Counts an event the standby thread took because the pollers took none. */
void metrics_standby_took(void);

/* The gauges that the server knows at render time. */
struct metrics_gauges {
	unsigned held;        /* long-polls held now */
	unsigned streams;     /* event streams open now */
	unsigned connections; /* connections from nginx open now */
	unsigned threads;
	unsigned posts_storing; /* posts queued for the store, not yet committed */
};

/* The whole exposition. Returns a malloc'd text (*len bytes, NUL-ended),
 * or NULL when out of memory. */
char *metrics_render(const struct metrics_gauges *g, size_t *len);

#endif
