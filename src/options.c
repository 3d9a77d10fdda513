#include "options.h"

#include "allow.h"
#include "chat.h"
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
	fprintf(out, "usage: chat-fcgi [--listen unix:PATH|HOST:PORT] [--socket-mode MODE]\n"
		     "                 [--allow-from ADDR[/BITS],...]\n"
		     "                 [--threads N] [--pollers N] [--max-waits N]\n"
		     "                 [--max-streams N] [--stream-pace MS] [--max-body BYTES]\n"
		     "                 [--max-posts N] [--max-queue BYTES]\n"
		     "                 [--send-timeout S] [--receive-timeout S]\n"
		     "                 [--store sqlite:PATH|postgresql://...|none]\n"
		     "                 [--room-history N]\n"
		     "                 [--store-sync full|normal] [--no-sandbox]\n"
		     "                 [--quiet|--verbose] [--help] [--version]\n");
}

static void help(void)
{
	usage(stdout);
	printf("\n"
	       "A FastCGI backend for the chat page: answers POST /chat/ with\n"
	       "{\"message\":\"received <message>\"}. Without --listen it serves the\n"
	       "listening socket on fd 0, as spawn-fcgi passes it.\n"
	       "\n"
	       "  -l, --listen ADDR      listen on unix:PATH or HOST:PORT itself\n"
	       "  -m, --socket-mode MODE permissions of a unix socket (octal; default 0660)\n"
	       "      --allow-from LIST  on TCP, accept only these peers: addresses with\n"
	       "                         optional prefix lengths, comma-separated\n"
	       "                         (default: FCGI_WEB_SERVER_ADDRS, else any)\n"
	       "  -t, --threads N        threads that work on requests (default %u); no\n"
	       "                         thread ever waits on a connection or the store\n"
	       "      --pollers N        of those, how many take events at once\n"
	       "                         (default: half the CPUs, 1 below 4); the\n"
	       "                         others stand in while one works long\n"
	       "  -w, --max-waits N      long-polls held at once (default %u); past it,\n"
	       "                         polls are answered at once with \"busy\"\n"
	       "      --max-streams N    event streams (GET /chat/events) open at once\n"
	       "                         (default %u); past it, 503 at once, and the\n"
	       "                         page long-polls instead\n"
	       "      --stream-pace MS   pause between the parts of a streamed reply\n"
	       "                         (default 0: send them at once)\n"
	       "  -b, --max-body BYTES   largest request body; K or M suffix allowed\n"
	       "                         (default 64K, as nginx's client_max_body_size)\n"
	       "      --max-posts N      posts waiting for the store at once (default\n"
	       "                         %u); past it, 503 with Retry-After\n"
	       "      --max-queue BYTES  unsent answer bytes a connection may hold when\n"
	       "                         more is to be added; past it, it is closed\n"
	       "                         (default 1M)\n"
	       "      --send-timeout S   a connection that takes none of its answer for\n"
	       "                         S seconds is closed (default %u)\n"
	       "      --receive-timeout S  a request's head, then its body, must arrive\n"
	       "                         whole within S seconds each (default %u)\n"
	       "  -s, --store SPEC       the rooms' history: sqlite:PATH (created if\n"
	       "                         missing; its directory must exist),\n"
	       "                         postgresql://... (a libpq URI; several nodes\n"
	       "                         may share the database) or none\n"
	       "                         (default %s)\n"
	       "  -r, --room-history N   entries kept per room (default %u)\n"
	       "      --store-sync MODE  full: an answered post survives a power loss\n"
	       "                         or kernel crash (default); normal: it survives\n"
	       "                         a crash of chat-fcgi only, and a power loss\n"
	       "                         may lose the last posts answered (SQLite)\n"
	       "      --no-sandbox       do not confine the process with seccomp (for\n"
	       "                         debugging, strace, valgrind)\n"
	       "  -q, --quiet            log only failures of the service itself\n"
	       "  -v, --verbose          also log every request\n"
	       "  -h, --help             show this help\n"
	       "  -V, --version          show the version\n",
	       OPTIONS_THREADS_DEFAULT, OPTIONS_MAX_WAITS_DEFAULT, OPTIONS_MAX_STREAMS_DEFAULT,
	       OPTIONS_MAX_POSTS_DEFAULT, OPTIONS_SEND_TIMEOUT_DEFAULT,
	       OPTIONS_RECEIVE_TIMEOUT_DEFAULT, CHAT_STORE_DEFAULT, STORE_HISTORY_DEFAULT);
}

/* A whole number in [min, max], with an optional K or M suffix when
 * scale is allowed. Digits only up front: strtoull would also take leading
 * white space and a sign. */
static int parse_size(const char *s, int base, int scale, unsigned long long min,
		      unsigned long long max, unsigned long long *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || end == s)
		return -1;
	if (scale && (*end == 'k' || *end == 'K')) {
		if (v > max / 1024)
			return -1;
		v *= 1024;
		end++;
	} else if (scale && (*end == 'm' || *end == 'M')) {
		if (v > max / (1024 * 1024))
			return -1;
		v *= 1024 * 1024;
		end++;
	}
	if (*end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* How a numeric option is read, and how its error names what it takes. */
struct number_option {
	const char *name; /* "--threads" */
	enum { NUMBER, OCTAL_MODE, SIZE } kind;
	unsigned long long min, max;
};

/* Reads arg as opt says into *out; on a bad value, says on stderr what the
 * option takes (its range, as the user would write it) and returns -1. */
static int parse_number_option(const struct number_option *opt, const char *arg,
			       unsigned long long *out)
{
	int base = opt->kind == OCTAL_MODE ? 8 : 10;
	if (parse_size(arg, base, opt->kind == SIZE, opt->min, opt->max, out) == 0)
		return 0;
	switch (opt->kind) {
	case OCTAL_MODE:
		fprintf(stderr,
			"chat-fcgi: %s takes octal permissions up to %04llo, such as 0660, "
			"not '%s'\n",
			opt->name, opt->max, arg);
		break;
	case SIZE:
		fprintf(stderr, "chat-fcgi: %s takes a size from %llu to %lluM, not '%s'\n",
			opt->name, opt->min, opt->max / (1024 * 1024), arg);
		break;
	default:
		fprintf(stderr, "chat-fcgi: %s takes a number from %llu to %llu, not '%s'\n",
			opt->name, opt->min, opt->max, arg);
		break;
	}
	return -1;
}

static const struct number_option socket_mode = {"--socket-mode", OCTAL_MODE, 0, 0777};
static const struct number_option threads = {"--threads", NUMBER, 1, OPTIONS_THREADS_MAX};
static const struct number_option max_waits = {"--max-waits", NUMBER, 0, OPTIONS_MAX_WAITS_MAX};
static const struct number_option pollers = {"--pollers", NUMBER, 1, OPTIONS_THREADS_MAX};
static const struct number_option max_streams = {"--max-streams", NUMBER, 0,
						 OPTIONS_MAX_STREAMS_MAX};
static const struct number_option stream_pace = {"--stream-pace", NUMBER, 0,
						 OPTIONS_STREAM_PACE_MAX};
/* Its error says the limit in M. */
_Static_assert(OPTIONS_MAX_BODY_LIMIT % (1024 * 1024) == 0, "--max-body's limit is whole MiB");
static const struct number_option max_body = {"--max-body", SIZE, 1, OPTIONS_MAX_BODY_LIMIT};
static const struct number_option room_history = {"--room-history", NUMBER, 1, STORE_HISTORY_MAX};
static const struct number_option max_posts = {"--max-posts", NUMBER, 1, OPTIONS_MAX_POSTS_MAX};
_Static_assert(OPTIONS_MAX_QUEUE_LIMIT % (1024 * 1024) == 0, "--max-queue's limit is whole MiB");
static const struct number_option max_queue = {"--max-queue", SIZE, 1, OPTIONS_MAX_QUEUE_LIMIT};
static const struct number_option send_timeout = {"--send-timeout", NUMBER, 1, OPTIONS_TIMEOUT_MAX};
static const struct number_option receive_timeout = {"--receive-timeout", NUMBER, 1,
						     OPTIONS_TIMEOUT_MAX};

enum options_result options_parse(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"socket-mode", required_argument, NULL, 'm'},
	    {"threads", required_argument, NULL, 't'},
	    {"max-waits", required_argument, NULL, 'w'},
	    {"pollers", required_argument, NULL, 'O'},
	    {"max-streams", required_argument, NULL, 'E'},
	    {"stream-pace", required_argument, NULL, 'P'},
	    {"max-body", required_argument, NULL, 'b'},
	    {"store", required_argument, NULL, 's'},
	    {"room-history", required_argument, NULL, 'r'},
	    {"store-sync", required_argument, NULL, 'Y'},
	    {"max-posts", required_argument, NULL, 'A'},
	    {"allow-from", required_argument, NULL, 'F'},
	    {"max-queue", required_argument, NULL, 'Q'},
	    {"send-timeout", required_argument, NULL, 'T'},
	    {"receive-timeout", required_argument, NULL, 'R'},
	    {"no-sandbox", no_argument, NULL, 'S'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	unsigned long long v;
	int c;

	*opt = (struct options){
	    .socket_mode = OPTIONS_SOCKET_MODE_DEFAULT,
	    .threads = OPTIONS_THREADS_DEFAULT,
	    .max_waits = OPTIONS_MAX_WAITS_DEFAULT,
	    .max_streams = OPTIONS_MAX_STREAMS_DEFAULT,
	    .max_body = CHAT_MAX_BODY_DEFAULT,
	    .verbosity = 1,
	    .store_path = CHAT_STORE_DEFAULT + sizeof "sqlite:" - 1,
	    .room_history = STORE_HISTORY_DEFAULT,
	    .max_posts = OPTIONS_MAX_POSTS_DEFAULT,
	    .max_queue = OPTIONS_MAX_QUEUE_DEFAULT,
	    .send_timeout_s = OPTIONS_SEND_TIMEOUT_DEFAULT,
	    .receive_timeout_s = OPTIONS_RECEIVE_TIMEOUT_DEFAULT,
	    .sandbox = true,
	    .store_sync_full = true,
	};
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":l:m:t:w:b:s:r:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (strncmp(optarg, "unix:", 5) != 0 && !strchr(optarg, ':')) {
				fprintf(stderr,
					"chat-fcgi: --listen takes unix:PATH or HOST:PORT, "
					"not '%s'\n",
					optarg);
				goto bad;
			}
			opt->listen = optarg;
			break;
		case 'm':
			if (parse_number_option(&socket_mode, optarg, &v) != 0)
				goto bad;
			opt->socket_mode = (mode_t)v;
			break;
		case 't':
			if (parse_number_option(&threads, optarg, &v) != 0)
				goto bad;
			opt->threads = (unsigned)v;
			break;
		case 'w':
			if (parse_number_option(&max_waits, optarg, &v) != 0)
				goto bad;
			opt->max_waits = (unsigned)v;
			break;
		case 'O':
			if (parse_number_option(&pollers, optarg, &v) != 0)
				goto bad;
			opt->pollers = (unsigned)v;
			break;
		case 'E':
			if (parse_number_option(&max_streams, optarg, &v) != 0)
				goto bad;
			opt->max_streams = (unsigned)v;
			break;
		case 'P':
			if (parse_number_option(&stream_pace, optarg, &v) != 0)
				goto bad;
			opt->stream_pace_ms = (unsigned)v;
			break;
		case 'b':
			if (parse_number_option(&max_body, optarg, &v) != 0)
				goto bad;
			opt->max_body = (size_t)v;
			break;
		case 's':
			if (strcmp(optarg, "none") == 0) {
				opt->store_path = NULL;
			} else if (strncmp(optarg, "sqlite:", 7) == 0 && optarg[7]) {
				opt->store_path = optarg + 7;
			} else if (store_is_postgresql(optarg)) {
				opt->store_path = optarg; /* store_open tells them apart */
			} else {
				fprintf(stderr,
					"chat-fcgi: --store takes sqlite:PATH, postgresql://... or "
					"none, not '%s'\n",
					optarg);
				goto bad;
			}
			break;
		case 'r':
			if (parse_number_option(&room_history, optarg, &v) != 0)
				goto bad;
			opt->room_history = (unsigned)v;
			break;
		case 'Y':
			if (strcmp(optarg, "normal") != 0 && strcmp(optarg, "full") != 0) {
				fprintf(stderr,
					"chat-fcgi: --store-sync takes normal or full, not '%s'\n",
					optarg);
				goto bad;
			}
			opt->store_sync_full = strcmp(optarg, "full") == 0;
			break;
		case 'F': {
			struct allow_list probe;
			char why[160];
			if (allow_parse(&probe, optarg, why, sizeof why) != 0) {
				fprintf(stderr, "chat-fcgi: --allow-from: %s\n", why);
				goto bad;
			}
			opt->allow_from = optarg;
			break;
		}
		case 'A':
			if (parse_number_option(&max_posts, optarg, &v) != 0)
				goto bad;
			opt->max_posts = (unsigned)v;
			break;
		case 'Q':
			if (parse_number_option(&max_queue, optarg, &v) != 0)
				goto bad;
			opt->max_queue = (size_t)v;
			break;
		case 'T':
			if (parse_number_option(&send_timeout, optarg, &v) != 0)
				goto bad;
			opt->send_timeout_s = (unsigned)v;
			break;
		case 'R':
			if (parse_number_option(&receive_timeout, optarg, &v) != 0)
				goto bad;
			opt->receive_timeout_s = (unsigned)v;
			break;
		case 'S':
			opt->sandbox = false;
			break;
		case 'q':
			opt->verbosity = 0;
			break;
		case 'v':
			opt->verbosity = 2;
			break;
		case 'h':
			help();
			return OPTIONS_EXIT;
		case 'V':
			printf("chat-fcgi %s\n", VERSION_STRING);
			return OPTIONS_EXIT;
		case ':':
			fprintf(stderr, "chat-fcgi: option '%s' needs a value\n", argv[optind - 1]);
			goto bad;
		default:
			fprintf(stderr, "chat-fcgi: unknown option '%s'\n", argv[optind - 1]);
			goto bad;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "chat-fcgi: unexpected argument '%s'\n", argv[optind]);
		goto bad;
	}
	return OPTIONS_RUN;
bad:
	usage(stderr);
	return OPTIONS_USAGE;
}
