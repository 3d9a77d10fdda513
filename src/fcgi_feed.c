#include "fcgi_feed.h"

#include <errno.h>
#include <fcgiapp.h>
#include <fcgios.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct feed {
	int fd;
	const unsigned char *at;
	size_t len;
	void *owned;
	/* Reading ahead (fcgi_feed_ahead): on ahead_fd, up to ahead_cap bytes
	 * at once into ahead_buf (allocated at the first such read). */
	int ahead_fd;
	size_t ahead_cap;
	unsigned char *ahead_buf;
};

#define FEED_NONE ((struct feed){.fd = -1, .ahead_fd = -1})

static _Thread_local struct feed tl_feed = FEED_NONE;

void fcgi_feed_set(int fd, const unsigned char *bytes, size_t len, void *owned)
{
	fcgi_feed_clear();
	tl_feed.fd = fd;
	tl_feed.at = bytes;
	tl_feed.len = len;
	tl_feed.owned = owned;
}

void fcgi_feed_ahead(int fd, size_t announced)
{
	/* Room for a header and padding (16 bytes) per record of 8 KiB or
	 * more (nginx's are 32 KiB), and for the empty record at the end. */
	size_t room = (announced / 8192 + 2) * 16;
	tl_feed.ahead_fd = fd;
	tl_feed.ahead_cap =
	    announced < FCGI_FEED_AHEAD_MAX - room ? announced + room : FCGI_FEED_AHEAD_MAX;
}

size_t fcgi_feed_left(void)
{
	return tl_feed.len;
}

void fcgi_feed_clear(void)
{
	free(tl_feed.owned);
	free(tl_feed.ahead_buf);
	tl_feed = FEED_NONE;
}

static ssize_t read_again(int fd, void *buf, size_t len)
{
	ssize_t n;
	do
		n = read(fd, buf, len);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Refills the feed of f from fd with one read of up to f->ahead_cap bytes;
 * false (and nothing read) if its buffer cannot be had. */
static bool read_ahead(struct feed *f, int fd, ssize_t *n)
{
	if (!f->ahead_buf && !(f->ahead_buf = malloc(f->ahead_cap)))
		return false;
	*n = read_again(fd, f->ahead_buf, f->ahead_cap);
	if (*n > 0) {
		f->fd = fd;
		f->at = f->ahead_buf;
		f->len = (size_t)*n;
	}
	return true;
}

/* Replaces libfcgi's own (os_unix.c), which is read(2) plus a check of a
 * shutdown flag that only its signal handlers set; chat-fcgi handles its
 * signals itself and never lets libfcgi's flag matter. libfcgi asks for at
 * most its buffer's size, an int. A read interrupted by a signal is made
 * again: on a socket with a receive timeout the kernel does not restart it
 * (it fails with EINTR even when the process was only stopped and
 * continued), and libfcgi would take that for a broken connection. */
int OS_Read(int fd, char *buf, size_t len)
{
	struct feed *f = &tl_feed;
	if (f->len == 0 && fd == f->ahead_fd && f->ahead_cap > len) {
		ssize_t got;
		if (read_ahead(f, fd, &got) && got <= 0)
			return (int)got;
	}
	if (f->len > 0 && fd == f->fd) {
		size_t n = len < f->len ? len : f->len;
		memcpy(buf, f->at, n);
		f->at += n;
		f->len -= n;
		return (int)n;
	}
	return (int)read_again(fd, buf, len);
}

/* A request of one parameter, FEED=ok, with an empty body. */
static const unsigned char probe[] = {
    1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1,   0,   0,   0,   0,   0,   /* BEGIN_REQUEST, keep */
    1, 4, 0, 1, 0, 8, 0, 0, 4, 2, 'F', 'E', 'E', 'D', 'o', 'k', /* PARAMS */
    1, 4, 0, 1, 0, 0, 0, 0, 1, 5, 0,   1,   0,   0,   0,   0};  /* PARAMS end, STDIN end */

bool fcgi_feed_works(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return false;
	/* Nothing ever comes on sv[0]: a libfcgi that read it instead of the
	 * feed would see its end at once rather than wait. */
	close(sv[1]);
	FCGX_Request req;
	if (FCGX_InitRequest(&req, -1, 0) != 0) {
		close(sv[0]);
		return false;
	}
	req.ipcFd = sv[0];
	req.keepConnection = 1; /* as the server's: not closed by the accept */
	req.detached = 1;
	fcgi_feed_set(sv[0], probe, sizeof probe, NULL);
	bool ok = FCGX_Accept_r(&req) == 0;
	const char *v = ok ? FCGX_GetParam("FEED", req.envp) : NULL;
	ok = v && strcmp(v, "ok") == 0 && fcgi_feed_left() == 0;
	fcgi_feed_clear();
	req.detached = 1;
	FCGX_Free(&req, 1); /* closes sv[0], unless a failed accept already did */
	return ok;
}
