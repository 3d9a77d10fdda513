/* The counters, and their exposition. Routes are counted by id and
 * labelled from the table; it knows nothing of requests or the server. */
#include "metrics.h"

#include <json-c/json_c_version.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* The statuses the backend answers with; anything else counts as "other". */
static const int statuses[] = {200, 400, 403, 404, 405, 413, 415, 429, 500, 503};
#define NSTATUS (sizeof statuses / sizeof statuses[0] + 1)

/* Upper bounds of the latency buckets, in microseconds. Long-polls end in
 * the top ones. */
static const uint64_t bucket_us[] = {250,     500,     1000,     2500,    5000,   10000,
				     25000,   50000,   100000,   250000,  500000, 1000000,
				     2500000, 5000000, 10000000, 30000000};
#define NBUCKET (sizeof bucket_us / sizeof bucket_us[0])

static atomic_ulong requests[ROUTE_COUNT][NSTATUS];
static atomic_ulong buckets[ROUTE_COUNT][NBUCKET];
static atomic_ulong counts[ROUTE_COUNT];
static atomic_ullong sum_us[ROUTE_COUNT];
static atomic_long in_flight;
static atomic_ulong store_errors;
static atomic_ulong store_reads;
static atomic_ulong standby_took;
static atomic_ulong closed[METRICS_CLOSE_COUNT];
static atomic_ulong posts_refused;

static const char *const close_names[METRICS_CLOSE_COUNT] = {
    [METRICS_CLOSE_SEND_TIMEOUT] = "send_timeout",       [METRICS_CLOSE_QUEUE_FULL] = "queue_full",
    [METRICS_CLOSE_RECEIVE_TIMEOUT] = "receive_timeout", [METRICS_CLOSE_PROTOCOL] = "protocol",
    [METRICS_CLOSE_NOT_ALLOWED] = "not_allowed",
};

void metrics_request_started(void)
{
	atomic_fetch_add_explicit(&in_flight, 1, memory_order_relaxed);
}

void metrics_request_done(enum route_id route, int status, uint64_t micros)
{
	if ((unsigned)route >= ROUTE_COUNT)
		route = ROUTE_OTHER;
	size_t s = NSTATUS - 1;
	for (size_t i = 0; i < NSTATUS - 1; i++)
		if (statuses[i] == status)
			s = i;
	atomic_fetch_add_explicit(&requests[route][s], 1, memory_order_relaxed);
	/* Buckets are stored non-cumulative and summed when rendered. */
	size_t b = 0;
	while (b < NBUCKET && micros > bucket_us[b])
		b++;
	if (b < NBUCKET)
		atomic_fetch_add_explicit(&buckets[route][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&counts[route], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sum_us[route], micros, memory_order_relaxed);
	atomic_fetch_sub_explicit(&in_flight, 1, memory_order_relaxed);
}

void metrics_store_error(void)
{
	atomic_fetch_add_explicit(&store_errors, 1, memory_order_relaxed);
}

void metrics_standby_took(void)
{
	atomic_fetch_add_explicit(&standby_took, 1, memory_order_relaxed);
}

void metrics_store_read(void)
{
	atomic_fetch_add_explicit(&store_reads, 1, memory_order_relaxed);
}

void metrics_conn_closed(enum metrics_close why)
{
	if ((unsigned)why < METRICS_CLOSE_COUNT)
		atomic_fetch_add_explicit(&closed[why], 1, memory_order_relaxed);
}

void metrics_post_refused(void)
{
	atomic_fetch_add_explicit(&posts_refused, 1, memory_order_relaxed);
}

struct text {
	char *buf;
	size_t len, cap;
	bool failed;
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
put(struct text *t, const char *fmt, ...)
{
	if (t->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = true;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap * 2 + (size_t)n;
		char *grown = realloc(t->buf, cap);
		if (!grown) {
			t->failed = true;
			return;
		}
		t->buf = grown;
		t->cap = cap;
	}
}

static void gauge(struct text *t, const char *name, const char *help, long value)
{
	put(t, "# HELP %s %s\n# TYPE %s gauge\n%s %ld\n", name, help, name, name, value);
}

char *metrics_render(const struct metrics_gauges *g, size_t *len)
{
	struct text t = {.cap = 4096};
	t.buf = malloc(t.cap);
	if (!t.buf)
		return NULL;
	t.buf[0] = '\0';

	put(&t, "# HELP chat_fcgi_requests_total Requests answered, by route and status.\n"
		"# TYPE chat_fcgi_requests_total counter\n");
	for (size_t r = 0; r < ROUTE_COUNT; r++)
		for (size_t s = 0; s < NSTATUS; s++) {
			unsigned long n =
			    atomic_load_explicit(&requests[r][s], memory_order_relaxed);
			if (n == 0)
				continue;
			if (s < NSTATUS - 1)
				put(&t,
				    "chat_fcgi_requests_total{route=\"%s\",status=\"%d\"} %lu\n",
				    routes[r].metric, statuses[s], n);
			else
				put(&t,
				    "chat_fcgi_requests_total{route=\"%s\",status=\"other\"} %lu\n",
				    routes[r].metric, n);
		}

	put(&t, "# HELP chat_fcgi_request_duration_seconds Time from reading a request to "
		"answering it (long-polls include their wait).\n"
		"# TYPE chat_fcgi_request_duration_seconds histogram\n");
	for (size_t r = 0; r < ROUTE_COUNT; r++) {
		unsigned long count = atomic_load_explicit(&counts[r], memory_order_relaxed);
		if (count == 0)
			continue;
		unsigned long cumulative = 0;
		for (size_t b = 0; b < NBUCKET; b++) {
			cumulative += atomic_load_explicit(&buckets[r][b], memory_order_relaxed);
			put(&t,
			    "chat_fcgi_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
			    "%lu\n",
			    routes[r].metric, (double)bucket_us[b] / 1e6, cumulative);
		}
		/* Read apart from the buckets, so a request counted in between
		 * could make +Inf smaller than the last bucket: never show that. */
		if (count < cumulative)
			count = cumulative;
		put(&t,
		    "chat_fcgi_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %lu\n"
		    "chat_fcgi_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
		    "chat_fcgi_request_duration_seconds_count{route=\"%s\"} %lu\n",
		    routes[r].metric, count, routes[r].metric,
		    (double)atomic_load_explicit(&sum_us[r], memory_order_relaxed) / 1e6,
		    routes[r].metric, count);
	}

	long flight = atomic_load_explicit(&in_flight, memory_order_relaxed);
	gauge(&t, "chat_fcgi_requests_in_flight", "Requests being worked on now.",
	      flight < 0 ? 0 : flight);
	gauge(&t, "chat_fcgi_held_waits", "Long-polls held now, waiting for their room.",
	      (long)g->held);
	gauge(&t, "chat_fcgi_streams", "Event streams open now.", (long)g->streams);
	gauge(&t, "chat_fcgi_connections", "Connections from nginx open now.",
	      (long)g->connections);
	gauge(&t, "chat_fcgi_threads", "Worker threads.", (long)g->threads);
	gauge(&t, "chat_fcgi_posts_storing", "Posts queued for the store, not yet committed.",
	      (long)g->posts_storing);
	gauge(&t, "chat_fcgi_output_queued_bytes",
	      "Bytes of answers written but not yet taken by their readers.",
	      (long)g->queued_bytes);
	put(&t, "# HELP chat_fcgi_connections_closed_total Connections the backend closed, by "
		"reason.\n"
		"# TYPE chat_fcgi_connections_closed_total counter\n");
	for (size_t i = 0; i < METRICS_CLOSE_COUNT; i++)
		put(&t, "chat_fcgi_connections_closed_total{reason=\"%s\"} %lu\n", close_names[i],
		    atomic_load_explicit(&closed[i], memory_order_relaxed));
	put(&t,
	    "# HELP chat_fcgi_posts_refused_total Posts refused with 503 because --max-posts "
	    "posts waited for the store.\n"
	    "# TYPE chat_fcgi_posts_refused_total counter\n"
	    "chat_fcgi_posts_refused_total %lu\n",
	    atomic_load_explicit(&posts_refused, memory_order_relaxed));
	put(&t,
	    "# HELP chat_fcgi_store_reads_total Reads of a room's entries from the store.\n"
	    "# TYPE chat_fcgi_store_reads_total counter\n"
	    "chat_fcgi_store_reads_total %lu\n",
	    atomic_load_explicit(&store_reads, memory_order_relaxed));
	put(&t,
	    "# HELP chat_fcgi_store_errors_total Store operations that failed.\n"
	    "# TYPE chat_fcgi_store_errors_total counter\n"
	    "chat_fcgi_store_errors_total %lu\n",
	    atomic_load_explicit(&store_errors, memory_order_relaxed));
	put(&t,
	    "# HELP chat_fcgi_standby_events_total Events the standby thread took because "
	    "the pollers took none for 1 ms.\n"
	    "# TYPE chat_fcgi_standby_events_total counter\n"
	    "chat_fcgi_standby_events_total %lu\n",
	    atomic_load_explicit(&standby_took, memory_order_relaxed));
	put(&t,
	    "# HELP chat_fcgi_build_info The running build.\n"
	    "# TYPE chat_fcgi_build_info gauge\n"
	    "chat_fcgi_build_info{version=\"%s\",json_c=\"%s\"} 1\n",
	    VERSION_STRING, json_c_version());

	if (t.failed) {
		free(t.buf);
		return NULL;
	}
	*len = t.len;
	return t.buf;
}
