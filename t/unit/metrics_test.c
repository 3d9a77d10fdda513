/* The Prometheus exposition of GET /chat/metrics (its route labels are
 * routes_test's). */
#include "metrics.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static char *render(void)
{
	struct metrics_gauges g = {
	    .held = 3, .streams = 0, .connections = 7, .threads = 8, .posts_storing = 5};
	size_t len;
	char *text = metrics_render(&g, &len);
	if (!text)
		abort();
	if (strlen(text) != len)
		abort();
	return text;
}

static bool has(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

int main(void)
{
	char *t = render();
	ok(!strstr(t, "chat_fcgi_requests_total{"), "no request series before any request");
	ok(has(t, "# TYPE chat_fcgi_requests_total counter"), "requests_total is a counter");
	ok(has(t, "# TYPE chat_fcgi_request_duration_seconds histogram"), "a latency histogram");
	ok(has(t, "chat_fcgi_held_waits 3"), "held waits gauge");
	ok(has(t, "chat_fcgi_connections 7"), "connections gauge");
	ok(has(t, "chat_fcgi_streams 0"), "streams gauge");
	ok(has(t, "chat_fcgi_posts_storing 5"), "posts being stored gauge");
	ok(has(t, "chat_fcgi_requests_in_flight 0"), "nothing in flight");
	ok(has(t, "chat_fcgi_store_errors_total 0"), "no store errors");
	ok(has(t, "chat_fcgi_standby_events_total 0"), "no event taken by the standby");
	ok(strstr(t, "chat_fcgi_build_info{version=\"" VERSION_STRING "\",json_c=\"") != NULL,
	   "build info names the version");
	free(t);

	metrics_request_started();
	metrics_request_started();
	t = render();
	ok(has(t, "chat_fcgi_requests_in_flight 2"), "two in flight");
	free(t);
	metrics_request_done(ROUTE_CHAT, 200, 300);   /* 0.3 ms */
	metrics_request_done(ROUTE_CHAT, 418, 40000); /* 40 ms, an odd status */
	metrics_request_started();
	metrics_request_done(ROUTE_MESSAGES, 200, 40000000); /* past the last bucket */
	metrics_store_error();
	metrics_standby_took();
	metrics_standby_took();
	t = render();
	ok(has(t, "chat_fcgi_requests_in_flight 0"), "none in flight after they are done");
	ok(has(t, "chat_fcgi_requests_total{route=\"chat\",status=\"200\"} 1"), "chat 200 counted");
	ok(has(t, "chat_fcgi_requests_total{route=\"chat\",status=\"other\"} 1"),
	   "an unknown status counts as other");
	ok(has(t, "chat_fcgi_requests_total{route=\"messages\",status=\"200\"} 1"),
	   "messages 200 counted");
	ok(has(t, "chat_fcgi_request_duration_seconds_bucket{route=\"chat\",le=\"0.00025\"} 0"),
	   "0.3 ms is not under 0.25 ms");
	ok(has(t, "chat_fcgi_request_duration_seconds_bucket{route=\"chat\",le=\"0.0005\"} 1"),
	   "... but under 0.5 ms");
	ok(has(t, "chat_fcgi_request_duration_seconds_bucket{route=\"chat\",le=\"0.05\"} 2"),
	   "buckets are cumulative");
	ok(has(t, "chat_fcgi_request_duration_seconds_bucket{route=\"chat\",le=\"+Inf\"} 2"),
	   "+Inf holds every request");
	ok(has(t, "chat_fcgi_request_duration_seconds_count{route=\"chat\"} 2"), "count");
	ok(has(t, "chat_fcgi_request_duration_seconds_sum{route=\"chat\"} 0.040300"),
	   "sum in seconds");
	ok(has(t, "chat_fcgi_request_duration_seconds_bucket{route=\"messages\",le=\"30\"} 0"),
	   "a 40 s wait is in no finite bucket");
	ok(has(t, "chat_fcgi_request_duration_seconds_bucket{route=\"messages\",le=\"+Inf\"} 1"),
	   "... but in +Inf");
	ok(!strstr(t, "route=\"health\""), "routes without requests have no series");
	ok(has(t, "chat_fcgi_store_errors_total 1"), "a store error counted");
	ok(has(t, "chat_fcgi_standby_events_total 2"), "two events taken by the standby counted");
	free(t);
	return done_testing();
}
