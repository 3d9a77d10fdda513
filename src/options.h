/* Command-line options of chat-fcgi. */
#ifndef OPTIONS_H
#define OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Threads only ever work: none waits on an idle connection or a held
 * long-poll (see server.c), so a few per core are enough. */
#define OPTIONS_THREADS_DEFAULT 8u
#define OPTIONS_THREADS_MAX     512u
/* Long-polls held at once; each costs about 20 KiB (libfcgi's buffers) and
 * one nginx connection, no thread. */
#define OPTIONS_MAX_WAITS_DEFAULT 2048u
#define OPTIONS_MAX_WAITS_MAX     100000u
/* Event streams open at once; each costs what a held long-poll costs, and
 * two nginx connections for as long as the page stays open. */
#define OPTIONS_MAX_STREAMS_DEFAULT 2048u
#define OPTIONS_MAX_STREAMS_MAX     100000u
#define OPTIONS_STREAM_PACE_MAX     10000u
#define OPTIONS_SOCKET_MODE_DEFAULT 0660
/* A chat message has no business being larger; it bounds every buffer. */
#define OPTIONS_MAX_BODY_LIMIT ((size_t)16 * 1024 * 1024)

struct options {
	const char *listen; /* "unix:PATH" or "HOST:PORT"; NULL: the socket on fd 0 */
	mode_t socket_mode;
	unsigned threads;
	unsigned pollers; /* threads taking requests at once; 0: half the CPUs, 2 at least */
	unsigned max_waits;
	unsigned max_streams;
	unsigned stream_pace_ms; /* between the events of a streamed reply */
	size_t max_body;
	int verbosity;          /* 0 --quiet, 1 default, 2 --verbose */
	const char *store_path; /* the SQLite file; NULL: --store none */
	unsigned room_history;  /* entries kept per room */
	bool store_sync_full;   /* --store-sync full */
	bool sandbox;           /* confine with seccomp once started; --no-sandbox clears it */
};

enum options_result {
	OPTIONS_RUN,  /* go on and serve */
	OPTIONS_EXIT, /* --help or --version was printed: exit 0 */
	OPTIONS_USAGE /* a bad option: usage was printed, exit 2 */
};

enum options_result options_parse(int argc, char **argv, struct options *opt);

#endif
