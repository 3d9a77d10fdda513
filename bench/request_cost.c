/*
 * Runs chat_respond() on one request body many times, for callgrind: the
 * instruction count of a run with N requests minus one with fewer requests
 * is the cost of those requests alone, start-up cancelled out.
 *
 *   request_cost run BODY N    answer the request N times (exit 1 unless 200)
 *   request_cost body BODY     print the request body
 *   request_cost reply BODY    print what chat_respond answers to it
 *   request_cost optimized     print "yes" when built with optimisation
 *
 * BODY is "hello" ({"message":"hello"}, the benchmark's small request) or a
 * size in bytes (16 to 16M, K and M suffixes): a JSON body of exactly that
 * size, whose message mixes ASCII, 2-, 3- and 4-byte UTF-8 and escapes.
 * bench/run sends the same bodies over HTTP.
 */
#include "chat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One sentence of a chat message: every class of character the request
 * path validates and escapes. No '$', so nginx can return the reply as is. */
static const char PATTERN[] = "Hello, w\xc3\xb6rld! \xec\x95\x88\xeb\x85\x95 \xf0\x9f\x98\x80 "
			      "\\\"quoted\\\" tab\\t new\\nline. ";

static const char HEAD[] = "{\"message\":\"";
static const char TAIL[] = "\"}";

#define BODY_MIN ((size_t)16)
#define BODY_MAX ((size_t)16 * 1024 * 1024)

static int usage(void)
{
	fputs("usage: request_cost run BODY N | body BODY | reply BODY | optimized\n"
	      "  BODY: hello, or a body size in bytes (16..16M, K/M suffixes)\n",
	      stderr);
	return 2;
}

static int parse_size(const char *s, size_t max, size_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	if (*end == 'K' || *end == 'k') {
		v *= 1024;
		end++;
	} else if (*end == 'M' || *end == 'm') {
		v *= 1024 * 1024;
		end++;
	}
	if (*end || v > max)
		return -1;
	*out = (size_t)v;
	return 0;
}

/* A body of exactly size bytes: whole sentences, then ASCII padding, so no
 * UTF-8 sequence or escape is cut. */
static char *make_body(const char *spec, size_t *len)
{
	if (strcmp(spec, "hello") == 0) {
		static const char hello[] = "{\"message\":\"hello\"}";
		char *b = malloc(sizeof hello);
		if (b)
			memcpy(b, hello, sizeof hello);
		*len = sizeof hello - 1;
		return b;
	}
	size_t size;
	if (parse_size(spec, BODY_MAX, &size) != 0 || size < BODY_MIN)
		return NULL;
	char *b = malloc(size + 1);
	if (!b)
		return NULL;
	size_t text_room = size - (sizeof HEAD - 1) - (sizeof TAIL - 1);
	char *p = b;
	memcpy(p, HEAD, sizeof HEAD - 1);
	p += sizeof HEAD - 1;
	char *text_end = p + text_room;
	while ((size_t)(text_end - p) >= sizeof PATTERN - 1) {
		memcpy(p, PATTERN, sizeof PATTERN - 1);
		p += sizeof PATTERN - 1;
	}
	memset(p, 'x', (size_t)(text_end - p));
	p = text_end;
	memcpy(p, TAIL, sizeof TAIL);
	*len = size;
	return b;
}

static void fill_request(struct chat_request *req, const char *body, size_t len, char *length)
{
	memset(req, 0, sizeof *req);
	req->method = "POST";
	req->path = "/chat/";
	req->content_type = "application/json";
	req->content_length = length;
	req->body = body;
	req->body_len = len;
	req->hold_mode = CHAT_HOLD_ALLOWED;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "optimized") == 0) {
#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__)
		puts("yes");
#else
		puts("no");
#endif
		return 0;
	}
	if (argc < 3)
		return usage();
	const char *cmd = argv[1];
	size_t runs = 1;
	if (strcmp(cmd, "run") == 0) {
		if (argc != 4 || parse_size(argv[3], (size_t)1 << 40, &runs) != 0)
			return usage();
	} else if ((strcmp(cmd, "body") != 0 && strcmp(cmd, "reply") != 0) || argc != 3) {
		return usage();
	}

	size_t len;
	char *body = make_body(argv[2], &len);
	if (!body) {
		fprintf(stderr, "request_cost: bad body size %s (or out of memory)\n", argv[2]);
		return usage();
	}
	int rc = 0;
	if (strcmp(cmd, "body") == 0) {
		if (fwrite(body, 1, len, stdout) != len)
			rc = 1;
		free(body);
		return rc;
	}

	char length[32];
	snprintf(length, sizeof length, "%zu", len);
	struct chat_request req;
	fill_request(&req, body, len, length);
	const struct chat_limits lim = {.max_body = BODY_MAX};
	for (size_t i = 0; i < runs && rc == 0; i++) {
		struct chat_response res;
		chat_respond(&req, &lim, &res);
		if (res.kind != CHAT_ANSWER || res.status != 200) {
			fprintf(stderr, "request_cost: kind %d, status %d: %.*s\n", (int)res.kind,
				res.status, (int)res.body_len, res.body);
			rc = 1;
		} else if (strcmp(cmd, "reply") == 0 &&
			   fwrite(res.body, 1, res.body_len, stdout) != res.body_len) {
			rc = 1;
		}
		chat_response_free(&res);
	}
	free(body);
	return rc;
}
