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
/* Counts a read of a room's entries from the store. */
void metrics_store_read(void);
/* Counts an event the standby thread took because the pollers took none. */
void metrics_standby_took(void);

/* Why the server closed a connection it would otherwise have kept. */
enum metrics_close {
	METRICS_CLOSE_SEND_TIMEOUT,    /* its reader took nothing for --send-timeout */
	METRICS_CLOSE_QUEUE_FULL,      /* its reader left more than --max-queue unread */
	METRICS_CLOSE_RECEIVE_TIMEOUT, /* a request did not come whole in --receive-timeout */
	METRICS_CLOSE_PROTOCOL,        /* it broke the FastCGI protocol */
	METRICS_CLOSE_NOT_ALLOWED,     /* its peer is not in --allow-from */
	METRICS_CLOSE_COUNT
};
void metrics_conn_closed(enum metrics_close why);
/* Counts a post refused because --max-posts wait for the store. */
void metrics_post_refused(void);

/* The gauges that the server knows at render time. */
struct metrics_gauges {
	unsigned held;        /* long-polls held now */
	unsigned streams;     /* event streams open now */
	unsigned connections; /* connections from nginx open now */
	unsigned threads;
	unsigned posts_storing; /* posts queued for the store, not yet committed */
	size_t queued_bytes;    /* answers written but not yet taken by their readers */
};

/* The whole exposition. Returns a malloc'd text (*len bytes, NUL-ended),
 * or NULL when out of memory. */
char *metrics_render(const struct metrics_gauges *g, size_t *len);

#endif
