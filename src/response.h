/*
 * A request and its response, as the request logic and the server share
 * them: what the FastCGI layer knows of a request, the limits it is judged
 * by, what kind of answer the logic gives, and the helpers that fill one.
 * Every part of the logic includes it; it knows no route, room, store or
 * event stream, and nothing of libfcgi.
 */
#ifndef RESPONSE_H
#define RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The default for --max-body; nginx's client_max_body_size 64k matches it. */
#define CHAT_MAX_BODY_DEFAULT ((size_t)64 * 1024)
/* Object/array nesting allowed in a request body. {"message":"x"} is depth 1;
 * anything deeper than a few levels is not a chat message, and a small limit
 * bounds the parser's work on hostile input. */
#define CHAT_JSON_MAX_DEPTH 16

/* A room name: 1 to CHAT_ROOM_MAX characters from [A-Za-z0-9_-]. */
#define CHAT_ROOM_MAX 64

/* Every response has this type, successes and errors alike, except the
 * event streams (see events.h). */
#define CHAT_CONTENT_TYPE "application/json; charset=utf-8"

/* The Retry-After of every 503: what it waits for (a locked store, memory,
 * a stream's slot) frees up in moments. */
#define CHAT_RETRY_AFTER_S 1u

struct store;

struct chat_limits {
	size_t max_body;     /* bytes; larger bodies get 413 */
	struct store *store; /* the room history; NULL: --store none */
	/* A streamed reply (POST with Accept: text/event-stream) is sent one
	 * event at a time, this many milliseconds apart: --stream-pace. */
	unsigned stream_pace_ms;
	/* Optional: called before work that may wait (the store) or take long,
	 * so the server can let another thread take new requests meanwhile. */
	void (*may_block)(void);
	/* The server can finish a post later: where the store writes posts
	 * on a thread of its own, a post comes back as CHAT_POST instead of
	 * waiting for it to be stored. */
	bool defer_posts;
	/* The same for reads of the store, where they wait on a network
	 * (store_reads_wait): a read comes back as CHAT_READ. */
	bool defer_reads;
};

/* Calls lim->may_block if there is one. */
void chat_may_block(const struct chat_limits *lim);

/* What the FastCGI layer knows of a request. Any string may be NULL when the
 * parameter is absent. */
struct chat_request {
	const char *method;         /* REQUEST_METHOD */
	const char *path;           /* path part of REQUEST_URI, query removed */
	const char *query;          /* QUERY_STRING, undecoded */
	const char *content_type;   /* CONTENT_TYPE */
	const char *content_length; /* CONTENT_LENGTH, as sent */
	/* Where a form post comes from (see origin.h), as nginx passes them. */
	const char *origin;         /* HTTP_ORIGIN: the Origin header */
	const char *sec_fetch_site; /* HTTP_SEC_FETCH_SITE */
	const char *host;           /* HTTP_HOST: the Host header as sent */
	const char *scheme;         /* REQUEST_SCHEME: "http" or "https" */
	const char *accept;         /* HTTP_ACCEPT: text/event-stream asks for a stream */
	const char *last_event_id;  /* HTTP_LAST_EVENT_ID: where an event stream resumes */
	const char *body;           /* the body bytes read, not NUL-terminated */
	size_t body_len;
	/* How a request that may wait (a long-poll) is being asked; the server
	 * layer sets it, see CHAT_HOLD. */
	enum chat_hold_mode {
		CHAT_HOLD_ALLOWED, /* it may answer with a hold */
		CHAT_HOLD_FULL,    /* no room to hold more: answer now, say "busy" */
		CHAT_HOLD_OVER     /* its wait is over: answer now with what there is */
	} hold_mode;
	/* An event stream being continued (GET /chat/events): its head and
	 * first part have been sent, and stream_after is the sequence number
	 * of the last entry sent (res->stream_next of the last answer). */
	bool stream_open;
	int64_t stream_after;
};

/* How long to wait, and for a change of which room. */
struct chat_hold {
	unsigned ms;
	char room[CHAT_ROOM_MAX + 1];
};

/* What the server is to do with a response. */
enum chat_kind {
	/* Send status, headers and body; the request ends. */
	CHAT_ANSWER,
	/*
	 * A long-poll with nothing to answer yet (status 0). The server keeps
	 * the request without a thread and asks again, with the same request,
	 * once hold.room changes (here or in another process sharing the
	 * store) or hold.ms have passed (then with CHAT_HOLD_OVER). A second
	 * hold keeps the first deadline.
	 */
	CHAT_HOLD,
	/*
	 * A part of an open event stream (status 200, EVENTS_CONTENT_TYPE):
	 * send body now, possibly empty, and keep the stream open. The server
	 * asks again with stream_open and stream_after = stream_next: with
	 * hold.ms 0 once this part is sent, else on a change of hold.room or
	 * after hold.ms (then with CHAT_HOLD_OVER: a part is due, if only a
	 * keep-alive comment). Asked with stream_open, any other kind ends
	 * the stream, its body the last thing sent.
	 */
	CHAT_STREAM,
	/* A streamed reply (status 200, EVENTS_CONTENT_TYPE): body is the
	 * whole event stream, sent one event at a time, pace_ms apart. */
	CHAT_PACED,
	/* A post to store (lim->defer_posts; status 0): the server passes post
	 * to chat_post_queue, or chat_post_store, then chat_post_finish. */
	CHAT_POST,
	/* A read of the store to make (lim->defer_reads; status 0): the server
	 * passes read to chat_read_queue, then chat_read_finish, whose answer
	 * is what the request would have had without the deferral. */
	CHAT_READ
};

/* A post in the making (rooms.h): one allocation, which free() releases. */
struct chat_post;

/* A read in the making (room_read.h). Its first member says how to free
 * it, so that chat_response_free can without knowing the rest. */
struct chat_read;
struct chat_read_head {
	void (*free)(struct chat_read *read);
};

struct chat_response {
	enum chat_kind kind;
	int status;               /* HTTP status */
	unsigned retry_after;     /* seconds, for a Retry-After header; 0: none */
	const char *allow;        /* value of an Allow header, or NULL */
	const char *content_type; /* NULL: CHAT_CONTENT_TYPE */
	const char *reason;       /* why it failed, for the log; NULL on 200 */
	char *body;               /* JSON text, UTF-8 */
	size_t body_len;
	bool body_owned;  /* body was allocated: chat_response_free releases it */
	bool store_error; /* the store failed: counted in the metrics */
	/* A room this request added entries to ("" if none): the server wakes
	 * the requests held on it. */
	char changed_room[CHAT_ROOM_MAX + 1];
	/* What the kinds above carry. */
	struct chat_hold hold;  /* CHAT_HOLD, CHAT_STREAM */
	int64_t stream_next;    /* CHAT_STREAM: the stream_after to ask with */
	unsigned pace_ms;       /* CHAT_PACED */
	struct chat_post *post; /* CHAT_POST */
	struct chat_read *read; /* CHAT_READ */
};

/* A CHAT_ANSWER with a constant body ({"error":"..."}); reason goes to the
 * log. */
void chat_set_error(struct chat_response *res, int status, const char *body, const char *reason);

/* A CHAT_ANSWER made of head, text escaped as the inside of a JSON string,
 * and tail (all NUL-terminated; the body is malloc'd). */
void chat_set_escaped(struct chat_response *res, int status, const char *head, const char *text,
		      const char *tail, const char *reason);

/* The 503 answer when memory runs out; reason goes to the log. */
void chat_out_of_memory(struct chat_response *res, const char *reason);

/* Releases what res owns (its body, its post); res is then a CHAT_ANSWER. */
void chat_response_free(struct chat_response *res);

#endif
