/* The helpers that fill and release a response. They know the response and
 * the reply's escaper, and nothing of routes, rooms or stores. */
#include "response.h"

#include "reply.h"

#include <stdlib.h>
#include <string.h>

void chat_may_block(const struct chat_limits *lim)
{
	if (lim->may_block)
		lim->may_block();
}

void chat_set_error(struct chat_response *res, int status, const char *body, const char *reason)
{
	res->kind = CHAT_ANSWER;
	res->status = status;
	res->retry_after = 0;
	res->body = (char *)body;
	res->body_len = strlen(body);
	res->body_owned = false;
	res->reason = reason;
}

void chat_set_escaped(struct chat_response *res, int status, const char *head, const char *text,
		      const char *tail, const char *reason)
{
	size_t head_len = strlen(head), text_len = strlen(text), tail_len = strlen(tail);
	char *buf = malloc(head_len + reply_escaped_len(text, text_len) + tail_len + 1);

	if (!buf) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	memcpy(buf, head, head_len);
	char *p = reply_escape(buf + head_len, text, text_len);
	memcpy(p, tail, tail_len + 1);
	res->kind = CHAT_ANSWER;
	res->status = status;
	res->retry_after = 0;
	res->body = buf;
	res->body_len = (size_t)(p - buf) + tail_len;
	res->body_owned = true;
	res->reason = reason;
}

void chat_out_of_memory(struct chat_response *res, const char *reason)
{
	memset(res, 0, sizeof *res);
	chat_set_error(res, 503, "{\"error\":\"The server is out of memory; try again.\"}", reason);
	res->retry_after = CHAT_RETRY_AFTER_S;
}

void chat_response_free(struct chat_response *res)
{
	if (res->body_owned)
		free(res->body);
	res->body = NULL;
	res->body_owned = false;
	/* A post is one allocation (rooms.c), so it goes without rooms.c. */
	free(res->post);
	res->post = NULL;
	if (res->read)
		((struct chat_read_head *)(void *)res->read)->free(res->read);
	res->read = NULL;
	res->kind = CHAT_ANSWER;
}
