/*
 * The whole request function, with the path, method, content type,
 * Content-Length, query string, the headers the CSRF check reads (Origin,
 * Sec-Fetch-Site, Host, scheme), the hold mode, the store and the body all
 * taken from the input. Whatever comes in, the answer is one of the statuses
 * the backend documents, with a strict-JSON UTF-8 body: a
 * {"message": "received ...", ...} on a 200 of POST /chat/, a room's
 * {"room": ..., "entries": [...], "next": N} on a 200 of
 * GET /chat/messages, an {"error": "..."} otherwise; a cross-site form post
 * never gets past the head; and chat_check_head judges the head as
 * chat_respond does.
 *
 * With STREAMS, the path /chat/messages becomes /chat/events, and the
 * Accept and Last-Event-ID headers and the state of an open stream come
 * from the input too: event streams are well-formed (retry, comments, and
 * events whose ids go up and whose data is an entry), and a streamed reply's
 * deltas spell the message its done event carries.
 *
 * Input: two flag bytes (enum flags, enum more_flags), then
 * "method\ncontent type\n", then one line each, in this order, for what the
 * flags say is there: content length, query string, Origin, Sec-Fetch-Site,
 * Host, scheme, and with STREAMS three: Accept, Last-Event-ID, and the
 * cursor of an open stream (empty: not open yet); then the body.
 */
#include "chat.h"
#include "events.h"
#include "fuzz.h"
#include "json_strict.h"
#include "media_type.h"
#include "origin.h"
#include "rooms.h"
#include "store.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

/* The first byte. */
enum flags {
	LENGTH_MASK = 3,     /* Content-Length: */
	LENGTH_ABSENT = 0,   /* none */
	LENGTH_EXACT = 1,    /* the body's length */
	LENGTH_PLUS_ONE = 2, /* one more than the body */
	LENGTH_FROM_INPUT = 3,
	PATH_NONE = 1 << 2,  /* no path at all */
	PATH_OTHER = 1 << 3, /* "/chat" instead of "/chat/" */
	SMALL_LIMIT = 1 << 4,
	NULL_BODY = 1 << 5,
	HOLD_SHIFT = 6, /* two bits: enum chat_hold_mode, modulo 3 */
};

/* The second byte. */
enum more_flags {
	PATH_ROOMS = 1 << 0, /* "/chat/messages" (PATH_NONE still wins) */
	WITH_STORE = 1 << 1, /* a SQLite store, as --store sqlite:PATH */
	HAS_QUERY = 1 << 2,  /* each HAS_ takes a line of the input */
	HAS_ORIGIN = 1 << 3,
	HAS_SEC_FETCH_SITE = 1 << 4,
	HAS_HOST = 1 << 5,
	HAS_SCHEME = 1 << 6,
	STREAMS = 1 << 7,
};

/* A store in a directory of its own under $TMPDIR (fuzz/run points it into
 * the run's work directory), for the whole run; a small history keeps the
 * file small however many posts come. */
static char *store_dir;
static struct store *store;

static char *path_in(const char *dir, const char *name)
{
	size_t len = strlen(dir) + 1 + strlen(name) + 1;
	char *path = fuzz_alloc(len);
	FUZZ_CHECK(snprintf(path, len, "%s/%s", dir, name) == (int)len - 1, "snprintf");
	return path;
}

static void remove_store(void)
{
	static const char *const files[] = {"chat.db", "chat.db-wal", "chat.db-shm"};
	store_close(store);
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *path = path_in(store_dir, files[i]);
		unlink(path);
		free(path);
	}
	rmdir(store_dir);
	free(store_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *tmp = getenv("TMPDIR");
	store_dir = path_in(tmp && *tmp ? tmp : ".", "chat-fuzz-XXXXXX");
	FUZZ_CHECK(mkdtemp(store_dir) != NULL, "mkdtemp %s", store_dir);
	char *path = path_in(store_dir, "chat.db"), err[256];
	struct store_options opt = {.history = 4};
	FUZZ_CHECK(store_open(&store, path, &opt, err, sizeof err) == 0, "store_open: %s", err);
	free(path);
	FUZZ_CHECK(atexit(remove_store) == 0, "atexit");
	return 0;
}

/* The next line of the input as a C string (a FastCGI parameter ends at its
 * first NUL like any C string); all the rest when there is no newline. */
static char *take_line(const uint8_t **p, size_t *n)
{
	const uint8_t *nl = memchr(*p, '\n', *n);
	size_t len = nl ? (size_t)(nl - *p) : *n;
	char *s = fuzz_alloc(len + 1);
	memcpy(s, *p, len);
	s[len] = '\0';
	*p += len + (nl != NULL);
	*n -= len + (nl != NULL);
	return s;
}

static bool documented_status(int status)
{
	static const int statuses[] = {200, 400, 403, 404, 405, 413, 415, 503};
	for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
		if (status == statuses[i])
			return true;
	return false;
}

/* The room a query names when it says so plainly, with no escape and no
 * '+': the value of its first "room" field; NULL when it does not. A
 * reference for the backend's parser on the inputs it can judge. */
static char *plain_room(const char *query)
{
	if (!query || strpbrk(query, "%+"))
		return NULL;
	for (const char *p = query; p;) {
		size_t field = strcspn(p, "&");
		if (field >= 5 && strncmp(p, "room=", 5) == 0) {
			char *room = fuzz_alloc(field - 4);
			memcpy(room, p + 5, field - 5);
			room[field - 5] = '\0';
			return room;
		}
		p = p[field] ? p + field + 1 : NULL;
	}
	return NULL;
}

static int64_t int_member(json_object *obj, const char *key, const char *body)
{
	json_object *member;
	FUZZ_CHECK(json_object_object_get_ex(obj, key, &member) &&
		       json_object_is_type(member, json_type_int),
		   "no whole number \"%s\": %s", key, body);
	return json_object_get_int64(member);
}

/* A 200 of GET /chat/messages: the room asked for, its entries in order,
 * at most a page of them, and where to go on from. */
static void check_room_entries(json_object *obj, const char *query, const char *body)
{
	json_object *room, *entries;
	FUZZ_CHECK(json_object_object_get_ex(obj, "room", &room) &&
		       json_object_is_type(room, json_type_string) &&
		       room_name_valid(json_object_get_string(room),
				       (size_t)json_object_get_string_len(room)),
		   "a 200 without a valid room: %s", body);
	char *asked = plain_room(query);
	FUZZ_CHECK(!asked || strcmp(asked, json_object_get_string(room)) == 0,
		   "asked for room '%s', got %s", asked, body);
	free(asked);
	FUZZ_CHECK(json_object_object_get_ex(obj, "entries", &entries) &&
		       json_object_is_type(entries, json_type_array) &&
		       json_object_array_length(entries) <= ROOMS_LIMIT_MAX,
		   "a 200 without a page of entries: %s", body);
	int64_t seq = 0;
	for (size_t i = 0; i < json_object_array_length(entries); i++) {
		int64_t next = int_member(json_object_array_get_idx(entries, i), "seq", body);
		FUZZ_CHECK(next > seq, "entries out of order: %s", body);
		seq = next;
	}
	int64_t next = int_member(obj, "next", body);
	FUZZ_CHECK(next >= 0 && (seq == 0 || next == seq), "next %lld after seq %lld: %s",
		   (long long)next, (long long)seq, body);
}

/* Where 200s differ: a post's reply, or a room's entries. */
enum answer { POST_REPLY, ROOM_ENTRIES };

/* The data line of the event at *p, which must start with prefix; moves
 * *p past the event. */
static char *event_data(const char **p, const char *end, const char *prefix, const char *body)
{
	size_t plen = strlen(prefix);
	FUZZ_CHECK((size_t)(end - *p) > plen && memcmp(*p, prefix, plen) == 0,
		   "an event without '%s': %s", prefix, body);
	const char *data = *p + plen;
	const char *stop = strstr(data, "\n\n");
	FUZZ_CHECK(stop && stop < end && !memchr(data, '\n', (size_t)(stop - data)) &&
		       !memchr(data, '\r', (size_t)(stop - data)),
		   "an event's data is not one line: %s", body);
	*p = stop + 2;
	size_t len = (size_t)(stop - data);
	const char *why = NULL;
	FUZZ_CHECK(json_strict_check(data, len, 3, &why), "data not JSON (%s): %s", why, body);
	char *copy = fuzz_alloc(len + 1);
	memcpy(copy, data, len);
	copy[len] = '\0';
	return copy;
}

/* A text/event-stream body: a streamed reply (deltas, then done with the
 * answer), or a part of GET /chat/events (retry:, keep-alive, entries). */
static void check_stream(const struct chat_response *res, bool reply)
{
	FUZZ_CHECK(res->status == 200, "a stream with status %d", res->status);
	FUZZ_CHECK(!res->body_len || (res->body && strlen(res->body) == res->body_len),
		   "a stream's length is wrong");
	const char *body = res->body_len ? res->body : "";
	FUZZ_CHECK(utf8_valid(body, res->body_len), "a stream not UTF-8");
	const char *p = body, *end = body + res->body_len;
	if (reply) {
		FUZZ_CHECK(res->kind == CHAT_ANSWER, "a streamed reply of kind %d", res->kind);
		size_t cap = res->body_len + 1, spelled = 0;
		char *text = fuzz_alloc(cap);
		while (p < end && strncmp(p, "event: delta\n", 13) == 0) {
			char *d = event_data(&p, end, "event: delta\ndata: ", body);
			json_object *o = json_tokener_parse(d), *t;
			FUZZ_CHECK(o && json_object_object_get_ex(o, "text", &t), "a delta: %s", d);
			size_t n = (size_t)json_object_get_string_len(t);
			FUZZ_CHECK(n > 0 && n <= EVENTS_DELTA_MAX && spelled + n < cap,
				   "a delta of %zu bytes", n);
			memcpy(text + spelled, json_object_get_string(t), n);
			spelled += n;
			json_object_put(o);
			free(d);
		}
		char *done = event_data(&p, end, "event: done\ndata: ", body);
		FUZZ_CHECK(p == end, "bytes after done: %s", body);
		json_object *o = json_tokener_parse(done), *m;
		FUZZ_CHECK(o && json_object_object_get_ex(o, "message", &m) &&
			       (size_t)json_object_get_string_len(m) == spelled &&
			       memcmp(json_object_get_string(m), text, spelled) == 0,
			   "the deltas do not spell done's message: %s", body);
		json_object_put(o);
		free(done);
		free(text);
		return;
	}
	if (p < end && strncmp(p, "retry: ", 7) == 0) {
		FUZZ_CHECK(strncmp(p, "retry: 2000\n\n", 13) == 0, "a bad retry: %s", body);
		p += 13;
	}
	int64_t last = -1;
	while (p < end) {
		if (strncmp(p, ": keep-alive\n\n", 14) == 0) {
			p += 14;
			continue;
		}
		FUZZ_CHECK(strncmp(p, "id: ", 4) == 0, "not an event: %s", p);
		char *idend;
		long long id = strtoll(p + 4, &idend, 10);
		FUZZ_CHECK(id > last && strncmp(idend, "\nevent: message\ndata: ", 22) == 0,
			   "a bad event head: %s", body);
		last = id;
		p = idend + 1;
		char *d = event_data(&p, end, "event: message\ndata: ", body);
		json_object *o = json_tokener_parse(d);
		FUZZ_CHECK(o && int_member(o, "seq", d) == id, "an event's id is not its seq: %s",
			   d);
		json_object_put(o);
		free(d);
	}
	if (res->kind == CHAT_STREAM)
		FUZZ_CHECK(res->hold.ms == 0 || res->hold.ms == EVENTS_HEARTBEAT_MS,
			   "a stream held %u ms", res->hold.ms);
}

static void check_body(const struct chat_response *res, enum answer kind, const char *query)
{
	if (res->content_type && strcmp(res->content_type, EVENTS_CONTENT_TYPE) == 0) {
		check_stream(res, kind == POST_REPLY);
		return;
	}
	FUZZ_CHECK(res->body != NULL && res->body_len > 0, "status %d without a body", res->status);
	FUZZ_CHECK(strlen(res->body) == res->body_len, "body length %zu is wrong", res->body_len);
	FUZZ_CHECK(utf8_valid(res->body, res->body_len), "body not UTF-8: %s", res->body);
	const char *why = NULL;
	/* Errors are flat; entries are objects in an array in the answer. */
	int depth = res->status == 200 ? 3 : 1;
	FUZZ_CHECK(json_strict_check(res->body, res->body_len, depth, &why),
		   "body not JSON (%s): %s", why, res->body);

	json_object *obj = json_tokener_parse(res->body);
	FUZZ_CHECK(obj != NULL && json_object_is_type(obj, json_type_object), "not an object: %s",
		   res->body);
	json_object *member;
	if (res->status == 200 && kind == POST_REPLY) {
		FUZZ_CHECK(json_object_object_get_ex(obj, "message", &member) &&
			       json_object_is_type(member, json_type_string) &&
			       strncmp(json_object_get_string(member), "received ", 9) == 0,
			   "200 without a received message: %s", res->body);
		FUZZ_CHECK(res->reason == NULL, "200 with a failure reason");
	} else if (res->status == 200) {
		check_room_entries(obj, query, res->body);
		FUZZ_CHECK(res->reason == NULL, "200 with a failure reason");
	} else {
		FUZZ_CHECK(json_object_object_get_ex(obj, "error", &member) &&
			       json_object_is_type(member, json_type_string) &&
			       json_object_get_string_len(member) > 0,
			   "%d without an error sentence: %s", res->status, res->body);
		FUZZ_CHECK(res->reason != NULL && res->reason[0] != '\0', "%d without a reason",
			   res->status);
	}
	json_object_put(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned flags = data[0], more = data[1];
	const uint8_t *p = data + 2;
	size_t n = size - 2;
	char *method = take_line(&p, &n);
	char *content_type = take_line(&p, &n);
	char *length_line = (flags & LENGTH_MASK) == LENGTH_FROM_INPUT ? take_line(&p, &n) : NULL;
	char *query = more & HAS_QUERY ? take_line(&p, &n) : NULL;
	char *origin = more & HAS_ORIGIN ? take_line(&p, &n) : NULL;
	char *sec_fetch_site = more & HAS_SEC_FETCH_SITE ? take_line(&p, &n) : NULL;
	char *host = more & HAS_HOST ? take_line(&p, &n) : NULL;
	char *scheme = more & HAS_SCHEME ? take_line(&p, &n) : NULL;
	char *accept = more & STREAMS ? take_line(&p, &n) : NULL;
	char *last_event_id = more & STREAMS ? take_line(&p, &n) : NULL;
	char *cursor = more & STREAMS ? take_line(&p, &n) : NULL;

	/* The body in a buffer of its own exact size, so ASan sees any read
	 * past its end. */
	char *body = fuzz_alloc(n);
	memcpy(body, p, n);
	char length[32];
	int written = 0;
	if ((flags & LENGTH_MASK) == LENGTH_EXACT)
		written = snprintf(length, sizeof length, "%zu", n);
	else if ((flags & LENGTH_MASK) == LENGTH_PLUS_ONE)
		written = snprintf(length, sizeof length, "%zu", n + 1);
	FUZZ_CHECK(written >= 0 && (size_t)written < sizeof length, "snprintf");

	struct chat_request req = {
	    .method = method,
	    .path = flags & PATH_NONE    ? NULL
		    : more & PATH_ROOMS  ? (more & STREAMS ? "/chat/events" : "/chat/messages")
		    : flags & PATH_OTHER ? "/chat"
					 : "/chat/",
	    .query = query,
	    .content_type = content_type,
	    .content_length = (flags & LENGTH_MASK) == LENGTH_ABSENT ? NULL
			      : length_line                          ? length_line
								     : length,
	    .origin = origin,
	    .sec_fetch_site = sec_fetch_site,
	    .host = host,
	    .scheme = scheme,
	    .body = n == 0 && (flags & NULL_BODY) ? NULL : body,
	    .body_len = n,
	    .hold_mode = (enum chat_hold_mode)((flags >> HOLD_SHIFT) % 3),
	    .accept = accept,
	    .last_event_id = last_event_id,
	    .stream_open = cursor && *cursor,
	    .stream_after = cursor && *cursor ? strtoll(cursor, NULL, 10) : 0,
	};
	struct chat_limits lim = {
	    .max_body = flags & SMALL_LIMIT ? 64 : CHAT_MAX_BODY_DEFAULT,
	    .store = more & WITH_STORE ? store : NULL,
	};
	bool rooms = req.path && (strcmp(req.path, "/chat/messages") == 0 ||
				  strcmp(req.path, "/chat/events") == 0);
	bool chat = req.path && strcmp(req.path, "/chat/") == 0;

	struct chat_response head, res;
	size_t announced = 0;
	enum chat_head verdict = chat_check_head(&req, &lim, &head, &announced);
	chat_respond(&req, &lim, &res);

	/* Neither deferred posts nor a pace are asked for. */
	FUZZ_CHECK(res.kind == CHAT_ANSWER || res.kind == CHAT_HOLD || res.kind == CHAT_STREAM,
		   "a response of kind %d", res.kind);
	FUZZ_CHECK(res.retry_after == (res.status == 503 ? CHAT_RETRY_AFTER_S : 0),
		   "a %d with Retry-After %u", res.status, res.retry_after);
	if (res.kind == CHAT_STREAM)
		FUZZ_CHECK(req.path && strcmp(req.path, "/chat/events") == 0 &&
			       strcmp(method, "GET") == 0 && res.status == 200,
			   "a stream part of %s %s, status %d", method, req.path, res.status);
	if (res.kind == CHAT_HOLD) {
		/* A held request answers later, and only when it may be held:
		 * a GET of a room's messages with a wait of 1 to 30 s. */
		FUZZ_CHECK(res.status == 0 && res.hold.ms > 0 && req.hold_mode == CHAT_HOLD_ALLOWED,
			   "a hold with status %d, %u ms, mode %d", res.status, res.hold.ms,
			   req.hold_mode);
		FUZZ_CHECK(rooms && strcmp(method, "GET") == 0 && lim.store,
			   "a hold of %s on a path other than the room's messages", method);
		FUZZ_CHECK(res.hold.ms % 1000 == 0 && res.hold.ms <= ROOMS_WAIT_MAX * 1000u,
			   "a hold of %u ms", res.hold.ms);
		FUZZ_CHECK(room_name_valid(res.hold.room, strlen(res.hold.room)),
			   "a hold on the room '%s'", res.hold.room);
	} else {
		FUZZ_CHECK(documented_status(res.status), "undocumented status %d", res.status);
		check_body(&res, rooms ? ROOM_ENTRIES : POST_REPLY, query);
	}
	const char *allow = rooms ? "GET, HEAD" : "POST";
	FUZZ_CHECK((res.status == 405) == (res.allow != NULL && strcmp(res.allow, allow) == 0),
		   "Allow header on %d", res.status);
	if (verdict == CHAT_HEAD_REJECTED) {
		FUZZ_CHECK(head.status == res.status && head.kind == CHAT_ANSWER,
			   "head said %d, the request %d", head.status, res.status);
		check_body(&head, rooms ? ROOM_ENTRIES : POST_REPLY, query);
	} else {
		FUZZ_CHECK(announced <= lim.max_body, "announced %zu over the limit", announced);
		/* The one 404 after the head: a post with a room to a server
		 * without a store. */
		bool history_off = !lim.store && res.status == 404 &&
				   res.body_len == strlen(ROOMS_OFF_BODY) &&
				   memcmp(res.body, ROOMS_OFF_BODY, res.body_len) == 0;
		FUZZ_CHECK((res.status != 404 || history_off) && res.status != 405 &&
			       res.status != 415 && res.status != 403,
			   "head passed, the request got %d", res.status);
		/* The CSRF check: a form post from another site never gets as far
		 * as its body. */
		FUZZ_CHECK(!(chat &&
			     media_type_match(content_type, "application/x-www-form-urlencoded") ==
				 MEDIA_MATCH &&
			     origin_judge(sec_fetch_site, origin, scheme, host) == ORIGIN_FOREIGN),
			   "a cross-site form post passed the head (Sec-Fetch-Site %s, Origin %s, "
			   "Host %s, scheme %s)",
			   sec_fetch_site ? sec_fetch_site : "(none)", origin ? origin : "(none)",
			   host ? host : "(none)", scheme ? scheme : "(none)");
	}
	/* Every 403 is that check's: a form post that the check calls foreign. */
	FUZZ_CHECK(res.status != 403 ||
		       (chat &&
			media_type_match(content_type, "application/x-www-form-urlencoded") ==
			    MEDIA_MATCH &&
			origin_judge(sec_fetch_site, origin, scheme, host) == ORIGIN_FOREIGN),
		   "403 to a request the CSRF check passes");

	chat_response_free(&head);
	chat_response_free(&res);
	free(body);
	free(cursor);
	free(last_event_id);
	free(accept);
	free(scheme);
	free(host);
	free(sec_fetch_site);
	free(origin);
	free(query);
	free(length_line);
	free(content_type);
	free(method);
	return 0;
}
