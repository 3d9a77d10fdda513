/*
 * libfcgi reading a request's parameters, from memory only.
 *
 * libfcgi keeps its role: it reads the name-value pairs of a request into
 * the envp that FCGX_GetParam and the chat logic use. But it never sees a
 * socket. The record reader (records.c) has already walked every byte and
 * checked every pair, and what libfcgi is given is a stream made here of
 * those parameters alone: one BEGIN_REQUEST, the pairs in PARAMS records,
 * the empty PARAMS that ends them. Its descriptor is FEED_FD, which is
 * never an open file.
 *
 * libfcgi does its I/O through OS_Read and OS_Write, functions of its own
 * OS layer (fcgios.h) that it calls through its procedure linkage table
 * like any exported function, so the dynamic linker binds those calls to
 * the definitions here: OS_Read serves the calling thread's stream and then
 * its end, and OS_Write refuses. server_libfcgi_works() checks at start
 * that the binding holds (a libfcgi linked with -Bsymbolic would not).
 */
#include "params.h"

#include "records.h"

#include <errno.h>
#include <fastcgi.h>
#include <fcgiapp.h>
#include <fcgios.h>
#include <limits.h>
#include <string.h>
#include <sys/uio.h>

/* What libfcgi's requests are given as their connection: no descriptor
 * ever has this number, so not even a close by libfcgi can reach a real
 * file. */
#define FEED_FD INT_MAX

/* The request id of the stream made here; libfcgi only checks that its
 * records agree. */
#define FEED_ID 1

/* The stream OS_Read serves on this thread. */
struct feed {
	struct iovec seg[6];
	int nseg, at_seg;
	size_t at;
	unsigned long writes_refused;
};

static _Thread_local struct feed tl_feed;

int OS_Read(int fd, char *buf, size_t len)
{
	struct feed *f = &tl_feed;
	if (fd != FEED_FD) {
		errno = EBADF;
		return -1;
	}
	size_t n = 0;
	while (n < len && f->at_seg < f->nseg) {
		const struct iovec *s = &f->seg[f->at_seg];
		size_t take = s->iov_len - f->at;
		if (take > len - n)
			take = len - n;
		memcpy(buf + n, (const char *)s->iov_base + f->at, take);
		n += take;
		f->at += take;
		if (f->at == s->iov_len) {
			f->at_seg++;
			f->at = 0;
		}
	}
	/* libfcgi asks for at most its buffer's size, an int. */
	return (int)n;
}

int OS_Write(int fd, char *buf, size_t len)
{
	(void)fd;
	(void)buf;
	(void)len;
	tl_feed.writes_refused++;
	errno = EPIPE;
	return -1;
}

static void header(unsigned char h[FCGI_HEADER_LEN], unsigned type, size_t len)
{
	h[0] = FCGI_VERSION_1;
	h[1] = (unsigned char)type;
	h[2] = 0;
	h[3] = FEED_ID;
	h[4] = (unsigned char)(len >> 8 & 0xff);
	h[5] = (unsigned char)(len & 0xff);
	h[6] = 0;
	h[7] = 0;
}

int params_parse(FCGX_Request *req, const unsigned char *params, size_t len)
{
	/* RECORDS_PARAMS_MAX bounds the pairs: two records at most. */
	_Static_assert(RECORDS_PARAMS_MAX <= 2 * (size_t)FCGI_MAX_LENGTH, "two PARAMS records");
	if (len > RECORDS_PARAMS_MAX)
		return -1;
	unsigned char begin[2 * FCGI_HEADER_LEN] = {0};
	unsigned char h1[FCGI_HEADER_LEN], h2[FCGI_HEADER_LEN], end[FCGI_HEADER_LEN];
	header(begin, FCGI_BEGIN_REQUEST, FCGI_HEADER_LEN);
	begin[FCGI_HEADER_LEN + 1] = FCGI_RESPONDER;
	begin[FCGI_HEADER_LEN + 2] = FCGI_KEEP_CONN;
	size_t first = len < FCGI_MAX_LENGTH ? len : FCGI_MAX_LENGTH;
	header(h1, FCGI_PARAMS, first);
	header(h2, FCGI_PARAMS, len - first);
	header(end, FCGI_PARAMS, 0);

	struct feed *f = &tl_feed;
	f->nseg = 0;
	f->seg[f->nseg++] = (struct iovec){.iov_base = begin, .iov_len = sizeof begin};
	if (first > 0) {
		f->seg[f->nseg++] = (struct iovec){.iov_base = h1, .iov_len = sizeof h1};
		f->seg[f->nseg++] = (struct iovec){.iov_base = (void *)params, .iov_len = first};
	}
	if (len > first) {
		f->seg[f->nseg++] = (struct iovec){.iov_base = h2, .iov_len = sizeof h2};
		f->seg[f->nseg++] =
		    (struct iovec){.iov_base = (void *)(params + first), .iov_len = len - first};
	}
	f->seg[f->nseg++] = (struct iovec){.iov_base = end, .iov_len = sizeof end};
	f->at_seg = 0;
	f->at = 0;

	req->ipcFd = FEED_FD;
	/* Kept and detached: whatever libfcgi finishes, it closes nothing. */
	req->keepConnection = 1;
	req->detached = 1;
	int rc = FCGX_Accept_r(req);
	f->nseg = f->at_seg = 0;
	return rc == 0 && req->envp ? 0 : -1;
}

void params_free(FCGX_Request *req)
{
	/* Streams and parameters only: FCGX_Free with close 0 writes
	 * nothing and leaves the descriptor alone. */
	FCGX_Free(req, 0);
	req->ipcFd = FEED_FD;
}

bool server_libfcgi_works(void)
{
	static const unsigned char probe[] = {4, 2, 'F', 'E', 'E', 'D', 'o', 'k'};
	FCGX_Request req;
	if (FCGX_InitRequest(&req, -1, 0) != 0)
		return false;
	bool ok = params_parse(&req, probe, sizeof probe) == 0;
	const char *v = ok ? FCGX_GetParam("FEED", req.envp) : NULL;
	ok = v && strcmp(v, "ok") == 0;
	/* A write through libfcgi must come here and be refused. */
	unsigned long before = tl_feed.writes_refused;
	if (ok && (FCGX_PutStr("x", 1, req.out) != 1 || FCGX_FFlush(req.out) == 0 ||
		   tl_feed.writes_refused == before))
		ok = false;
	params_free(&req);
	return ok;
}
