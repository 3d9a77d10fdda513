/* The request logic: a request's head judged, then the request answered,
 * the rooms' and event streams' routes by rooms.c and events.c. It knows
 * nothing of libfcgi or sockets. */
#include "chat.h"

#include "events.h"
#include "media_type.h"
#include "message_form.h"
#include "message_json.h"
#include "origin.h"
#include "reply.h"
#include "rooms.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

/* The chat's path: nginx sends it only POSTs. The rooms' history is
 * ROOMS_PATH. */
#define CHAT_PATH "/chat/"

/* Error bodies are constant: {"error":"<sentence>"} built at compile time. */
#define ERROR_BODY(sentence) "{\"error\":\"" sentence "\"}"

/* Error sentences come from the parsers as plain text, escaped here; a
 * parser out of memory is a 503. */
static void set_error_text(struct chat_response *res, int rc, const char *why)
{
	chat_set_escaped(res, rc == -2 ? 503 : 400, "{\"error\":\"", why, "\"}", why);
	if (res->status == 503)
		res->retry_after = CHAT_RETRY_AFTER_S;
}

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

/* The checks of chat_check_head; *is_json tells JSON from a form body. */
/* The head of GET /chat/messages: only the method and the length matter. */
static enum chat_head judge_rooms_head(const struct chat_request *req,
				       const struct chat_limits *lim, struct chat_response *res,
				       size_t *announced)
{
	if (!req->method || (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)) {
		chat_set_error(res, 405, ERROR_BODY("Only GET and HEAD are allowed here."),
			       "method not allowed");
		res->allow = "GET, HEAD";
		return CHAT_HEAD_REJECTED;
	}
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
				 struct chat_response *res, size_t *announced, bool *is_json)
{
	memset(res, 0, sizeof *res);
	*announced = 0;
	*is_json = false;
	if (req->path &&
	    (strcmp(req->path, ROOMS_PATH) == 0 || strcmp(req->path, EVENTS_PATH) == 0))
		return judge_rooms_head(req, lim, res, announced);
	if (!req->path || strcmp(req->path, CHAT_PATH) != 0) {
		chat_set_error(res, 404, ERROR_BODY("There is nothing here."), "unknown path");
		return CHAT_HEAD_REJECTED;
	}
	if (!req->method || strcmp(req->method, "POST") != 0) {
		chat_set_error(res, 405, ERROR_BODY("Only POST is allowed here."),
			       "method not allowed");
		res->allow = "POST";
		return CHAT_HEAD_REJECTED;
	}

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
	*is_json = json == MEDIA_MATCH;
	return CHAT_HEAD_READ_BODY;
}

enum chat_head chat_check_head(const struct chat_request *req, const struct chat_limits *lim,
			       struct chat_response *res, size_t *announced)
{
	bool is_json;
	return judge_head(req, lim, res, announced, &is_json);
}

/* The "room" and "client_id" of a post, checked; room NULL when absent. */
struct room_fields {
	char name[CHAT_ROOM_MAX + 1];
	const char *room; /* name, once checked; NULL without a room */
	const char *client_id;
	size_t client_id_len;
	char *form_room, *form_client_id; /* decoded form fields, freed after */
};

static void room_fields_free(struct room_fields *rf)
{
	free(rf->form_room);
	free(rf->form_client_id);
}

/* Returns 0, or -1 (400) / -2 (out of memory) with *why set. Without a
 * room, nothing else is looked at: the post stays exactly stateless. */
static int read_room_fields(bool is_json, json_object *root, const char *body, size_t body_len,
			    struct room_fields *rf, const char **why)
{
	const char *room = NULL;
	size_t room_len = 0;
	int has_room, has_id;

	memset(rf, 0, sizeof *rf);
	if (is_json) {
		has_room = message_json_member(root, "room", &room, &room_len);
		if (has_room < 0) {
			*why = "The \"room\" member must be a string.";
			return -1;
		}
		if (!has_room)
			return 0;
		has_id = message_json_member(root, "client_id", &rf->client_id, &rf->client_id_len);
		if (has_id < 0) {
			*why = "The \"client_id\" member must be a string.";
			return -1;
		}
	} else {
		has_room =
		    message_form_field(body, body_len, "room", &rf->form_room, &room_len, why);
		if (has_room <= 0)
			return has_room;
		room = rf->form_room;
		has_id = message_form_field(body, body_len, "client_id", &rf->form_client_id,
					    &rf->client_id_len, why);
		if (has_id < 0)
			return has_id;
		rf->client_id = rf->form_client_id;
	}
	if (!room_name_valid(room, room_len)) {
		*why = "A room name is 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'.";
		return -1;
	}
	if (has_id && !room_client_id_valid(rf->client_id, rf->client_id_len)) {
		*why = "A client_id is 1 to 64 characters, with no control characters.";
		return -1;
	}
	if (!has_id)
		rf->client_id = NULL;
	memcpy(rf->name, room, room_len);
	rf->name[room_len] = '\0';
	rf->room = rf->name;
	return 0;
}

/* A reply streamed when asked for: only a success is, errors stay JSON
 * whatever was asked. */
static void stream_if_asked(const struct chat_request *req, const struct chat_limits *lim,
			    struct chat_response *res)
{
	if (res->kind == CHAT_ANSWER && res->status == 200 && events_accepted(req->accept))
		events_stream_reply(lim, res);
}

void chat_respond(const struct chat_request *req, const struct chat_limits *lim,
		  struct chat_response *res)
{
	size_t announced;
	bool is_json;

	if (judge_head(req, lim, res, &announced, &is_json) == CHAT_HEAD_REJECTED)
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
	if (strcmp(req->path, ROOMS_PATH) == 0) {
		rooms_messages(req, lim, res);
		return;
	}
	if (strcmp(req->path, EVENTS_PATH) == 0) {
		events_respond(req, lim, res);
		return;
	}

	if (is_json && req->body_len == 0) {
		chat_set_error(res, 400,
			       ERROR_BODY("The body is empty; send a JSON object with a message."),
			       "empty body");
		return;
	}

	const char *body = req->body ? req->body : "";
	json_object *root = NULL;
	struct message_text m = {0};
	const char *why;
	int rc = is_json ? message_from_json(body, req->body_len, &root, &m, &why)
			 : message_from_form(body, req->body_len, &m.owned, &m.len, &why);
	if (rc != 0) {
		set_error_text(res, rc, why);
		return;
	}
	if (!is_json)
		m.text = m.owned;

	struct room_fields rf;
	rc = read_room_fields(is_json, root, body, req->body_len, &rf, &why);
	if (rc == 0 && rf.room && message_text_decode(&m) != 0) {
		rc = -2;
		why = "The server is out of memory.";
	}
	if (rc != 0)
		set_error_text(res, rc, why);
	else if (rf.room)
		rooms_post(lim, rf.room, rf.client_id, rf.client_id_len, m.text, m.len, res);
	room_fields_free(&rf);
	if (rc == 0 && !rf.room) {
		size_t out_len;
		/* A message already written as the reply writes it is copied. */
		char *out = m.escaped ? reply_message_escaped(m.escaped, m.escaped_len, &out_len)
				      : reply_message(m.text, m.len, &out_len);
		if (out) {
			res->status = 200;
			res->body = out;
			res->body_len = out_len;
			res->body_owned = true;
		} else {
			chat_out_of_memory(res, "out of memory");
		}
	}
	json_object_put(root);
	message_text_free(&m);
	stream_if_asked(req, lim, res);
}

void chat_post_finish(const struct chat_request *req, const struct chat_limits *lim,
		      struct chat_post *post, struct chat_response *res)
{
	rooms_post_answer(post, res);
	stream_if_asked(req, lim, res);
}

/* The deferred post's other calls: the post is rooms.c's. */

void chat_post_queue(const struct chat_limits *lim, struct chat_post *post,
		     void (*done)(void *cookie), void *cookie)
{
	rooms_post_queue(lim, post, done, cookie);
}

void chat_post_store(const struct chat_limits *lim, struct chat_post *post)
{
	rooms_post_store(lim, post);
}

void chat_post_free(struct chat_post *post)
{
	rooms_post_free(post);
}
