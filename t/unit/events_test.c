/* The event streams through chat_respond, on a real store in a temp dir:
 * the Accept header's reading, GET /chat/events (first part, cursor,
 * Last-Event-ID, heartbeat, backlog, capacity, HEAD, errors) and streamed
 * replies (pieces, UTF-8 boundaries, done, errors stay JSON). */
#include "chat.h"
#include "events.h"
#include "rooms.h"
#include "json_parse.h"
#include "store.h"
#include "tap.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[4096];
static struct chat_limits lim = {.max_body = CHAT_MAX_BODY_DEFAULT};

static void request(struct chat_request *req, const char *method, const char *path,
		    const char *query, const char *body, char clen[32])
{
	size_t len = body ? strlen(body) : 0;
	snprintf(clen, 32, "%zu", len);
	*req = (struct chat_request){
	    .method = method,
	    .path = path,
	    .query = query,
	    .content_type = body ? "application/json" : NULL,
	    .content_length = body ? clen : "",
	    .body = body,
	    .body_len = len,
	    .hold_mode = CHAT_HOLD_ALLOWED,
	};
}

static void post(const char *body, const char *accept, struct chat_response *res)
{
	struct chat_request req;
	char clen[32];
	request(&req, "POST", "/chat/", NULL, body, clen);
	req.accept = accept;
	chat_respond(&req, &lim, res);
}

/* Counts "needle" in the body. */
static size_t count(const struct chat_response *res, const char *needle)
{
	size_t n = 0, nl = strlen(needle);
	for (size_t i = 0; res->body && i + nl <= res->body_len; i++)
		if (memcmp(res->body + i, needle, nl) == 0)
			n++;
	return n;
}

static bool has(const struct chat_response *res, const char *needle)
{
	return count(res, needle) > 0;
}

static void test_accept(void)
{
	static const struct {
		const char *accept;
		bool want;
	} cases[] = {
	    {"text/event-stream", true},
	    {"TEXT/Event-Stream", true},
	    {"application/json, text/event-stream", true},
	    {"text/event-stream;q=0.5, */*", true},
	    {"text/event-stream ; q=1", true},
	    {"text/event-stream;q=0", false},
	    {"text/event-stream; q=0.000", false},
	    {"text/event-stream;q=0.001", true},
	    {"text/event-streams", false},
	    {"text/event", false},
	    {"*/*", false},
	    {"application/json", false},
	    {"", false},
	    {" , ,", false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ok(events_accepted(cases[i].accept) == cases[i].want, "Accept: '%s' %s a stream",
		   cases[i].accept, cases[i].want ? "asks for" : "does not ask for");
	ok(!events_accepted(NULL), "no Accept header: no stream");
}

static void events(const char *query, const char *last_id, bool open, int64_t after,
		   enum chat_hold_mode mode, struct chat_response *res)
{
	struct chat_request req;
	char clen[32];
	request(&req, "GET", "/chat/events", query, NULL, clen);
	req.last_event_id = last_id;
	req.stream_open = open;
	req.stream_after = after;
	req.hold_mode = mode;
	chat_respond(&req, &lim, res);
}

static void test_events(void)
{
	struct chat_response res;
	for (int i = 0; i < 3; i++) {
		char body[96];
		snprintf(body, sizeof body, "{\"message\":\"m%d\",\"room\":\"ev\"}", i + 1);
		post(body, NULL, &res);
		chat_response_free(&res);
	}

	events("room=ev", NULL, false, 0, CHAT_HOLD_ALLOWED, &res);
	is_int(res.status, 200, "GET /chat/events: 200");
	is_str(res.content_type, EVENTS_CONTENT_TYPE, "... text/event-stream");
	ok(res.kind == CHAT_STREAM, "... an open stream");
	ok(res.body_len > 13 && memcmp(res.body, "retry: 2000\n\n", 13) == 0,
	   "... starting with retry: 2000");
	is_int((long long)count(&res, "event: message\n"), 6, "... then the 6 entries");
	ok(has(&res, "id: 1\nevent: message\ndata: {\"seq\":1,\"role\":\"user\",\"text\":\"m1\""),
	   "... each as id, event and data: the entry's JSON");
	ok(has(&res, "id: 6\n"), "... up to id 6");
	is_int(res.stream_next, 6, "... and the cursor is 6");
	is_int(res.hold.ms, EVENTS_HEARTBEAT_MS, "... held for the heartbeat interval");
	is_str(res.hold.room, "ev", "... on its room");
	chat_response_free(&res);

	events("room=ev&after=4", NULL, false, 0, CHAT_HOLD_ALLOWED, &res);
	ok(!has(&res, "id: 4\n") && has(&res, "id: 5\n") && has(&res, "id: 6\n"),
	   "after=4: ids 5 and 6 only");
	chat_response_free(&res);

	events("room=ev&after=5", "2", false, 0, CHAT_HOLD_ALLOWED, &res);
	ok(has(&res, "id: 3\n") && !has(&res, "id: 2\n"), "Last-Event-ID: 2 wins over after=5");
	chat_response_free(&res);

	events("room=ev", "x2", false, 0, CHAT_HOLD_ALLOWED, &res);
	is_int(res.status, 400, "a bad Last-Event-ID: 400");
	is_str(res.content_type, NULL, "... JSON");
	chat_response_free(&res);
	events("room=ev", "99999999999999999999", false, 0, CHAT_HOLD_ALLOWED, &res);
	is_int(res.status, 400, "a Last-Event-ID past INT64_MAX: 400");
	chat_response_free(&res);

	/* Continuing: the server's cursor wins over both. */
	events("room=ev&after=0", "1", true, 6, CHAT_HOLD_ALLOWED, &res);
	is_int(res.status, 200, "an open stream with nothing new: 200");
	ok(res.kind == CHAT_STREAM && res.body_len == 0, "... an empty part (nothing to send)");
	is_int(res.stream_next, 6, "... the cursor stays");
	chat_response_free(&res);

	events("room=ev", NULL, true, 6, CHAT_HOLD_OVER, &res);
	ok(res.kind == CHAT_STREAM && res.body_len == 14 &&
	       memcmp(res.body, ": keep-alive\n\n", 14) == 0,
	   "its heartbeat deadline passed: a keep-alive comment, no retry: again");
	chat_response_free(&res);

	events("room=ev", NULL, true, 4, CHAT_HOLD_OVER, &res);
	ok(has(&res, "id: 5\n") && !has(&res, "keep-alive") && !has(&res, "retry:"),
	   "entries due at the deadline: the entries, no comment");
	chat_response_free(&res);

	events("room=ev", NULL, false, 0, CHAT_HOLD_FULL, &res);
	is_int(res.status, 503, "no room for another stream: 503");
	ok(res.kind == CHAT_ANSWER && has(&res, "poll /chat/messages"),
	   "... JSON that says to poll");
	is_int(res.retry_after, CHAT_RETRY_AFTER_S, "... and to come back in 1 s");
	chat_response_free(&res);

	struct chat_request req;
	char clen[32];
	request(&req, "HEAD", "/chat/events", "room=ev", NULL, clen);
	chat_respond(&req, &lim, &res);
	ok(res.status == 200 && res.kind == CHAT_ANSWER, "HEAD: 200, not held open");
	chat_response_free(&res);

	events(NULL, NULL, false, 0, CHAT_HOLD_ALLOWED, &res);
	is_int(res.status, 400, "no room: 400");
	chat_response_free(&res);

	/* A backlog: one batch, then at once the rest. */
	for (int i = 0; i < 260; i++) {
		post("{\"message\":\"b\",\"room\":\"big\"}", NULL, &res);
		chat_response_free(&res);
	}
	events("room=big&after=0", NULL, false, 0, CHAT_HOLD_ALLOWED, &res);
	is_int((long long)count(&res, "event: message"), EVENTS_BATCH, "a backlog: one batch");
	is_int(res.hold.ms, 0, "... and the next part at once");
	int64_t next = res.stream_next;
	chat_response_free(&res);
	events("room=big", NULL, true, next, CHAT_HOLD_OVER, &res);
	is_int((long long)count(&res, "event: message"), 520 - EVENTS_BATCH, "... the rest");
	is_int(res.hold.ms, EVENTS_HEARTBEAT_MS, "... then the heartbeat wait");
	chat_response_free(&res);

	struct chat_limits off = {.max_body = CHAT_MAX_BODY_DEFAULT};
	request(&req, "GET", "/chat/events", "room=ev", NULL, clen);
	chat_respond(&req, &off, &res);
	is_int(res.status, 404, "--store none: 404");
	chat_response_free(&res);
}

/* Reads a room's stream part after part, as the server asks for them, from
 * its first part (query) to the one that waits: every part within
 * EVENTS_PART_MAX and one entry, each entry once, in order. */
static void read_parts(const char *query, int64_t entries, const char *name)
{
	struct chat_response res;
	events(query, NULL, false, 0, CHAT_HOLD_ALLOWED, &res);
	int64_t expect = 1;
	size_t parts = 0;
	bool streams = true, bounded = true, in_order = true;
	for (;;) {
		parts++;
		streams = streams && res.kind == CHAT_STREAM;
		/* Events end with a blank line, and entries' JSON has no raw
		 * newline: each "\n\n" ends one. */
		size_t last_event = 0;
		for (const char *p = res.body, *end = res.body + res.body_len; p < end;) {
			const char *stop = strstr(p, "\n\n");
			if (!stop || stop >= end)
				break;
			if (strncmp(p, "id: ", 4) == 0) {
				in_order = in_order && strtoll(p + 4, NULL, 10) == expect;
				expect++;
				last_event = (size_t)(stop + 2 - p);
			}
			p = stop + 2;
		}
		/* Under the budget before its last entry, so it took no more. */
		if (res.body_len - last_event >= EVENTS_PART_MAX) {
			bounded = false;
			diag("a part of %zu bytes, its last entry %zu", res.body_len, last_event);
		}
		if (res.kind != CHAT_STREAM || res.hold.ms != 0 || parts > 100)
			break;
		int64_t next = res.stream_next;
		chat_response_free(&res);
		events(query, NULL, true, next, CHAT_HOLD_OVER, &res);
	}
	ok(streams, "%s: every part a CHAT_STREAM", name);
	ok(parts >= 4, "%s: read in %zu parts", name, parts);
	ok(bounded, "%s: each part within EVENTS_PART_MAX and one entry", name);
	ok(in_order && expect - 1 == entries, "%s: all %lld entries once, in order (%lld)", name,
	   (long long)entries, (long long)(expect - 1));
	is_int(res.hold.ms, EVENTS_HEARTBEAT_MS, "%s: the last part waits for more", name);
	is_int(res.stream_next, entries, "%s: ... after the last entry", name);
	chat_response_free(&res);
}

/* A room whose entries add up to several parts' budget: the stream sends
 * it in parts, with or without a cursor to start from. */
static void test_parts(void)
{
	enum { POSTS = 20 };
	size_t cap = 48 * 1024;
	char *body = malloc(cap);
	if (!body) {
		printf("Bail out! out of memory\n");
		exit(1);
	}
	for (int i = 0; i < POSTS; i++) {
		/* 20 to 47 kB of text, each post a little longer than the last. */
		size_t n = 20000 + (size_t)i * 1400;
		int head = snprintf(body, cap, "{\"room\":\"long\",\"message\":\"");
		if (head < 0 || (size_t)head + n + 3 > cap) {
			printf("Bail out! a post of %zu bytes\n", n);
			exit(1);
		}
		memset(body + head, 'a' + i, n);
		memcpy(body + head + n, "\"}", 3);
		struct chat_response res;
		post(body, NULL, &res);
		if (res.status != 200)
			diag("post %d: %d", i, res.status);
		chat_response_free(&res);
	}
	free(body);
	read_parts("room=long", 2 * POSTS, "no cursor");
	read_parts("room=long&after=0", 2 * POSTS, "after=0");

	/* GET /chat/messages pages by the same rule (ROOMS_PAGE_MAX): each
	 * page within it and one entry, and its "next" where the next starts. */
	struct chat_request req;
	struct chat_response res;
	char clen[32], query[64];
	int64_t after = 0;
	size_t entries = 0, pages = 0;
	bool bounded = true;
	for (int round = 0; round < 2 * POSTS && after < 2 * POSTS; round++) {
		snprintf(query, sizeof query, "room=long&after=%lld&limit=500", (long long)after);
		request(&req, "GET", "/chat/messages", query, NULL, clen);
		chat_respond(&req, &lim, &res);
		const char *next = res.body ? strstr(res.body, "\"next\":") : NULL;
		if (res.status != 200 || !next) {
			chat_response_free(&res);
			break;
		}
		bounded = bounded && res.body_len <= ROOMS_PAGE_MAX + 70 * 1024;
		entries += count(&res, "{\"seq\":");
		pages++;
		after = strtoll(next + 7, NULL, 10);
		chat_response_free(&res);
	}
	ok(entries == 2 * POSTS && pages > 1 && bounded,
	   "GET /chat/messages in pages of at most ROOMS_PAGE_MAX and an entry: %zu entries in %zu "
	   "pages",
	   entries, pages);
}

/* The deltas' texts, concatenated, and the done event's data. */
static void split_reply(const struct chat_response *res, char **text, char **done, size_t *pieces,
			size_t *longest)
{
	size_t cap = res->body_len + 1, tlen = 0;
	*text = calloc(1, cap);
	*done = NULL;
	*pieces = *longest = 0;
	const char *p = res->body, *end = res->body + res->body_len;
	while (p < end) {
		const char *ev_end = strstr(p, "\n\n");
		if (!ev_end)
			break;
		static const char delta[] = "event: delta\ndata: ";
		static const char fin[] = "event: done\ndata: ";
		if (strncmp(p, delta, sizeof delta - 1) == 0) {
			const char *data = p + sizeof delta - 1;
			json_object *j = parse_strict(data, (size_t)(ev_end - data));
			json_object *t;
			if (j && json_object_object_get_ex(j, "text", &t)) {
				size_t n = (size_t)json_object_get_string_len(t);
				memcpy(*text + tlen, json_object_get_string(t), n);
				tlen += n;
				(*pieces)++;
				if (n > *longest)
					*longest = n;
			}
			json_object_put(j);
		} else if (strncmp(p, fin, sizeof fin - 1) == 0) {
			free(*done);
			*done =
			    strndup(p + sizeof fin - 1, (size_t)(ev_end - p - (sizeof fin - 1)));
		}
		p = ev_end + 2;
	}
}

static void test_reply(void)
{
	static const char *bodies[] = {
	    "{\"message\":\"hello there world\"}",
	    "{\"message\":\"\"}",
	    "{\"message\":\"   spaces   only   \"}",
	    /* 60 two-byte and 30 four-byte characters, no space: cut by size. */
	    "{\"message\":\"éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé"
	    "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀\"}",
	    "{\"message\":\"line\\nbreak \\\"quoted\\\" \\u0001\"}",
	    "{\"message\":\"in a room\",\"room\":\"sr\",\"client_id\":\"c1\"}",
	};
	for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		struct chat_response plain, streamed;
		post(bodies[i], NULL, &plain);
		post(bodies[i], "text/event-stream", &streamed);
		is_int(streamed.status, 200, "streamed reply %zu: 200", i);
		is_str(streamed.content_type, EVENTS_CONTENT_TYPE, "... text/event-stream");
		ok(streamed.kind == CHAT_ANSWER, "... a whole stream, not held open");
		char *text, *done;
		size_t pieces, longest;
		split_reply(&streamed, &text, &done, &pieces, &longest);
		json_object *pj = parse_strict(plain.body, plain.body_len);
		json_object *m;
		const char *want = pj && json_object_object_get_ex(pj, "message", &m)
				       ? json_object_get_string(m)
				       : "";
		is_str(text, want, "... the deltas spell the reply");
		ok(longest <= EVENTS_DELTA_MAX, "... in %zu pieces of at most %u bytes", pieces,
		   EVENTS_DELTA_MAX);
		/* The room post is idempotent by client id: the second answer
		 * is the first one replayed, byte for byte. */
		ok(done && strlen(done) == plain.body_len &&
		       memcmp(done, plain.body, plain.body_len) == 0,
		   "... and done carries the JSON answer");
		json_object_put(pj);
		free(text);
		free(done);
		chat_response_free(&plain);
		chat_response_free(&streamed);
	}

	struct chat_response res;
	post("{\"message\":1}", "text/event-stream", &res);
	ok(res.status == 400 && res.content_type == NULL, "an error asked as a stream stays JSON");
	chat_response_free(&res);

	lim.stream_pace_ms = 40;
	post("{\"message\":\"paced\"}", "text/event-stream", &res);
	ok(res.kind == CHAT_PACED, "--stream-pace: a paced reply");
	is_int(res.pace_ms, 40, "... its pace the option's");
	chat_response_free(&res);
	post("{\"message\":\"paced\"}", NULL, &res);
	ok(res.kind == CHAT_ANSWER, "... of streamed replies only");
	chat_response_free(&res);
	lim.stream_pace_ms = 0;
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/events_test.XXXXXX", tmp && *tmp ? tmp : ".");
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
	test_accept();
	test_events();
	test_parts();
	test_reply();
	store_close(lim.store);

	if (!getenv("CHAT_KEEP")) {
		char cmd[4300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			diag("could not remove %s", dir);
	}
	return done_testing();
}
