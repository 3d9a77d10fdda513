/* The rooms' posts and reads: what the store holds, as JSON. */
#include "rooms.h"

#include "message_form.h"
#include "reply.h"
#include "room_json.h"
#include "room_read.h"
#include "store.h"
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ERROR_BODY(sentence) "{\"error\":\"" sentence "\"}"
#define RAW(o, lit)          json_out_raw((o), (lit), sizeof(lit) - 1)

static const char STORE_FAILED_BODY[] =
    ERROR_BODY("The chat history is unavailable right now; try again shortly.");
static const char BAD_ROOM_BODY[] =
    ERROR_BODY("A room name is 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'.");

bool room_name_valid(const char *s, size_t len)
{
	if (len < 1 || len > CHAT_ROOM_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

bool room_client_id_valid(const char *s, size_t len)
{
	if (len < 1 || !utf8_valid(s, len))
		return false;
	const unsigned char *u = (const unsigned char *)s;
	size_t chars = 0;
	for (size_t i = 0; i < len; i++) {
		if (u[i] < 0x20 || u[i] == 0x7f)
			return false;
		/* U+0080..U+009F, the C1 controls: C2 80..C2 9F. */
		if (u[i] == 0xc2 && i + 1 < len && u[i + 1] < 0xa0)
			return false;
		if ((u[i] & 0xc0) != 0x80)
			chars++;
	}
	return chars <= ROOMS_CLIENT_ID_MAX;
}

void rooms_store_failed(struct chat_response *res, enum store_result r, const char *why)
{
	if (r == STORE_NOMEM)
		chat_out_of_memory(res, why);
	else
		chat_set_error(res, 503, STORE_FAILED_BODY, why);
	res->retry_after = CHAT_RETRY_AFTER_S;
	res->store_error = true;
}

/* ---- POST /chat/ with a room ---- */

struct post_ctx {
	const char *room;
};

static char *build_post_answer(void *arg, const struct store_entry *user,
			       const struct store_entry *bot, size_t *len)
{
	const struct post_ctx *ctx = arg;
	struct json_out o = {0};
	/* The bot's entry, not this request's reply: a retry is answered with
	 * the first post's answer, and SQLite builds it again (store.h). */
	RAW(&o, "{\"message\":");
	json_out_string(&o, bot->text, bot->text_len);
	RAW(&o, ",\"room\":");
	json_out_string(&o, ctx->room, strlen(ctx->room));
	RAW(&o, ",\"entries\":[");
	json_out_entry(&o, user);
	RAW(&o, ",");
	json_out_entry(&o, bot);
	RAW(&o, "],\"next\":");
	json_out_int(&o, bot->seq);
	RAW(&o, "}");
	return json_out_take(&o, len);
}

/* One allocation, its strings inside it: free() releases it, as
 * chat_response_free does. */
struct chat_post {
	struct store_post sp; /* first: the store's done gets its address */
	struct post_ctx ctx;
	void (*done)(void *cookie);
	void *cookie;
	char room[CHAT_ROOM_MAX + 1];
	char bytes[]; /* the client id, the text, the reply */
};

/* The post of text to room, with copies of everything it needs. */
static struct chat_post *post_new(const char *room, const char *client_id, size_t client_id_len,
				  const char *text, size_t text_len)
{
	static const char prefix[] = REPLY_PREFIX;
	const size_t prefix_len = sizeof prefix - 1;
	size_t room_len = strlen(room);
	/* Valid rooms and client ids are short, and a text is at most
	 * --max-body: the sum below cannot wrap. */
	if (room_len > CHAT_ROOM_MAX || client_id_len > 4 * ROOMS_CLIENT_ID_MAX ||
	    text_len > SIZE_MAX / 4)
		return NULL;
	size_t reply_len = prefix_len + text_len;
	struct chat_post *p = malloc(sizeof *p + client_id_len + text_len + reply_len + 1);
	if (!p)
		return NULL;
	memset(p, 0, sizeof *p);
	memcpy(p->room, room, room_len + 1);
	char *at = p->bytes;
	if (client_id) {
		memcpy(at, client_id, client_id_len);
		p->sp.client_id = at;
		p->sp.client_id_len = client_id_len;
		at += client_id_len;
	}
	if (text_len)
		memcpy(at, text, text_len);
	p->sp.text = at;
	p->sp.text_len = text_len;
	at += text_len;
	memcpy(at, prefix, prefix_len);
	if (text_len)
		memcpy(at + prefix_len, text, text_len);
	at[reply_len] = '\0';
	p->sp.reply = at;
	p->sp.reply_len = reply_len;
	p->sp.room = p->room;
	p->ctx.room = p->room;
	p->sp.build = build_post_answer;
	p->sp.ctx = &p->ctx;
	return p;
}

void rooms_post(const struct chat_limits *lim, const char *room, const char *client_id,
		size_t client_id_len, const char *text, size_t text_len, struct chat_response *res)
{
	memset(res, 0, sizeof *res);
	if (!lim->store) {
		chat_set_error(res, 404, ROOMS_OFF_BODY, "history is off (--store none)");
		return;
	}
	struct chat_post *p = post_new(room, client_id, client_id_len, text, text_len);
	if (!p) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	if (lim->defer_posts) {
		res->kind = CHAT_POST;
		res->post = p;
		return;
	}
	rooms_post_store(lim, p);
	rooms_post_answer(p, res);
}

void rooms_post_store(const struct chat_limits *lim, struct chat_post *post)
{
	struct store_post *sp = &post->sp;
	chat_may_block(lim);
	sp->why = NULL;
	sp->result = store_post(lim->store, sp->room, sp->client_id, sp->client_id_len, sp->text,
				sp->text_len, sp->reply, sp->reply_len, sp->build, sp->ctx,
				&sp->answer, &sp->answer_len, &sp->replayed, &sp->why);
}

static void post_queued(struct store_post *sp)
{
	struct chat_post *p = (struct chat_post *)sp;
	p->done(p->cookie);
}

void rooms_post_queue(const struct chat_limits *lim, struct chat_post *post,
		      void (*done)(void *cookie), void *cookie)
{
	post->done = done;
	post->cookie = cookie;
	post->sp.done = post_queued;
	store_post_queue(lim->store, &post->sp);
}

void rooms_post_answer(struct chat_post *post, struct chat_response *res)
{
	memset(res, 0, sizeof *res);
	struct store_post *sp = &post->sp;
	if (sp->result != STORE_OK) {
		rooms_store_failed(res, sp->result, sp->why);
	} else {
		res->status = 200;
		res->body = sp->answer;
		res->body_len = sp->answer_len;
		res->body_owned = true;
		if (!sp->replayed)
			memcpy(res->changed_room, post->room, sizeof post->room);
	}
	free(post);
}

void rooms_post_free(struct chat_post *post)
{
	free(post);
}

/* ---- GET /chat/messages ---- */

enum param { P_ROOM, P_AFTER, P_LIMIT, P_WAIT, P_COUNT };

static const char *const param_name[P_COUNT] = {"room", "after", "limit", "wait"};
static const char *const param_twice[P_COUNT] = {
    ERROR_BODY("The room parameter is given more than once."),
    ERROR_BODY("The after parameter is given more than once."),
    ERROR_BODY("The limit parameter is given more than once."),
    ERROR_BODY("The wait parameter is given more than once."),
};
static const char *const param_bad[P_COUNT] = {
    BAD_ROOM_BODY,
    ERROR_BODY("The after parameter must be a sequence number: a whole number, 0 or more."),
    ERROR_BODY("The limit parameter must be a whole number from 1 to 500."),
    ERROR_BODY("The wait parameter must be a whole number of seconds from 0 to 30."),
};

/* Digits only, at least one, at most max. */
static bool parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Which parameter a raw name is, or P_COUNT for one ignored. */
static enum param param_of(const char *name, size_t len)
{
	char decoded[16];
	if (len > sizeof decoded)
		return P_COUNT;
	if (memchr(name, '%', len) || memchr(name, '+', len)) {
		long n = form_value_decode(name, len, decoded);
		if (n < 0)
			return P_COUNT;
		name = decoded;
		len = (size_t)n;
	}
	for (int p = 0; p < P_COUNT; p++)
		if (strlen(param_name[p]) == len && memcmp(param_name[p], name, len) == 0)
			return (enum param)p;
	return P_COUNT;
}

/* One parameter's value into q; false when it is bad. */
static bool set_param(struct rooms_query *q, enum param p, const char *raw, size_t raw_len)
{
	/* Room names and numbers are short; anything longer is bad as sent. */
	char v[3 * CHAT_ROOM_MAX];
	if (raw_len > sizeof v)
		return false;
	long n = form_value_decode(raw, raw_len, v);
	if (n < 0)
		return false;
	size_t len = (size_t)n;
	uint64_t num;
	switch (p) {
	case P_ROOM:
		if (!room_name_valid(v, len))
			return false;
		memcpy(q->room, v, len);
		q->room[len] = '\0';
		return true;
	case P_AFTER:
		if (!parse_uint(v, len, INT64_MAX, &num))
			return false;
		q->after = (int64_t)num;
		return true;
	case P_LIMIT:
		if (!parse_uint(v, len, ROOMS_LIMIT_MAX, &num) || num < 1)
			return false;
		q->limit = (unsigned)num;
		return true;
	case P_WAIT:
		if (!parse_uint(v, len, ROOMS_WAIT_MAX, &num))
			return false;
		q->wait = (unsigned)num;
		return true;
	default:
		return true;
	}
}

const char *rooms_parse_query(const char *qs, struct rooms_query *q)
{
	*q = (struct rooms_query){.after = -1, .limit = ROOMS_LIMIT_DEFAULT};
	const char *end = qs ? qs + strlen(qs) : NULL;
	for (const char *p = qs; p && p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *field_end = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(field_end - p));
		const char *name_end = eq ? eq : field_end;
		enum param which = param_of(p, (size_t)(name_end - p));
		if (which != P_COUNT) {
			if (q->seen & (1u << which))
				return param_twice[which];
			q->seen |= 1u << which;
			const char *value = eq ? eq + 1 : field_end;
			if (!set_param(q, which, value, (size_t)(field_end - value)))
				return param_bad[which];
		}
		p = amp ? amp + 1 : NULL;
	}
	if (!(q->seen & (1u << P_ROOM)))
		return ERROR_BODY("Say which room: ?room=NAME.");
	return NULL;
}

/* One entry of GET /chat/messages' answer; ctx is the read. Stops the read
 * (1) once the page is full. */
static int add_entry(void *arg, const struct store_entry *e)
{
	struct chat_read *r = arg;
	if (r->count)
		RAW(&r->out, ",");
	json_out_entry(&r->out, e);
	r->count++;
	r->last_seq = e->seq;
	if (r->out.failed)
		return -1;
	return r->out.len >= ROOMS_PAGE_MAX ? 1 : 0;
}

bool rooms_read_query(const struct chat_request *req, const struct chat_limits *lim,
		      struct chat_response *res, struct rooms_query *q)
{
	memset(res, 0, sizeof *res);
	if (!lim->store) {
		chat_set_error(res, 404, ROOMS_OFF_BODY, "history is off (--store none)");
		return false;
	}
	const char *bad = rooms_parse_query(req->query, q);
	if (bad) {
		chat_set_error(res, 400, bad, "bad query parameters");
		return false;
	}
	return true;
}

/* GET /chat/messages once its read is made: the entries, or a hold. */
static void messages_finish(const struct chat_limits *lim, struct chat_read *r,
			    struct chat_response *res)
{
	(void)lim;
	if (r->sr.result != STORE_OK) {
		rooms_store_failed(res, r->sr.result, r->sr.why);
		return;
	}
	bool busy = false;
	if (r->count == 0 && r->wait > 0) {
		if (r->mode == CHAT_HOLD_ALLOWED) {
			res->kind = CHAT_HOLD;
			res->status = 0;
			res->hold.ms = r->wait * 1000u;
			memcpy(res->hold.room, r->room, sizeof r->room);
			return;
		}
		busy = r->mode == CHAT_HOLD_FULL;
	}
	int64_t next = r->count ? r->last_seq : r->sr.after >= 0 ? r->sr.after : r->sr.last;
	RAW(&r->out, "],\"next\":");
	json_out_int(&r->out, next);
	if (busy)
		RAW(&r->out, ",\"busy\":true,\"retry_after\":1");
	RAW(&r->out, "}");
	size_t len;
	char *body = json_out_take(&r->out, &len);
	if (!body) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	res->status = 200;
	res->body = body;
	res->body_len = len;
	res->body_owned = true;
}

void rooms_messages(const struct chat_request *req, const struct chat_limits *lim,
		    struct chat_response *res)
{
	struct rooms_query q;
	if (!rooms_read_query(req, lim, res, &q))
		return;
	struct chat_read *r = room_read_new(q.room, q.after, q.limit, add_entry, messages_finish);
	if (!r) {
		chat_out_of_memory(res, "out of memory");
		return;
	}
	/* HEAD gets the headers of what is there now: no point in holding it. */
	r->wait = req->method && strcmp(req->method, "GET") == 0 ? q.wait : 0;
	r->mode = req->hold_mode;
	RAW(&r->out, "{\"room\":");
	json_out_string(&r->out, q.room, strlen(q.room));
	RAW(&r->out, ",\"entries\":[");
	room_read_make(lim, r, res);
}
