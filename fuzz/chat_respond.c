/*
 * The whole request function, with method, content type, Content-Length and
 * body all taken from the input. Whatever comes in, the answer is one of the
 * statuses the backend documents, with a strict-JSON UTF-8 body: a
 * {"message": "received ..."} on 200, an {"error": "..."} otherwise; and
 * chat_check_head judges the head as chat_respond does.
 *
 * Input: one flag byte, then "method\ncontent type\n", then (when the flags
 * say so) "content length\n", then the body.
 */
#include "chat.h"
#include "rooms.h"
#include "fuzz.h"
#include "json_strict.h"
#include "utf8.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <string.h>

enum {
	LENGTH_MASK = 3,     /* Content-Length: */
	LENGTH_ABSENT = 0,   /* none */
	LENGTH_EXACT = 1,    /* the body's length */
	LENGTH_PLUS_ONE = 2, /* one more than the body */
	LENGTH_FROM_INPUT = 3,
	PATH_NONE = 1 << 2,  /* no path at all */
	PATH_OTHER = 1 << 3, /* "/chat" instead of "/chat/" */
	SMALL_LIMIT = 1 << 4,
	NULL_BODY = 1 << 5,
	HOLD_SHIFT = 6,
};

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

static void check_body(const struct chat_response *res)
{
	FUZZ_CHECK(res->body != NULL && res->body_len > 0, "status %d without a body", res->status);
	FUZZ_CHECK(strlen(res->body) == res->body_len, "body length %zu is wrong", res->body_len);
	FUZZ_CHECK(utf8_valid(res->body, res->body_len), "body not UTF-8: %s", res->body);
	const char *why = NULL;
	FUZZ_CHECK(json_strict_check(res->body, res->body_len, 1, &why), "body not JSON (%s): %s",
		   why, res->body);

	json_object *obj = json_tokener_parse(res->body);
	FUZZ_CHECK(obj != NULL && json_object_is_type(obj, json_type_object), "not an object: %s",
		   res->body);
	json_object *member;
	if (res->status == 200) {
		FUZZ_CHECK(json_object_object_get_ex(obj, "message", &member) &&
			       json_object_is_type(member, json_type_string) &&
			       strncmp(json_object_get_string(member), "received ", 9) == 0,
			   "200 without a received message: %s", res->body);
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
	if (size < 1)
		return 0;
	unsigned flags = data[0];
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	char *method = take_line(&p, &n);
	char *content_type = take_line(&p, &n);
	char *length_line = (flags & LENGTH_MASK) == LENGTH_FROM_INPUT ? take_line(&p, &n) : NULL;

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
		    : flags & PATH_OTHER ? "/chat"
					 : "/chat/",
	    .content_type = content_type,
	    .content_length = (flags & LENGTH_MASK) == LENGTH_ABSENT ? NULL
			      : length_line                          ? length_line
								     : length,
	    .body = n == 0 && (flags & NULL_BODY) ? NULL : body,
	    .body_len = n,
	    .hold_mode = (enum chat_hold_mode)((flags >> HOLD_SHIFT) % 3),
	};
	struct chat_limits lim = {.max_body = flags & SMALL_LIMIT ? 64 : CHAT_MAX_BODY_DEFAULT};

	struct chat_response head, res;
	size_t announced = 0;
	enum chat_head verdict = chat_check_head(&req, &lim, &head, &announced);
	chat_respond(&req, &lim, &res);

	if (res.status == 0) {
		/* A held request answers later, and only when it may be held. */
		FUZZ_CHECK(res.hold.ms > 0 && req.hold_mode == CHAT_HOLD_ALLOWED,
			   "status 0 without a hold");
	} else {
		FUZZ_CHECK(documented_status(res.status), "undocumented status %d", res.status);
		check_body(&res);
	}
	FUZZ_CHECK((res.status == 405) == (res.allow != NULL && strcmp(res.allow, "POST") == 0),
		   "Allow header on %d", res.status);
	if (verdict == CHAT_HEAD_REJECTED) {
		FUZZ_CHECK(head.status == res.status, "head said %d, the request %d", head.status,
			   res.status);
		check_body(&head);
	} else {
		FUZZ_CHECK(announced <= lim.max_body, "announced %zu over the limit", announced);
		/* The one 404 after the head: a post with a room to a server
		 * without a store (this harness has none). */
		bool history_off = res.status == 404 && res.body_len == strlen(ROOMS_OFF_BODY) &&
				   memcmp(res.body, ROOMS_OFF_BODY, res.body_len) == 0;
		FUZZ_CHECK((res.status != 404 || history_off) && res.status != 405 &&
			       res.status != 415,
			   "head passed, the request got %d", res.status);
	}

	chat_response_free(&head);
	chat_response_free(&res);
	free(body);
	free(length_line);
	free(content_type);
	free(method);
	return 0;
}
