/*
 * The FastCGI records of one connection, read as they arrive.
 *
 * Every byte a peer sends is walked here before anything else looks at it:
 * the record framing (version, type, request id, lengths, padding), which
 * records may come when, and the name-value pairs of the parameters. The
 * rules are the FastCGI 1.0 specification's, for a responder that takes one
 * request at a time on a connection (FCGI_MPXS_CONNS 0): management records
 * (request id 0) may come at any time; a request is BEGIN_REQUEST, PARAMS
 * up to an empty one, STDIN up to an empty one; ABORT_REQUEST may end it.
 * Anything else is the peer breaking the protocol, and the connection is
 * closed.
 *
 * Pure: bytes in, events out. No I/O, no libfcgi; the record reader keeps
 * no bytes of its own but a record header cut short, so a slow or hostile
 * peer costs this struct and nothing more.
 */
#ifndef RECORDS_H
#define RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most parameter bytes a request may bring: nginx sends a few hundred
 * bytes plus the client's headers, which its own buffers (32 KiB by default)
 * bound. It also bounds every name and value that libfcgi allocates. */
#define RECORDS_PARAMS_MAX ((size_t)64 * 1024)

/* The variables of FCGI_GET_VALUES this reader knows (specification,
 * section 4.1), as bits of fcgi_event.asked. */
#define RECORDS_ASK_MAX_CONNS  1u
#define RECORDS_ASK_MAX_REQS   2u
#define RECORDS_ASK_MPXS_CONNS 4u

enum records_event {
	RECORDS_MORE,         /* every byte given is used: read more */
	RECORDS_BEGIN,        /* a request begins: id, keep_conn */
	RECORDS_PARAMS,       /* data, len: the next piece of the parameter stream */
	RECORDS_PARAMS_END,   /* the parameters are whole, every pair complete */
	RECORDS_STDIN,        /* data, len: the next piece of the body */
	RECORDS_STDIN_END,    /* the body is whole: the request has all it needs */
	RECORDS_ABORT,        /* the web server aborts the request in progress */
	RECORDS_GET_VALUES,   /* answer FCGI_GET_VALUES_RESULT for the asked bits */
	RECORDS_UNKNOWN_TYPE, /* answer FCGI_UNKNOWN_TYPE naming type */
	RECORDS_UNKNOWN_ROLE, /* a request for a role other than responder: id */
	RECORDS_CANT_MPX,     /* a second request while one is in progress: id */
	RECORDS_BROKEN        /* the peer broke the protocol (why): close */
};

/* What one call found. data points into the bytes given to that call. */
struct records_found {
	const unsigned char *data;
	size_t len;
	unsigned id;     /* BEGIN, UNKNOWN_ROLE, CANT_MPX */
	bool keep_conn;  /* BEGIN: FCGI_KEEP_CONN */
	unsigned type;   /* UNKNOWN_TYPE */
	unsigned asked;  /* GET_VALUES: RECORDS_ASK_* bits */
	const char *why; /* BROKEN: a sentence for the log */
};

/* A walk over name-value pairs (specification, section 3.4), across the
 * records that carry them: the two lengths as they come, then the bytes of
 * the name (the first few kept, to recognise a GET_VALUES variable) and of
 * the value. */
struct records_pairs {
	unsigned char lengths[8];
	unsigned lengths_have;
	uint64_t name_left, value_left;
	uint64_t name_total;
	char name[16];
};

/* Where the reader is in the stream of one connection. Zeroed (or
 * records_init) before the first byte. */
struct records {
	unsigned char head[8]; /* a record header still arriving */
	unsigned have;         /* bytes of head so far; 8 once it is whole */
	/* The current record: its type and request id, its content and
	 * padding still to come, and for BEGIN_REQUEST its body so far. */
	unsigned type, record_id;
	bool empty; /* no content: an empty PARAMS or STDIN ends its stream */
	size_t left;
	unsigned padding;
	unsigned char begin[8];
	unsigned begin_have;
	/* The request in progress (id 0: none) and what it has had. */
	unsigned id;
	enum { RECORDS_IDLE, RECORDS_IN_PARAMS, RECORDS_IN_STDIN, RECORDS_WHOLE } phase;
	size_t params;
	struct records_pairs params_pairs;
	/* A GET_VALUES record, which may come between two PARAMS records. */
	struct records_pairs values_pairs;
	unsigned asked;
};

void records_init(struct records *r);

/*
 * Reads from bytes[0, len) until something is found: returns what, with
 * *used the bytes it took (the caller gives the rest to the next call) and
 * *f the details. RECORDS_MORE: all len bytes are used. After
 * RECORDS_BROKEN, RECORDS_UNKNOWN_ROLE or RECORDS_CANT_MPX the connection
 * must not be read further.
 */
enum records_event records_read(struct records *r, const unsigned char *bytes, size_t len,
				size_t *used, struct records_found *f);

/* The request in progress is over (answered, or ended after an abort): the
 * next BEGIN_REQUEST may come. */
void records_request_done(struct records *r);

/* Is a request begun and not yet done? */
bool records_in_request(const struct records *r);

#endif
