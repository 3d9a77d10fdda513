/* POST /chat/: a message in, its reply out. Rooms and streams are handed
 * to rooms.c and events.c; the head is chat.c's. */
#include "message.h"

#include "events.h"
#include "media_type.h"
#include "message_form.h"
#include "message_json.h"
#include "reply.h"
#include "rooms.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#define ERROR_BODY(sentence) "{\"error\":\"" sentence "\"}"

/* Error sentences come from the parsers as plain text, escaped here; a
 * parser out of memory is a 503. */
static void set_error_text(struct chat_response *res, int rc, const char *why)
{
	chat_set_escaped(res, rc == -2 ? 503 : 400, "{\"error\":\"", why, "\"}", why);
	if (res->status == 503)
		res->retry_after = CHAT_RETRY_AFTER_S;
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

void message_respond(const struct chat_request *req, const struct chat_limits *lim,
		     struct chat_response *res)
{
	memset(res, 0, sizeof *res);
	/* The head passed: the body is JSON, or else a form. */
	bool is_json = media_type_match(req->content_type, "application/json") == MEDIA_MATCH;
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

void message_post_finish(const struct chat_request *req, const struct chat_limits *lim,
			 struct chat_post *post, struct chat_response *res)
{
	rooms_post_answer(post, res);
	stream_if_asked(req, lim, res);
}
