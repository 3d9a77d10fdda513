#include "chat.h"

#include "media_type.h"
#include "message_form.h"
#include "message_json.h"
#include "origin.h"
#include "reply.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

/* The one path the backend answers; nginx sends it only POSTs to it. */
#define CHAT_PATH "/chat/"

/* Error bodies are constant: {"error":"<sentence>"} built at compile time. */
#define ERROR_BODY(sentence) "{\"error\":\"" sentence "\"}"

static void set_error(struct chat_response *res, int status, const char *body, const char *reason)
{
	res->status = status;
	res->body = (char *)body;
	res->body_len = strlen(body);
	res->body_owned = false;
	res->reason = reason;
}

/* Error sentences come from the parsers as plain text; they hold no
 * character that needs escaping except '"' and '\', escaped here. */
static void set_error_text(struct chat_response *res, int status, const char *why)
{
	static const char head[] = "{\"error\":\"";
	static const char tail[] = "\"}";
	size_t why_len = strlen(why);
	size_t esc = reply_escaped_len(why, why_len);
	char *buf = malloc(sizeof head - 1 + esc + sizeof tail);

	if (!buf) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	memcpy(buf, head, sizeof head - 1);
	char *p = reply_escape(buf + sizeof head - 1, why, why_len);
	memcpy(p, tail, sizeof tail);
	res->status = status;
	res->body = buf;
	res->body_len = (size_t)(p - buf) + sizeof tail - 1;
	res->body_owned = true;
	res->reason = why;
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
static enum chat_head judge_head(const struct chat_request *req, const struct chat_limits *lim,
				 struct chat_response *res, size_t *announced, bool *is_json)
{
	memset(res, 0, sizeof *res);
	*announced = 0;
	if (!req->path || strcmp(req->path, CHAT_PATH) != 0) {
		set_error(res, 404, ERROR_BODY("There is nothing here."), "unknown path");
		return CHAT_HEAD_REJECTED;
	}
	if (!req->method || strcmp(req->method, "POST") != 0) {
		set_error(res, 405, ERROR_BODY("Only POST is allowed here."), "method not allowed");
		res->allow = "POST";
		return CHAT_HEAD_REJECTED;
	}

	size_t length;
	if (parse_length(req->content_length, &length) != 0) {
		set_error(res, 400, ERROR_BODY("The Content-Length header is not a number."),
			  "bad Content-Length");
		return CHAT_HEAD_REJECTED;
	}
	if (length > lim->max_body) {
		set_error(res, 413, ERROR_BODY("The message is too large."),
			  "body over --max-body (Content-Length)");
		return CHAT_HEAD_REJECTED;
	}

	enum media_match json = media_type_match(req->content_type, "application/json");
	enum media_match form =
	    json == MEDIA_OTHER
		? media_type_match(req->content_type, "application/x-www-form-urlencoded")
		: MEDIA_OTHER;
	if (json == MEDIA_BAD_CHARSET || form == MEDIA_BAD_CHARSET) {
		set_error(res, 415, ERROR_BODY("The body must be UTF-8."), "charset not UTF-8");
		return CHAT_HEAD_REJECTED;
	}
	if (json == MEDIA_OTHER && form == MEDIA_OTHER) {
		set_error(res, 415,
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
		set_error(res, 403,
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

void chat_respond(const struct chat_request *req, const struct chat_limits *lim,
		  struct chat_response *res)
{
	size_t announced;
	bool is_json;

	if (judge_head(req, lim, res, &announced, &is_json) == CHAT_HEAD_REJECTED)
		return;
	if (req->body_len > lim->max_body) {
		set_error(res, 413, ERROR_BODY("The message is too large."),
			  "body over --max-body");
		return;
	}
	if (req->content_length && req->body_len != announced) {
		set_error(res, 400, ERROR_BODY("The body does not match its Content-Length."),
			  "body length differs from Content-Length");
		return;
	}

	if (is_json && req->body_len == 0) {
		set_error(res, 400,
			  ERROR_BODY("The body is empty; send a JSON object with a message."),
			  "empty body");
		return;
	}

	const char *body = req->body ? req->body : "";
	json_object *root = NULL;
	char *decoded = NULL;
	const char *text, *why;
	size_t len;
	int rc = is_json ? message_from_json(body, req->body_len, &root, &text, &len, &why)
			 : message_from_form(body, req->body_len, &decoded, &len, &why);
	if (rc != 0) {
		set_error_text(res, rc == -2 ? 503 : 400, why);
		return;
	}
	if (decoded)
		text = decoded;

	size_t out_len;
	char *out = reply_message(text, len, &out_len);
	json_object_put(root);
	free(decoded);
	if (!out) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	res->status = 200;
	res->body = out;
	res->body_len = out_len;
	res->body_owned = true;
}

void chat_out_of_memory(struct chat_response *res, const char *reason)
{
	memset(res, 0, sizeof *res);
	set_error(res, 503, ERROR_BODY("The server is out of memory; try again."), reason);
}

void chat_response_free(struct chat_response *res)
{
	if (res->body_owned)
		free(res->body);
	res->body = NULL;
	res->body_owned = false;
}
