#include "server.h"

#include "log.h"

#include <errno.h>
#include <fcgiapp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Worker stacks: the parsers recurse at most CHAT_JSON_MAX_DEPTH deep, so a
 * small stack is plenty and keeps many threads cheap. */
#define WORKER_STACK ((size_t)256 * 1024)
/* A rejected body is read and thrown away so that a kept connection stays
 * in step; past this much the connection is closed instead. */
#define DRAIN_LIMIT ((size_t)1024 * 1024)

struct server {
	struct server_config cfg;
	int wake[2]; /* written once at stop: wakes every worker's poll */
	atomic_bool stopping;
	atomic_ulong served;
	pthread_mutex_t lock;
	pthread_cond_t done;
	unsigned running; /* workers still in their loop, under lock */
};

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

/* Reads and discards what is left of the body; false if the connection must
 * be closed because the client sent too much. */
static bool drain_body(FCGX_Stream *in)
{
	char scratch[8192];
	size_t total = 0;
	int n;
	while ((n = FCGX_GetStr(scratch, sizeof scratch, in)) > 0) {
		total += (size_t)n;
		if (total > DRAIN_LIMIT)
			return false;
	}
	return true;
}

/*
 * Reads the body into a buffer of at most max_body + 1 bytes: the one byte
 * more than allowed tells a body over the limit (or longer than announced)
 * apart from one at it. Sets *gone when the client went away mid-body and
 * *oom when memory ran out; both return NULL.
 */
static char *read_body(FCGX_Stream *in, size_t announced, size_t max_body, size_t *len, bool *gone,
		       bool *oom)
{
	size_t limit = max_body + 1;
	size_t cap = announced ? announced + 1 : (limit < 1024 ? limit : 1024);
	size_t used = 0;
	char *buf = malloc(cap);

	*len = 0;
	if (!buf) {
		*oom = true;
		return NULL;
	}
	for (;;) {
		if (used == cap) {
			if (cap == limit)
				break; /* over the limit: chat_respond answers 413 */
			size_t next = cap > limit / 2 ? limit : cap * 2;
			char *grown = realloc(buf, next);
			if (!grown) {
				free(buf);
				*oom = true;
				return NULL;
			}
			buf = grown;
			cap = next;
		}
		/* cap is at most OPTIONS_MAX_BODY_LIMIT + 1, far below INT_MAX. */
		int n = FCGX_GetStr(buf + used, (int)(cap - used), in);
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	if (FCGX_GetError(in) != 0) {
		free(buf);
		*gone = true;
		return NULL;
	}
	*len = used;
	return buf;
}

static int write_response(FCGX_Stream *out, const struct chat_response *res)
{
	char head[256];
	int n = snprintf(head, sizeof head,
			 "Status: %d %s\r\n"
			 "Content-Type: " CHAT_CONTENT_TYPE "\r\n"
			 "Content-Length: %zu\r\n"
			 "Cache-Control: no-store\r\n"
			 "%s%s%s"
			 "\r\n",
			 res->status, status_text(res->status), res->body_len,
			 res->allow ? "Allow: " : "", res->allow ? res->allow : "",
			 res->allow ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof head)
		return -1;
	if (FCGX_PutStr(head, n, out) != n)
		return -1;
	/* Bodies are at most a few times max_body, far below INT_MAX. */
	if (FCGX_PutStr(res->body, (int)res->body_len, out) != (int)res->body_len)
		return -1;
	return 0;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void log_request(FCGX_Request *req, const struct chat_response *res,
			const struct timespec *t0)
{
	enum log_level level = res->status == 200 ? LOG_DEBUG : LOG_NOTICE;
	if (!log_enabled(level))
		return;
	char method[16], uri[256];
	log_clean(method, sizeof method, FCGX_GetParam("REQUEST_METHOD", req->envp));
	log_clean(uri, sizeof uri, FCGX_GetParam("REQUEST_URI", req->envp));
	log_msg(level, "%d %s %s %.2f ms%s%s", res->status, method, uri, ms_since(t0),
		res->reason ? ": " : "", res->reason ? res->reason : "");
}

static void handle(struct server *srv, FCGX_Request *req)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);

	/* The path is REQUEST_URI without its query: nginx may have rewritten
	 * DOCUMENT_URI to the index file. */
	const char *uri = FCGX_GetParam("REQUEST_URI", req->envp);
	char path[64];
	const char *path_arg = NULL;
	if (uri) {
		size_t n = strcspn(uri, "?");
		if (n < sizeof path) {
			memcpy(path, uri, n);
			path[n] = '\0';
			path_arg = path;
		} else {
			path_arg = ""; /* longer than any path served here */
		}
	}
	struct chat_request creq = {
	    .method = FCGX_GetParam("REQUEST_METHOD", req->envp),
	    .path = path_arg,
	    .query = FCGX_GetParam("QUERY_STRING", req->envp),
	    .content_type = FCGX_GetParam("CONTENT_TYPE", req->envp),
	    .content_length = FCGX_GetParam("CONTENT_LENGTH", req->envp),
	};
	struct chat_response res;
	size_t announced;
	char *body = NULL;

	if (chat_check_head(&creq, &srv->cfg.limits, &res, &announced) == CHAT_HEAD_REJECTED) {
		if (!drain_body(req->in))
			req->keepConnection = 0;
	} else {
		bool gone = false, oom = false;
		body = read_body(req->in, announced, srv->cfg.limits.max_body, &creq.body_len,
				 &gone, &oom);
		if (gone) {
			char u[256];
			log_clean(u, sizeof u, uri);
			log_msg(LOG_NOTICE, "client went away mid-body (%zu bytes announced) on %s",
				announced, u);
			req->keepConnection = 0;
			return;
		}
		if (oom) {
			chat_out_of_memory(&res, "out of memory reading the body");
			req->keepConnection = 0; /* the rest of the body is unread */
		} else {
			creq.body = body;
			chat_respond(&creq, &srv->cfg.limits, &res);
			if (res.status == 0) {
				/* A long-poll: this server cannot hold one without a
				 * thread, so it answers at once as if full. */
				creq.hold_mode = CHAT_HOLD_FULL;
				chat_respond(&creq, &srv->cfg.limits, &res);
			}
		}
		if (creq.body_len > srv->cfg.limits.max_body && !drain_body(req->in))
			req->keepConnection = 0;
	}

	if (write_response(req->out, &res) != 0)
		log_msg(LOG_DEBUG, "could not send the answer: the connection is gone");
	log_request(req, &res, &t0);
	chat_response_free(&res);
	free(body);
	atomic_fetch_add(&srv->served, 1);
}

/* Waits until fd has something to read or the server stops. */
static bool wait_readable(struct server *srv, int fd)
{
	struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = srv->wake[0], .events = POLLIN}};
	for (;;) {
		if (atomic_load(&srv->stopping))
			return false;
		int n = poll(p, 2, -1);
		if (n < 0 && errno != EINTR)
			return false;
		if (n > 0)
			return !atomic_load(&srv->stopping);
	}
}

static void *worker(void *arg)
{
	struct server *srv = arg;
	FCGX_Request req;

	if (FCGX_InitRequest(&req, srv->cfg.listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0) {
		log_msg(LOG_ERROR, "cannot set up a request: out of memory");
	} else {
		for (;;) {
			/* A kept connection brings its next request on the same fd. */
			int fd = req.ipcFd >= 0 ? req.ipcFd : srv->cfg.listen_fd;
			if (!wait_readable(srv, fd)) {
				/* An idle kept connection owes nobody an answer: close
				 * it without libfcgi's wait of up to 2 s for the peer. */
				if (req.ipcFd >= 0)
					req.detached = 1;
				break;
			}
			int rc = FCGX_Accept_r(&req);
			if (rc < 0) {
				if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR)
					continue; /* another thread took the connection */
				if (atomic_load(&srv->stopping))
					break;
				log_msg(LOG_ERROR, "accept failed: %s", strerror(-rc));
				if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM ||
				    rc == -ENOBUFS) {
					/* Out of descriptors: back off rather than spin. */
					struct timespec pause = {0, 100 * 1000 * 1000};
					nanosleep(&pause, NULL);
				}
				continue;
			}
			handle(srv, &req);
			if (atomic_load(&srv->stopping))
				req.keepConnection = 0;
			FCGX_Finish_r(&req);
		}
		FCGX_Free(&req, 1);
	}

	pthread_mutex_lock(&srv->lock);
	srv->running--;
	pthread_cond_signal(&srv->done);
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

struct server *server_start(const struct server_config *cfg)
{
	struct server *srv = calloc(1, sizeof *srv);
	if (!srv) {
		log_msg(LOG_ERROR, "out of memory");
		return NULL;
	}
	srv->cfg = *cfg;
	if (pipe(srv->wake) != 0) {
		log_msg(LOG_ERROR, "pipe: %s", strerror(errno));
		free(srv);
		return NULL;
	}
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->done, NULL);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, WORKER_STACK);
	for (unsigned i = 0; i < cfg->threads; i++) {
		pthread_t t;
		pthread_mutex_lock(&srv->lock);
		srv->running++;
		pthread_mutex_unlock(&srv->lock);
		int err = pthread_create(&t, &attr, worker, srv);
		if (err != 0) {
			pthread_mutex_lock(&srv->lock);
			srv->running--;
			pthread_mutex_unlock(&srv->lock);
			log_msg(LOG_ERROR, "cannot start thread %u of %u: %s", i + 1, cfg->threads,
				strerror(err));
			pthread_attr_destroy(&attr);
			server_stop(srv, 1000);
			return NULL;
		}
	}
	pthread_attr_destroy(&attr);
	return srv;
}

unsigned long server_stop(struct server *srv, unsigned grace_ms)
{
	atomic_store(&srv->stopping, true);
	FCGX_ShutdownPending();
	ssize_t w;
	do
		w = write(srv->wake[1], "x", 1);
	while (w < 0 && errno == EINTR);

	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += grace_ms / 1000;
	deadline.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&srv->lock);
	while (srv->running > 0 &&
	       pthread_cond_timedwait(&srv->done, &srv->lock, &deadline) != ETIMEDOUT)
		;
	unsigned left = srv->running;
	pthread_mutex_unlock(&srv->lock);

	unsigned long served = atomic_load(&srv->served);
	if (left > 0) {
		/* Still inside a request after the grace period: the process exits
		 * under them, so their state must stay allocated. */
		log_msg(LOG_NOTICE, "%u request(s) still running at exit", left);
		return served;
	}
	close(srv->wake[0]);
	close(srv->wake[1]);
	pthread_mutex_destroy(&srv->lock);
	pthread_cond_destroy(&srv->done);
	free(srv);
	return served;
}
