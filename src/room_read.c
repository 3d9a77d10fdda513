#include "room_read.h"

#include <stdlib.h>
#include <string.h>

static void free_read(struct chat_read *r)
{
	free(r->out.buf);
	free(r);
}

struct chat_read *room_read_new(const char *room, int64_t after, unsigned limit,
				store_entry_fn each, room_read_finish_fn finish)
{
	struct chat_read *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->head.free = free_read;
	size_t len = strlen(room);
	if (len >= sizeof r->room)
		len = sizeof r->room - 1;
	memcpy(r->room, room, len);
	r->room[len] = '\0';
	r->sr.room = r->room;
	r->sr.after = after;
	r->sr.limit = limit;
	r->sr.each = each;
	r->sr.ctx = r;
	r->finish = finish;
	return r;
}

void room_read_finish(const struct chat_limits *lim, struct chat_read *r, struct chat_response *res)
{
	memset(res, 0, sizeof *res);
	r->finish(lim, r, res);
	free_read(r);
}

void room_read_make(const struct chat_limits *lim, struct chat_read *r, struct chat_response *res)
{
	if (lim->defer_reads) {
		memset(res, 0, sizeof *res);
		res->kind = CHAT_READ;
		res->read = r;
		return;
	}
	chat_may_block(lim);
	r->sr.why = NULL;
	r->sr.result = store_read(lim->store, r->sr.room, r->sr.after, r->sr.limit, r->sr.each,
				  r->sr.ctx, &r->sr.last, &r->sr.why);
	room_read_finish(lim, r, res);
}

static void read_made(struct store_read *sr)
{
	/* sr is the read's first member but one: its ctx names the read. */
	struct chat_read *r = sr->ctx;
	r->done(r->cookie);
}

void room_read_queue(const struct chat_limits *lim, struct chat_read *r, void (*done)(void *cookie),
		     void *cookie)
{
	r->done = done;
	r->cookie = cookie;
	r->sr.done = read_made;
	r->sr.check = false;
	store_read_queue(lim->store, &r->sr);
}

void room_read_free(struct chat_read *r)
{
	if (r)
		free_read(r);
}
