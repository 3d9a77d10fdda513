/* The table of routes, read as a whole: each path maps back to its route,
 * each route answers its own methods and refuses others with 405 and its
 * Allow, the server's own routes are judged the same by chat_check_method,
 * every route has its series in the metrics, and other paths are 404. */
#include "chat.h"
#include "json_parse.h"
#include "metrics.h"
#include "store.h"
#include "tap.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[4096];
static struct chat_limits lim = {.max_body = CHAT_MAX_BODY_DEFAULT};

/* Methods to try on every route; NULL is a request without one. */
static const char *const methods[] = {"GET",   "HEAD",    "POST", "PUT", "DELETE",
				      "PATCH", "OPTIONS", "get",  "",    NULL};
#define NMETHODS (sizeof methods / sizeof methods[0])

/* A request to route r that passes its head when its method is allowed:
 * a JSON message for the chat, a room for the reads. */
static struct chat_request request_to(enum route_id id, const char *method)
{
	static const char body[] = "{\"message\":\"x\"}";
	struct chat_request req = {.method = method, .path = routes[id].path};
	if (id == ROUTE_CHAT) {
		req.content_type = "application/json";
		req.content_length = "15";
		req.body = body;
		req.body_len = sizeof body - 1;
	} else {
		req.query = "room=r";
		req.content_length = "";
	}
	return req;
}

/* The sentence of a 405 made from an Allow list, written apart from
 * chat.c: "A" is "Only A is allowed here.", "A, B" "Only A and B are
 * allowed here." */
static void refusal_of(const char *allow, char *out, size_t size)
{
	const char *last = strrchr(allow, ',');
	if (!last) {
		snprintf(out, size, "Only %s is allowed here.", allow);
		return;
	}
	snprintf(out, size, "Only %.*s and %s are allowed here.", (int)(last - allow), allow,
		 last + 2);
}

/* res is the 405 of route r: its Allow, a JSON error saying which. */
static void is_refusal(const struct chat_response *res, const struct route *r, const char *what)
{
	char want[128];
	refusal_of(r->allow, want, sizeof want);
	json_object *j = res->body ? parse_strict(res->body, res->body_len) : NULL;
	json_object *e = NULL;
	bool has_error = j && json_object_object_get_ex(j, "error", &e) &&
			 json_object_is_type(e, json_type_string);
	ok(res->kind == CHAT_ANSWER && res->status == 405 && res->allow &&
	       strcmp(res->allow, r->allow) == 0 && has_error &&
	       strcmp(json_object_get_string(e), want) == 0,
	   "%s: 405, Allow: %s, {\"error\":\"%s\"}", what, r->allow, want);
	if (res->status != 405 || !has_error)
		diag("got %d: %.*s", res->status, (int)(res->body ? res->body_len : 0),
		     res->body ? res->body : "");
	json_object_put(j);
}

static void test_paths(void)
{
	for (size_t i = 0; i < ROUTE_COUNT; i++) {
		if (!routes[i].path)
			continue;
		ok(route_of(routes[i].path) == (enum route_id)i, "%s is the %s route",
		   routes[i].path, routes[i].metric);
	}
	ok(!routes[ROUTE_OTHER].path && !routes[ROUTE_OTHER].allow, "other has no path, no method");
	ok(route_of(NULL) == ROUTE_OTHER, "no path is other");
	static const char *const unknown[] = {"/",      "/chat",           "/chat/x",
					      "/CHAT/", "/chat/messages/", "/chat/events?x",
					      "",       "/chat/health/",   "chat/"};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		ok(route_of(unknown[i]) == ROUTE_OTHER, "'%s' is other", unknown[i]);
		struct chat_request req = {.method = "GET", .path = unknown[i]};
		struct chat_response res;
		chat_respond(&req, &lim, &res);
		ok(res.kind == CHAT_ANSWER && res.status == 404 && !res.allow,
		   "... answered 404, without Allow");
		chat_response_free(&res);
	}
	struct chat_request req = {.method = "GET", .path = "/nowhere"};
	struct chat_response res;
	ok(!chat_check_method(ROUTE_OTHER, &req, &res) && res.status == 404,
	   "chat_check_method: other allows no method, 404");
	chat_response_free(&res);
}

/* The labels dashboards know the routes by. */
static void test_labels(void)
{
	static const char *const want[ROUTE_COUNT] = {
	    [ROUTE_CHAT] = "chat",     [ROUTE_MESSAGES] = "messages", [ROUTE_EVENTS] = "events",
	    [ROUTE_HEALTH] = "health", [ROUTE_METRICS] = "metrics",   [ROUTE_OTHER] = "other",
	};
	for (size_t i = 0; i < ROUTE_COUNT; i++)
		is_str(routes[i].metric, want[i], "route %zu's label", i);
	is_str(routes[ROUTE_CHAT].allow, "POST", "the chat takes POST");
	for (size_t i = ROUTE_MESSAGES; i < ROUTE_OTHER; i++)
		is_str(routes[i].allow, "GET, HEAD", "%s takes GET and HEAD", routes[i].path);
	ok(route_allows(&routes[ROUTE_MESSAGES], "GET") &&
	       route_allows(&routes[ROUTE_MESSAGES], "HEAD"),
	   "route_allows: each method of the list");
	ok(!route_allows(&routes[ROUTE_MESSAGES], "GE") &&
	       !route_allows(&routes[ROUTE_MESSAGES], "GET, HEAD") &&
	       !route_allows(&routes[ROUTE_MESSAGES], "get") &&
	       !route_allows(&routes[ROUTE_MESSAGES], NULL),
	   "... and nothing else: no prefix, no list, no other case, no method");
}

/* Each route's methods, and the others, through the table. */
static void test_methods(void)
{
	for (size_t i = 0; i < ROUTE_COUNT; i++) {
		const struct route *r = &routes[i];
		if (!r->allow)
			continue;
		for (size_t m = 0; m < NMETHODS; m++) {
			const char *method = methods[m];
			struct chat_request req = request_to((enum route_id)i, method);
			struct chat_response res;
			char what[96];
			snprintf(what, sizeof what, "%s %s", method ? method : "(no method)",
				 r->path);
			bool allowed = route_allows(r, method);
			if (r->respond) {
				size_t announced;
				enum chat_head head = chat_check_head(&req, &lim, &res, &announced);
				if (allowed) {
					ok(head == CHAT_HEAD_READ_BODY, "%s: its head passes",
					   what);
				} else {
					ok(head == CHAT_HEAD_REJECTED, "%s: its head is refused",
					   what);
					is_refusal(&res, r, what);
				}
				chat_response_free(&res);
				chat_respond(&req, &lim, &res);
				if (allowed)
					ok(res.status != 405 && res.status != 404,
					   "%s: answered (%d)", what, res.status);
				else
					is_refusal(&res, r, what);
				chat_response_free(&res);
			} else {
				/* The server answers it, once the method is judged. */
				memset(&res, 0x5A, sizeof res);
				bool passed = chat_check_method((enum route_id)i, &req, &res);
				ok(passed == allowed, "%s: chat_check_method says %s", what,
				   allowed ? "yes" : "no");
				if (!passed)
					is_refusal(&res, r, what);
				else
					memset(&res, 0, sizeof res);
				chat_response_free(&res);
				chat_respond(&req, &lim, &res);
				ok(res.status == 404, "%s: not the logic's to answer: 404", what);
				chat_response_free(&res);
			}
		}
	}
}

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

static void test_metrics(void)
{
	for (size_t i = 0; i < ROUTE_COUNT; i++) {
		metrics_request_started();
		metrics_request_done((enum route_id)i, 200, 100);
	}
	struct metrics_gauges g = {.threads = 1};
	size_t len;
	char *text = metrics_render(&g, &len);
	ok(text != NULL, "the exposition renders");
	for (size_t i = 0; text && i < ROUTE_COUNT; i++) {
		char line[128];
		snprintf(line, sizeof line,
			 "chat_fcgi_requests_total{route=\"%s\",status=\"200\"} 1",
			 routes[i].metric);
		ok(has_line(text, line), "%s", line);
	}
	free(text);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/routes_test.XXXXXX", tmp && *tmp ? tmp : ".");
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	char path[4200], err[512];
	snprintf(path, sizeof path, "%s/chat.db", dir);
	struct store_options o = {.history = 1000};
	if (store_open(&lim.store, path, &o, err, sizeof err) != 0) {
		printf("Bail out! %s\n", err);
		return 1;
	}
	test_paths();
	test_labels();
	test_methods();
	test_metrics();
	store_close(lim.store);

	if (!getenv("CHAT_KEEP")) {
		char cmd[4300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			diag("could not remove %s", dir);
	}
	return done_testing();
}
