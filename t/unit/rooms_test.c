/* The room API through chat_respond, on a real store in a temp dir: POST
 * with a room, GET /chat/messages, its parameters, held waits, --store none,
 * and a store that fails. */
#include "chat.h"
#include "json_parse.h"
#include "rooms.h"
#include "store.h"
#include "tap.h"

#include <errno.h>
#include <json-c/json.h>
#include <regex.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[4096];
static struct chat_limits lim = {.max_body = CHAT_MAX_BODY_DEFAULT};
static const struct chat_limits lim_off = {.max_body = CHAT_MAX_BODY_DEFAULT};

static void respond(const char *method, const char *path, const char *query, const char *ctype,
		    const char *body, enum chat_hold_mode mode, const struct chat_limits *l,
		    struct chat_response *res)
{
	char clen[32];
	size_t len = body ? strlen(body) : 0;
	snprintf(clen, sizeof clen, "%zu", len);
	struct chat_request req = {
	    .method = method,
	    .path = path,
	    .query = query,
	    .content_type = ctype,
	    .content_length = body ? clen : "",
	    .body = body,
	    .body_len = len,
	    .hold_mode = mode,
	};
	memset(res, 0x5A, sizeof *res);
	chat_respond(&req, l, res);
}

static void post_json(const char *body, struct chat_response *res)
{
	respond("POST", "/chat/", NULL, "application/json", body, CHAT_HOLD_ALLOWED, &lim, res);
}

static void get(const char *query, enum chat_hold_mode mode, struct chat_response *res)
{
	respond("GET", "/chat/messages", query, NULL, NULL, mode, &lim, res);
}

/* The body as JSON, or NULL (with a diagnostic). */
static json_object *body_json(const struct chat_response *res)
{
	return res->body ? parse_strict(res->body, res->body_len) : NULL;
}

/* The exact body. */
#define is_body(res, want, ...)                                                                    \
	is_mem((res)->body, (res)->body_len, (want), strlen(want), __VA_ARGS__)

static const char *str_of(json_object *o, const char *key)
{
	json_object *v;
	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		   ? json_object_get_string(v)
		   : NULL;
}

static long long int_of(json_object *o, const char *key)
{
	json_object *v;
	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int)
		   ? (long long)json_object_get_int64(v)
		   : -1;
}

static json_object *entries_of(json_object *o)
{
	json_object *v;
	return json_object_object_get_ex(o, "entries", &v) &&
		       json_object_is_type(v, json_type_array)
		   ? v
		   : NULL;
}

/* A 400 with {"error": "<sentence>"}. */
static void is_bad(const struct chat_response *res, int status, const char *name)
{
	json_object *j = body_json(res);
	const char *e = j ? str_of(j, "error") : NULL;
	ok(res->status == status && e && *e, "%s: %d with a JSON error", name, status);
	if (res->status != status || !e)
		diag("got %d: %.*s", res->status, (int)(res->body ? res->body_len : 0),
		     res->body ? res->body : "");
	json_object_put(j);
}

static bool time_ok(const char *t)
{
	regex_t re;
	if (regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
		    REG_EXTENDED | REG_NOSUB) != 0)
		return false;
	bool m = t && regexec(&re, t, 0, NULL, 0) == 0;
	regfree(&re);
	return m;
}

static void test_post(void)
{
	struct chat_response res;
	post_json("{\"message\":\"hi\",\"room\":\"lobby\",\"client_id\":\"c-1\"}", &res);
	is_int(res.status, 200, "POST with a room: 200");
	json_object *j = body_json(&res);
	json_object *es = j ? entries_of(j) : NULL;
	is_str(j ? str_of(j, "message") : NULL, "received hi", "\"message\" is still the reply");
	is_str(j ? str_of(j, "room") : NULL, "lobby", "\"room\" names the room");
	is_int(j ? int_of(j, "next") : -1, 2, "\"next\" is the bot entry's seq");
	ok(es && json_object_array_length(es) == 2, "two entries come back");
	if (es && json_object_array_length(es) == 2) {
		json_object *u = json_object_array_get_idx(es, 0),
			    *b = json_object_array_get_idx(es, 1);
		ok(int_of(u, "seq") == 1 && !strcmp(str_of(u, "role"), "user") &&
		       !strcmp(str_of(u, "text"), "hi") && !strcmp(str_of(u, "client_id"), "c-1"),
		   "the first is the user's: seq 1, role user, text, client id");
		ok(int_of(b, "seq") == 2 && !strcmp(str_of(b, "role"), "bot") &&
		       !strcmp(str_of(b, "text"), "received hi"),
		   "the second is the bot's: seq 2, the reply");
		ok(time_ok(str_of(u, "time")), "time is RFC 3339 UTC with milliseconds: %s",
		   str_of(u, "time"));
		ok(json_object_object_length(u) == 5,
		   "an entry has exactly seq, role, text, time, client_id");
	}
	is_str(res.changed_room, "lobby", "the room is reported changed, to wake its waiters");
	ok(res.kind == CHAT_ANSWER, "a post never holds");
	char *first = strndup(res.body, res.body_len);
	json_object_put(j);
	chat_response_free(&res);

	post_json("{\"message\":\"other text\",\"room\":\"lobby\",\"client_id\":\"c-1\"}", &res);
	ok(res.status == 200 && first && res.body_len == strlen(first) &&
	       memcmp(res.body, first, res.body_len) == 0,
	   "a retry with the same client id gets the first answer byte for byte");
	is_str(res.changed_room, "", "... and changes nothing, so wakes nobody");
	chat_response_free(&res);
	free(first);

	post_json("{\"message\":\"no id\",\"room\":\"lobby\"}", &res);
	j = body_json(&res);
	es = j ? entries_of(j) : NULL;
	json_object *cid = NULL;
	ok(es && json_object_object_get_ex(json_object_array_get_idx(es, 0), "client_id", &cid) &&
	       cid == NULL,
	   "without client_id the entries say \"client_id\":null");
	is_int(j ? int_of(j, "next") : -1, 4, "... and continue the sequence (next 4)");
	json_object_put(j);
	chat_response_free(&res);

	respond("POST", "/chat/", NULL, "application/x-www-form-urlencoded",
		"message=caf%C3%A9&room=lobby&client_id=%E2%9C%93-1", CHAT_HOLD_ALLOWED, &lim,
		&res);
	j = body_json(&res);
	es = j ? entries_of(j) : NULL;
	ok(res.status == 200 && es &&
	       !strcmp(str_of(json_object_array_get_idx(es, 0), "client_id"), "\xe2\x9c\x93-1"),
	   "a form post with room and client_id works the same");
	json_object_put(j);
	chat_response_free(&res);

	/* Without a room: exactly the stateless answer, nothing stored. */
	post_json("{\"message\":\"django\",\"client_id\":5}", &res);
	is_body(&res, "{\"message\":\"received django\"}",
		"without a room the answer is the stateless one, client_id ignored");
	is_str(res.changed_room, "", "... and nothing changed");
	chat_response_free(&res);

	/* A room with NUL bytes and quotes in the text. */
	post_json("{\"message\":\"a\\u0000\\\"b\",\"room\":\"bytes\"}", &res);
	ok(res.status == 200 && strstr(res.body, "\"text\":\"a\\u0000\\\"b\""),
	   "text is escaped in entries as in the reply");
	chat_response_free(&res);
}

static void test_post_errors(void)
{
	static const struct {
		const char *body, *name;
	} bad[] = {
	    {"{\"message\":\"x\",\"room\":\"\"}", "an empty room"},
	    {"{\"message\":\"x\",\"room\":\"a b\"}", "a room with a space"},
	    {"{\"message\":\"x\",\"room\":\"caf\\u00e9\"}", "a room with a non-ASCII letter"},
	    {"{\"message\":\"x\",\"room\":\"a\\u0000\"}", "a room with NUL"},
	    {"{\"message\":\"x\",\"room\":"
	     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
	     "a room of 65 characters"},
	    {"{\"message\":\"x\",\"room\":5}", "a number as room"},
	    {"{\"message\":\"x\",\"room\":null}", "null as room"},
	    {"{\"message\":\"x\",\"room\":[\"a\"]}", "an array as room"},
	    {"{\"message\":\"x\",\"room\":\"r\",\"client_id\":\"\"}", "an empty client_id"},
	    {"{\"message\":\"x\",\"room\":\"r\",\"client_id\":7}", "a number as client_id"},
	    {"{\"message\":\"x\",\"room\":\"r\",\"client_id\":\"a\\nb\"}",
	     "a client_id with a newline"},
	    {"{\"message\":\"x\",\"room\":\"r\",\"client_id\":\"a\\u0085\"}",
	     "a client_id with a C1 control"},
	    {"{\"message\":\"x\",\"room\":\"r\",\"client_id\":"
	     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
	     "a client_id of 65 characters"},
	};
	struct chat_response res;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		post_json(bad[i].body, &res);
		is_bad(&res, 400, bad[i].name);
		chat_response_free(&res);
	}
	respond("POST", "/chat/", NULL, "application/x-www-form-urlencoded",
		"message=x&room=", CHAT_HOLD_ALLOWED, &lim, &res);
	is_bad(&res, 400, "a form with an empty room");
	chat_response_free(&res);
	respond("POST", "/chat/", NULL, "application/x-www-form-urlencoded",
		"message=x&room=r&client_id=%FF", CHAT_HOLD_ALLOWED, &lim, &res);
	is_bad(&res, 400, "a form with a client_id that is not UTF-8");
	chat_response_free(&res);

	/* 64 characters of two bytes each: the limit counts characters. */
	char body[512] = "{\"message\":\"x\",\"room\":\"r\",\"client_id\":\"";
	for (int i = 0; i < 64; i++)
		strcat(body, "\xc3\xa9");
	strcat(body, "\"}");
	post_json(body, &res);
	is_int(res.status, 200, "a client_id of 64 two-byte characters is fine");
	chat_response_free(&res);
	char room[80] = "{\"room\":\"";
	for (int i = 0; i < 64; i++)
		strcat(room, "Z");
	strcat(room, "\"}");
	post_json(room, &res);
	is_int(res.status, 200, "a room of 64 characters, and no message, is fine");
	chat_response_free(&res);
}

static void test_get(void)
{
	struct chat_response res;
	/* lobby holds seq 1..6 from test_post. */
	get("room=lobby", CHAT_HOLD_ALLOWED, &res);
	json_object *j = body_json(&res);
	json_object *es = j ? entries_of(j) : NULL;
	ok(res.status == 200 && es && json_object_array_length(es) == 6,
	   "GET without after: the room's entries");
	is_str(j ? str_of(j, "room") : NULL, "lobby", "\"room\" names it");
	is_int(j ? int_of(j, "next") : -1, 6, "\"next\" is the last seq");
	ok(j && json_object_object_length(j) == 3, "the answer has exactly room, entries, next");
	json_object_put(j);
	chat_response_free(&res);

	get("room=lobby&after=2&limit=3", CHAT_HOLD_ALLOWED, &res);
	j = body_json(&res);
	es = j ? entries_of(j) : NULL;
	ok(es && json_object_array_length(es) == 3 &&
	       int_of(json_object_array_get_idx(es, 0), "seq") == 3,
	   "after=2&limit=3: seq 3, 4, 5");
	is_int(j ? int_of(j, "next") : -1, 5, "next is the last entry returned");
	json_object_put(j);
	chat_response_free(&res);

	get("room=lobby&limit=2", CHAT_HOLD_ALLOWED, &res);
	j = body_json(&res);
	es = j ? entries_of(j) : NULL;
	ok(es && json_object_array_length(es) == 2 &&
	       int_of(json_object_array_get_idx(es, 0), "seq") == 5,
	   "limit=2 without after: the newest two, oldest first");
	json_object_put(j);
	chat_response_free(&res);

	get("room=lobby&after=6", CHAT_HOLD_ALLOWED, &res);
	is_body(&res, "{\"room\":\"lobby\",\"entries\":[],\"next\":6}",
		"nothing newer and no wait: an empty list at once, next = after");
	chat_response_free(&res);

	get("room=nobody", CHAT_HOLD_ALLOWED, &res);
	is_body(&res, "{\"room\":\"nobody\",\"entries\":[],\"next\":0}",
		"an unknown room: an empty list, next 0, not an error");
	chat_response_free(&res);

	get("room=nobody&after=70", CHAT_HOLD_ALLOWED, &res);
	is_int(res.status, 200, "an unknown room with after: 200 too");
	chat_response_free(&res);

	get("room=lob%62y&after=5&x=1&zzz", CHAT_HOLD_ALLOWED, &res);
	j = body_json(&res);
	ok(res.status == 200 && j && int_of(j, "next") == 6,
	   "percent-encoded values are decoded; unknown parameters are ignored");
	json_object_put(j);
	chat_response_free(&res);

	/* limit defaults to 100. */
	for (int i = 0; i < 60; i++) {
		post_json("{\"message\":\"m\",\"room\":\"big\"}", &res);
		chat_response_free(&res);
	}
	get("room=big", CHAT_HOLD_ALLOWED, &res);
	j = body_json(&res);
	es = j ? entries_of(j) : NULL;
	ok(es && json_object_array_length(es) == 100 &&
	       int_of(json_object_array_get_idx(es, 0), "seq") == 21 && int_of(j, "next") == 120,
	   "without limit: the newest 100 (21..120)");
	json_object_put(j);
	chat_response_free(&res);
	get("room=big&after=0&limit=500", CHAT_HOLD_ALLOWED, &res);
	j = body_json(&res);
	es = j ? entries_of(j) : NULL;
	ok(es && json_object_array_length(es) == 120, "limit=500 is allowed");
	json_object_put(j);
	chat_response_free(&res);

	static const struct {
		const char *query, *name;
	} bad[] = {
	    {NULL, "no query string"},
	    {"", "an empty query string"},
	    {"after=1", "no room"},
	    {"room=", "an empty room"},
	    {"room=a%20b", "a room with a space"},
	    {"room=a&room=a", "room twice"},
	    {"room=a&after=1&after=1", "after twice"},
	    {"room=a&limit=5&limit=6", "limit twice"},
	    {"room=a&wait=1&wait=1", "wait twice"},
	    {"room=a&after=", "an empty after"},
	    {"room=a&after=-1", "a negative after"},
	    {"room=a&after=1.5", "a fractional after"},
	    {"room=a&after=+1", "after with a sign"},
	    {"room=a&after=x", "a word as after"},
	    {"room=a&after=99999999999999999999", "an after past 2^63"},
	    {"room=a&limit=0", "limit 0"},
	    {"room=a&limit=501", "limit over 500"},
	    {"room=a&limit=", "an empty limit"},
	    {"room=a&wait=31", "wait over 30"},
	    {"room=a&wait=-1", "a negative wait"},
	    {"room=a&wait=1s", "wait with a unit"},
	    {"room=a&after=%zz", "a bad percent-escape"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		get(bad[i].query, CHAT_HOLD_ALLOWED, &res);
		is_bad(&res, 400, bad[i].name);
		chat_response_free(&res);
	}

	respond("POST", "/chat/messages", "room=a", "application/json", "{}", CHAT_HOLD_ALLOWED,
		&lim, &res);
	is_bad(&res, 405, "POST /chat/messages");
	is_str(res.allow, "GET, HEAD", "... with Allow: GET, HEAD");
	chat_response_free(&res);
	respond("HEAD", "/chat/messages", "room=lobby", NULL, NULL, CHAT_HOLD_ALLOWED, &lim, &res);
	is_int(res.status, 200, "HEAD is answered like GET");
	chat_response_free(&res);
}

static void test_hold(void)
{
	struct chat_response res;
	get("room=lobby&after=6&wait=5", CHAT_HOLD_ALLOWED, &res);
	ok(res.kind == CHAT_HOLD, "nothing newer with wait=5: a hold");
	is_int(res.hold.ms, 5000, "... of 5000 ms");
	is_str(res.hold.room, "lobby", "... on the room");
	chat_response_free(&res);

	get("room=lobby&after=6&wait=5", CHAT_HOLD_OVER, &res);
	is_body(&res, "{\"room\":\"lobby\",\"entries\":[],\"next\":6}",
		"the wait over: an empty list, next = after");
	chat_response_free(&res);

	get("room=lobby&after=6&wait=5", CHAT_HOLD_FULL, &res);
	is_body(&res,
		"{\"room\":\"lobby\",\"entries\":[],\"next\":6,\"busy\":true,\"retry_after\":1}",
		"no capacity to hold: at once, empty, busy, retry_after 1");
	is_int(res.status, 200, "... with 200");
	chat_response_free(&res);

	get("room=lobby&after=5&wait=5", CHAT_HOLD_ALLOWED, &res);
	ok(res.kind == CHAT_ANSWER && res.status == 200,
	   "something newer: answered at once, no hold");
	chat_response_free(&res);

	get("room=lobby&after=5&wait=5", CHAT_HOLD_FULL, &res);
	ok(res.status == 200 && !strstr(res.body, "busy"), "with entries, no busy even when full");
	chat_response_free(&res);

	get("room=empty-room&wait=3", CHAT_HOLD_ALLOWED, &res);
	ok(res.kind == CHAT_HOLD && res.hold.ms == 3000, "an empty room without after also waits");
	chat_response_free(&res);

	respond("HEAD", "/chat/messages", "room=lobby&after=6&wait=5", NULL, NULL,
		CHAT_HOLD_ALLOWED, &lim, &res);
	ok(res.kind == CHAT_ANSWER && res.status == 200, "HEAD is never held");
	chat_response_free(&res);

	/* A wake-up: a post lands, the held request is asked again. */
	post_json("{\"message\":\"wake\",\"room\":\"lobby\"}", &res);
	chat_response_free(&res);
	get("room=lobby&after=6&wait=5", CHAT_HOLD_ALLOWED, &res);
	json_object *j = body_json(&res);
	json_object *es = j ? entries_of(j) : NULL;
	ok(res.status == 200 && es && json_object_array_length(es) == 2 && int_of(j, "next") == 8,
	   "asked again after a post: the new entries");
	json_object_put(j);
	chat_response_free(&res);
}

static void test_store_off(void)
{
	struct chat_response res;
	respond("POST", "/chat/", NULL, "application/json", "{\"message\":\"x\",\"room\":\"a\"}",
		CHAT_HOLD_ALLOWED, &lim_off, &res);
	is_body(&res, ROOMS_OFF_BODY,
		"--store none: a post with a room gets the history-off error");
	is_int(res.status, 404, "... with 404");
	chat_response_free(&res);
	respond("GET", "/chat/messages", "room=a", NULL, NULL, CHAT_HOLD_ALLOWED, &lim_off, &res);
	ok(res.status == 404 && res.body_len == strlen(ROOMS_OFF_BODY),
	   "--store none: GET /chat/messages is 404 too");
	chat_response_free(&res);
	respond("POST", "/chat/", NULL, "application/json", "{\"message\":\"x\"}",
		CHAT_HOLD_ALLOWED, &lim_off, &res);
	is_body(&res, "{\"message\":\"received x\"}", "--store none: the stateless post works");
	chat_response_free(&res);
}

/* With defer_posts, a post comes back to be stored by the server's
 * choice of thread, then answered as it would have been at once. */
static void test_deferred(void)
{
	struct chat_limits deferring = lim;
	deferring.defer_posts = true;
	struct chat_response res;
	respond("POST", "/chat/", NULL, "application/json",
		"{\"message\":\"later\",\"room\":\"deferred\"}", CHAT_HOLD_ALLOWED, &deferring,
		&res);
	ok(res.kind == CHAT_POST && res.post, "defer_posts: the post comes back as CHAT_POST");
	struct chat_post *p = res.post;
	res.post = NULL;
	chat_response_free(&res);
	chat_post_store(&deferring, p);
	struct chat_request req = {.method = "POST", .path = "/chat/"};
	chat_post_finish(&req, &deferring, p, &res);
	json_object *j = body_json(&res);
	json_object *es = j ? entries_of(j) : NULL;
	ok(res.kind == CHAT_ANSWER && res.status == 200 && es && json_object_array_length(es) == 2,
	   "... stored, it is answered with its two entries");
	is_str(res.changed_room, "deferred", "... and its room wakes");
	json_object_put(j);
	chat_response_free(&res);

	respond("POST", "/chat/", NULL, "application/json",
		"{\"message\":\"never\",\"room\":\"deferred\"}", CHAT_HOLD_ALLOWED, &deferring,
		&res);
	ok(res.kind == CHAT_POST, "a post never stored ...");
	chat_response_free(&res);
	ok(res.kind == CHAT_ANSWER && !res.post, "... is freed with its response");
}

/* Another connection holds the write lock: a post gets 503 and a reason
 * for the log; reads still work; then posts work again. */
static void test_store_failure(const char *path)
{
	sqlite3 *holder;
	sqlite3_open(path, &holder);
	sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	struct chat_response res;
	post_json("{\"message\":\"x\",\"room\":\"lobby\"}", &res);
	is_bad(&res, 503, "a post while the database stays locked");
	ok(res.reason && strstr(res.reason, "locked"), "... the log says why: %s",
	   res.reason ? res.reason : "");
	ok(res.store_error, "... and it counts as a store error in the metrics");
	is_int(res.retry_after, CHAT_RETRY_AFTER_S, "... and asks to come back in 1 s");
	chat_response_free(&res);
	sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(holder);
	post_json("{\"message\":\"x\",\"room\":\"lobby\"}", &res);
	is_int(res.status, 200, "once the lock is released, posts work again");
	chat_response_free(&res);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/rooms_test.XXXXXX", tmp && *tmp ? tmp : ".");
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
	test_post();
	test_post_errors();
	test_get();
	test_hold();
	test_store_off();
	test_deferred();
	test_store_failure(path);
	store_close(lim.store);

	if (!getenv("CHAT_KEEP")) {
		char cmd[4300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			diag("could not remove %s", dir);
	}
	return done_testing();
}
