/*
 * The record writer and the output queue of a connection.
 *
 * Everything a connection sends goes through here, as FastCGI records
 * (specification, section 3.3). Sockets are non-blocking: what the socket
 * does not take at once is copied into the connection's queue and written
 * as the peer drains it (conn_run calls out_flush), so a slow reader costs
 * its queue, never a thread. A connection whose queue is still over
 * --max-queue when more is to be added, or that takes nothing for
 * --send-timeout, is closed (conn.c).
 */
#include "internal.h"

#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <fastcgi.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* The content of one record: the most FastCGI allows, kept a multiple of
 * 8 as the specification recommends. */
#define RECORD_MAX ((size_t)FCGI_MAX_LENGTH & ~(size_t)7)
/* Records put in one writev; a longer answer is queued in rounds. */
#define RECORDS_PER_WRITE 16
/* Chunks written by one writev. */
#define CHUNKS_PER_WRITE 64

static void record_header(unsigned char h[FCGI_HEADER_LEN], unsigned type, unsigned id, size_t len)
{
	h[0] = FCGI_VERSION_1;
	h[1] = (unsigned char)type;
	h[2] = (unsigned char)(id >> 8 & 0xff);
	h[3] = (unsigned char)(id & 0xff);
	h[4] = (unsigned char)(len >> 8 & 0xff);
	h[5] = (unsigned char)(len & 0xff);
	h[6] = 0; /* no padding */
	h[7] = 0;
}

static void queue_add(struct conn *c, size_t n)
{
	c->out.bytes += n;
	atomic_fetch_add_explicit(&c->srv->queued, n, memory_order_relaxed);
	if (!c->send_by)
		c->send_by = now_ms() + c->srv->cfg.send_timeout_ms;
}

static void queue_sub(struct conn *c, size_t n)
{
	c->out.bytes -= n;
	atomic_fetch_sub_explicit(&c->srv->queued, n, memory_order_relaxed);
}

/* Sends iov[0, n): written at once when nothing is queued before it and
 * this thread may write, and what the socket does not take is queued. */
static void out_put(struct conn *c, const struct iovec *iov, int n)
{
	if (c->failed)
		return;
	if (c->out.bytes > c->srv->cfg.max_queue) {
		conn_fail(c, "its reader left more than --max-queue unread",
			  METRICS_CLOSE_QUEUE_FULL);
		return;
	}
	size_t total = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	size_t done = 0;
	if (c->out.bytes == 0 && !tl_run_later) {
		ssize_t w;
		do
			w = writev(c->fd, iov, n);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_fail(c, NULL, -1); /* the peer is gone */
			return;
		}
		if (w > 0)
			done = (size_t)w;
		if (done == total)
			return;
	}
	struct out_chunk *ch = malloc(sizeof *ch + (total - done));
	if (!ch) {
		conn_fail(c, "out of memory for its output", -1);
		return;
	}
	ch->next = NULL;
	ch->len = total - done;
	ch->at = 0;
	unsigned char *to = ch->data;
	for (int i = 0; i < n; i++) {
		size_t len = iov[i].iov_len;
		const unsigned char *from = iov[i].iov_base;
		if (done >= len) {
			done -= len;
			continue;
		}
		memcpy(to, from + done, len - done);
		to += len - done;
		done = 0;
	}
	if (c->out.tail)
		c->out.tail->next = ch;
	else
		c->out.head = ch;
	c->out.tail = ch;
	queue_add(c, ch->len);
}

int out_flush(struct conn *c)
{
	while (c->out.head) {
		struct iovec iov[CHUNKS_PER_WRITE];
		int n = 0;
		for (struct out_chunk *ch = c->out.head; ch && n < CHUNKS_PER_WRITE; ch = ch->next)
			iov[n++] = (struct iovec){.iov_base = ch->data + ch->at,
						  .iov_len = ch->len - ch->at};
		ssize_t w;
		do
			w = writev(c->fd, iov, n);
		while (w < 0 && errno == EINTR);
		if (w < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		size_t done = (size_t)w;
		queue_sub(c, done);
		while (done > 0) {
			struct out_chunk *ch = c->out.head;
			size_t left = ch->len - ch->at;
			if (done < left) {
				ch->at += done;
				break;
			}
			done -= left;
			c->out.head = ch->next;
			if (!c->out.head)
				c->out.tail = NULL;
			free(ch);
		}
		/* Progress: the reader has until another --send-timeout. */
		c->send_by = c->out.head ? now_ms() + c->srv->cfg.send_timeout_ms : 0;
	}
	c->send_by = 0;
	return 0;
}

void out_clear(struct conn *c)
{
	while (c->out.head) {
		struct out_chunk *ch = c->out.head;
		c->out.head = ch->next;
		free(ch);
	}
	c->out.tail = NULL;
	queue_sub(c, c->out.bytes);
	c->send_by = 0;
}

/* The empty FCGI_STDOUT that ends the stream and FCGI_END_REQUEST with
 * protocol_status (section 5.5), or only the latter. */
static size_t end_records(unsigned char *b, unsigned id, unsigned char protocol_status,
			  bool stdout_end)
{
	size_t n = 0;
	if (stdout_end) {
		record_header(b, FCGI_STDOUT, id, 0);
		n += FCGI_HEADER_LEN;
	}
	record_header(b + n, FCGI_END_REQUEST, id, 8);
	n += FCGI_HEADER_LEN;
	memset(b + n, 0, 8); /* appStatus 0, reserved */
	b[n + 4] = protocol_status;
	return n + 8;
}

void out_stdout(struct conn *c, const char *head, size_t head_len, const char *body, size_t len,
		bool end)
{
	unsigned char hdr[RECORDS_PER_WRITE][FCGI_HEADER_LEN];
	unsigned char tail[3 * FCGI_HEADER_LEN];
	struct iovec iov[2 * RECORDS_PER_WRITE + 2];
	unsigned id = c->request_id;
	int n = 0, r = 0;
	/* The head shares the first record with the start of the body. */
	if (head_len > 0) {
		size_t part = len < RECORD_MAX - head_len ? len : RECORD_MAX - head_len;
		record_header(hdr[r], FCGI_STDOUT, id, head_len + part);
		iov[n++] = (struct iovec){.iov_base = hdr[r++], .iov_len = FCGI_HEADER_LEN};
		iov[n++] = (struct iovec){.iov_base = (void *)head, .iov_len = head_len};
		if (part > 0)
			iov[n++] = (struct iovec){.iov_base = (void *)body, .iov_len = part};
		body += part;
		len -= part;
	}
	for (;;) {
		for (; r < RECORDS_PER_WRITE && len > 0; r++) {
			size_t part = len < RECORD_MAX ? len : RECORD_MAX;
			record_header(hdr[r], FCGI_STDOUT, id, part);
			iov[n++] = (struct iovec){.iov_base = hdr[r], .iov_len = FCGI_HEADER_LEN};
			iov[n++] = (struct iovec){.iov_base = (void *)body, .iov_len = part};
			body += part;
			len -= part;
		}
		if (len == 0)
			break;
		out_put(c, iov, n);
		n = r = 0;
	}
	if (end)
		iov[n++] =
		    (struct iovec){.iov_base = tail,
				   .iov_len = end_records(tail, id, FCGI_REQUEST_COMPLETE, true)};
	if (n > 0)
		out_put(c, iov, n);
}

void out_end_request(struct conn *c, unsigned id, unsigned char protocol_status, bool stdout_end)
{
	unsigned char b[3 * FCGI_HEADER_LEN];
	struct iovec iov = {.iov_base = b,
			    .iov_len = end_records(b, id, protocol_status, stdout_end)};
	out_put(c, &iov, 1);
}

/* One name-value pair of short name and value (section 3.4). */
static size_t put_pair(unsigned char *b, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	b[0] = (unsigned char)nl;
	b[1] = (unsigned char)vl;
	memcpy(b + 2, name, nl);
	memcpy(b + 2 + nl, value, vl);
	return 2 + nl + vl;
}

void out_get_values(struct conn *c, unsigned asked)
{
	/* Each connection takes one request at a time, so both maxima are the
	 * number of connections (section 4.1). */
	char conns[24];
	size_t at = 0;
	unsigned v = c->srv->nslots;
	char digits[24];
	size_t nd = 0;
	do
		digits[nd++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (nd)
		conns[at++] = digits[--nd];
	conns[at] = '\0';

	unsigned char b[FCGI_HEADER_LEN + 3 * (2 + 16 + 24)];
	size_t len = FCGI_HEADER_LEN;
	if (asked & RECORDS_ASK_MAX_CONNS)
		len += put_pair(b + len, FCGI_MAX_CONNS, conns);
	if (asked & RECORDS_ASK_MAX_REQS)
		len += put_pair(b + len, FCGI_MAX_REQS, conns);
	if (asked & RECORDS_ASK_MPXS_CONNS)
		len += put_pair(b + len, FCGI_MPXS_CONNS, "0");
	record_header(b, FCGI_GET_VALUES_RESULT, FCGI_NULL_REQUEST_ID, len - FCGI_HEADER_LEN);
	struct iovec iov = {.iov_base = b, .iov_len = len};
	out_put(c, &iov, 1);
}

void out_unknown_type(struct conn *c, unsigned type)
{
	unsigned char b[FCGI_HEADER_LEN + 8] = {0};
	record_header(b, FCGI_UNKNOWN_TYPE, FCGI_NULL_REQUEST_ID, 8);
	b[FCGI_HEADER_LEN] = (unsigned char)type;
	struct iovec iov = {.iov_base = b, .iov_len = sizeof b};
	out_put(c, &iov, 1);
}
