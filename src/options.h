/* Command-line options of chat-fcgi. */
#ifndef OPTIONS_H
#define OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Threads only ever work: none waits on a connection, a held long-poll or
 * a post at the store (see src/server/loop.c), so a few per core are
 * enough. */
#define OPTIONS_THREADS_DEFAULT 8u
#define OPTIONS_THREADS_MAX     512u
/* Long-polls held at once; each costs its connection's state and libfcgi's
 * parameters, and one nginx connection, no thread. */
#define OPTIONS_MAX_WAITS_DEFAULT 2048u
#define OPTIONS_MAX_WAITS_MAX     100000u
/* Event streams open at once; each costs what a held long-poll costs, and
 * two nginx connections for as long as the page stays open. */
#define OPTIONS_MAX_STREAMS_DEFAULT 2048u
#define OPTIONS_MAX_STREAMS_MAX     100000u
#define OPTIONS_STREAM_PACE_MAX     10000u
/* Posts waiting for the store at once; each keeps a copy of its message. */
#define OPTIONS_MAX_POSTS_DEFAULT 256u
#define OPTIONS_MAX_POSTS_MAX     100000u
/* Unsent bytes a connection may hold before more is added: an event
 * stream's part is at most EVENTS_PART_MAX and an entry, well below it. */
#define OPTIONS_MAX_QUEUE_DEFAULT ((size_t)1024 * 1024)
#define OPTIONS_MAX_QUEUE_LIMIT   ((size_t)1024 * 1024 * 1024)
/* Seconds a reader may take nothing of what is queued for it: nginx's own
 * send_timeout. */
#define OPTIONS_SEND_TIMEOUT_DEFAULT 60u
/* Seconds a request's head, and then its body, may take to arrive: nginx
 * sends a buffered request at once, so only a broken or hostile peer is
 * ever cut off. */
#define OPTIONS_RECEIVE_TIMEOUT_DEFAULT 10u
#define OPTIONS_TIMEOUT_MAX             3600u
#define OPTIONS_SOCKET_MODE_DEFAULT     0660
/* A chat message has no business being larger; it bounds every buffer. */
#define OPTIONS_MAX_BODY_LIMIT ((size_t)16 * 1024 * 1024)

struct options {
	const char *listen;     /* "unix:PATH" or "HOST:PORT"; NULL: the socket on fd 0 */
	const char *allow_from; /* peers a TCP socket accepts; NULL: all */
	mode_t socket_mode;
	unsigned threads;
	unsigned pollers; /* threads taking events at once; 0: half the CPUs, 1 below 4 */
	unsigned max_waits;
	unsigned max_streams;
	unsigned stream_pace_ms; /* between the events of a streamed reply */
	unsigned max_posts;
	size_t max_queue;
	unsigned send_timeout_s;
	unsigned receive_timeout_s;
	size_t max_body;
	int verbosity;          /* 0 --quiet, 1 default, 2 --verbose */
	const char *store_path; /* the SQLite file or a postgresql:// URI; NULL: none */
	unsigned room_history;  /* entries kept per room */
	bool store_sync_full;   /* --store-sync full (the default), not normal */
	bool sandbox;           /* confine with seccomp once started; --no-sandbox clears it */
};

enum options_result {
	OPTIONS_RUN,  /* go on and serve */
	OPTIONS_EXIT, /* --help or --version was printed: exit 0 */
	OPTIONS_USAGE /* a bad option: usage was printed, exit 2 */
};

enum options_result options_parse(int argc, char **argv, struct options *opt);

#endif
