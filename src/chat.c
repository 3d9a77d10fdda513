/*
 * The router: judges a request's head, finds its route in the table
 * (routes.h) and hands the request to the route's handler. It knows paths
 * only through the table, and nothing of libfcgi or sockets.
 */
#include "chat.h"

#include "media_type.h"
#include "message.h"
#include "origin.h"
#include "room_read.h"
#include "rooms.h"

#include <stdlib.h>
#include <string.h>

/* Error bodies are constant: {"error":"<sentence>"} built at compile time. */
#define ERROR_BODY(sentence) "{\"error\":\"" sentence "\"}"

/* CONTENT_LENGTH: digits only (RFC 9110, 8.6), no sign, no spaces. */
static int parse_length(const char *s, size_t *out)
{
	if (!s || !*s) {
		*out = 0;
		return s ? -1 : 0;
	}
	size_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		unsigned d = (unsigned)(*p - '0');
		if (v > (SIZE_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* The 405 of route r, its sentence made from r->allow: "POST" is
 * "Only POST is allowed here.", "GET, HEAD" "Only GET and HEAD are allowed
 * here." */
static void refuse_method(const struct route *r, struct chat_response *res)
{
	static const char head[] = "{\"error\":\"Only ";
	static const char one[] = " is allowed here.\"}";
	static const char many[] = " are allowed here.\"}";
	const char *allow = r->allow;
	size_t allow_len = strlen(allow);
	/* The comma before the last method, whose ", " becomes " and ". */
	const char *last = strrchr(allow, ',');
	const char *tail = last ? many : one;
	size_t tail_len = strlen(tail);
	char *body = malloc(sizeof head - 1 + allow_len + 3 + tail_len + 1);
	if (!body) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	char *p = body;
	memcpy(p, head, sizeof head - 1);
	p += sizeof head - 1;
	size_t before = last ? (size_t)(last - allow) : allow_len;
	memcpy(p, allow, before);
	p += before;
	if (last) {
		memcpy(p, " and", 4);
		p += 4;
		memcpy(p, last + 1, allow_len - before - 1);
		p += allow_len - before - 1;
	}
	memcpy(p, tail, tail_len + 1);
	res->kind = CHAT_ANSWER;
	res->status = 405;
	res->body = body;
	res->body_len = (size_t)(p - body) + tail_len;
	res->body_owned = true;
	res->reason = "method not allowed";
	res->allow = r->allow;
}

bool chat_check_method(enum route_id route, const struct chat_request *req,
		       struct chat_response *res)
{
	const struct route *r = &routes[(unsigned)route < ROUTE_COUNT ? route : ROUTE_OTHER];
	if (route_allows(r, req->method))
		return true;
	memset(res, 0, sizeof *res);
	if (r->allow)
		refuse_method(r, res);
	else
		chat_set_error(res, 404, ERROR_BODY("There is nothing here."), "unknown path");
	return false;
}

/* The head of a post to /chat/: its length, its type, where it comes from. */
static enum chat_head judge_post_head(const struct chat_request *req, const struct chat_limits *lim,
				      struct chat_response *res, size_t *announced)
{
	size_t length;
	if (parse_length(req->content_length, &length) != 0) {
		chat_set_error(res, 400, ERROR_BODY("The Content-Length header is not a number."),
			       "bad Content-Length");
		return CHAT_HEAD_REJECTED;
	}
	if (length > lim->max_body) {
		chat_set_error(res, 413, ERROR_BODY("The message is too large."),
			       "body over --max-body (Content-Length)");
		return CHAT_HEAD_REJECTED;
	}

	enum media_match json = media_type_match(req->content_type, "application/json");
	enum media_match form =
	    json == MEDIA_OTHER
		? media_type_match(req->content_type, "application/x-www-form-urlencoded")
		: MEDIA_OTHER;
	if (json == MEDIA_BAD_CHARSET || form == MEDIA_BAD_CHARSET) {
		chat_set_error(res, 415, ERROR_BODY("The body must be UTF-8."),
			       "charset not UTF-8");
		return CHAT_HEAD_REJECTED;
	}
	if (json == MEDIA_OTHER && form == MEDIA_OTHER) {
		chat_set_error(res, 415,
			       ERROR_BODY("Send the message as application/json or "
					  "application/x-www-form-urlencoded."),
			       "unsupported Content-Type");
		return CHAT_HEAD_REJECTED;
	}
	/* A cross-site HTML form can post a form body to us without asking;
	 * it cannot post JSON without a CORS preflight, which nginx refuses, so
	 * only forms need to prove where they come from. */
	if (form == MEDIA_MATCH && origin_judge(req->sec_fetch_site, req->origin, req->scheme,
						req->host) == ORIGIN_FOREIGN) {
		chat_set_error(
		    res, 403,
		    ERROR_BODY("Form posts are accepted only from this site's own pages."),
		    "cross-site form post");
		return CHAT_HEAD_REJECTED;
	}
	*announced = length;
	return CHAT_HEAD_READ_BODY;
}

/* The head of a read of the history (GET /chat/messages, /chat/events):
 * there must be a history, and no body. */
static enum chat_head judge_read_head(const struct chat_request *req, const struct chat_limits *lim,
				      struct chat_response *res, size_t *announced)
{
	if (!lim->store) {
		chat_set_error(res, 404, ROOMS_OFF_BODY, "history is off (--store none)");
		return CHAT_HEAD_REJECTED;
	}
	/* nginx passes an empty CONTENT_LENGTH for a request without a body. */
	size_t length = 0;
	if (req->content_length && *req->content_length &&
	    (parse_length(req->content_length, &length) != 0 || length > lim->max_body)) {
		chat_set_error(res, 400, ERROR_BODY("A GET request has no body."),
			       "bad Content-Length on GET");
		return CHAT_HEAD_REJECTED;
	}
	*announced = length;
	return CHAT_HEAD_READ_BODY;
}

static enum chat_head judge_head(const struct chat_request *req, const struct chat_limits *lim,
				 struct chat_response *res, size_t *announced, enum route_id *id)
{
	memset(res, 0, sizeof *res);
	*announced = 0;
	*id = route_of(req->path);
	if (!routes[*id].respond) {
		chat_set_error(res, 404, ERROR_BODY("There is nothing here."), "unknown path");
		return CHAT_HEAD_REJECTED;
	}
	if (!chat_check_method(*id, req, res))
		return CHAT_HEAD_REJECTED;
	/* The chat's body is a message; the other routes read the history. */
	if (*id == ROUTE_CHAT)
		return judge_post_head(req, lim, res, announced);
	return judge_read_head(req, lim, res, announced);
}

enum chat_head chat_check_head(const struct chat_request *req, const struct chat_limits *lim,
			       struct chat_response *res, size_t *announced)
{
	enum route_id id;
	return judge_head(req, lim, res, announced, &id);
}

void chat_respond(const struct chat_request *req, const struct chat_limits *lim,
		  struct chat_response *res)
{
	size_t announced;
	enum route_id id;

	if (judge_head(req, lim, res, &announced, &id) == CHAT_HEAD_REJECTED)
		return;
	if (req->body_len > lim->max_body) {
		chat_set_error(res, 413, ERROR_BODY("The message is too large."),
			       "body over --max-body");
		return;
	}
	if (req->content_length && req->body_len != announced) {
		chat_set_error(res, 400, ERROR_BODY("The body does not match its Content-Length."),
			       "body length differs from Content-Length");
		return;
	}
	routes[id].respond(req, lim, res);
}

/* The deferred post's calls: the post is rooms.c's, its answer message.c's. */

void chat_post_queue(const struct chat_limits *lim, struct chat_post *post,
		     void (*done)(void *cookie), void *cookie)
{
	rooms_post_queue(lim, post, done, cookie);
}

void chat_post_store(const struct chat_limits *lim, struct chat_post *post)
{
	rooms_post_store(lim, post);
}

void chat_post_finish(const struct chat_request *req, const struct chat_limits *lim,
		      struct chat_post *post, struct chat_response *res)
{
	message_post_finish(req, lim, post, res);
}

void chat_post_free(struct chat_post *post)
{
	rooms_post_free(post);
}

/* The deferred read's calls: the read is room_read.c's. */

void chat_read_queue(const struct chat_limits *lim, struct chat_read *read,
		     void (*done)(void *cookie), void *cookie)
{
	room_read_queue(lim, read, done, cookie);
}

void chat_read_finish(const struct chat_limits *lim, struct chat_read *read,
		      struct chat_response *res)
{
	room_read_finish(lim, read, res);
}
