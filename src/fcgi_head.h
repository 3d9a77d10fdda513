/* A look at the start of a FastCGI request before libfcgi reads it. libfcgi
 * reads the parameters with blocking reads, so a peer that sends half a
 * request holds a thread, and it trusts their lengths: two lengths whose sum
 * overflows an int make its allocation fail and its assert abort the
 * process. The server peeks at the bytes waiting on a connection and hands
 * it to libfcgi only when this says the parameters are all there and sane. */
#ifndef FCGI_HEAD_H
#define FCGI_HEAD_H

#include <stdbool.h>
#include <stddef.h>

/* The most parameter bytes a request may bring: nginx sends a few hundred
 * bytes plus the client's headers, which its own buffers (32 KiB by default)
 * bound. */
#define FCGI_HEAD_MAX_PARAMS ((size_t)64 * 1024)
/* Bytes to peek at to see a head of that size with its record framing. */
#define FCGI_HEAD_PEEK_MAX (FCGI_HEAD_MAX_PARAMS + 16 * 1024)

enum fcgi_head {
	FCGI_HEAD_READY,   /* the parameters are complete: libfcgi may read */
	FCGI_HEAD_PARTIAL, /* not all there yet */
	FCGI_HEAD_BAD      /* not FastCGI as libfcgi can safely read it (broken,
			      too large, or a management record other than
			      GET_VALUES, on which libfcgi leaks): close */
};

/* Judges the first len bytes waiting on a connection. */
enum fcgi_head fcgi_head_check(const unsigned char *buf, size_t len);

/* Is the whole request in buf, up to the empty STDIN record that ends its
 * body? Then reading it cannot wait on the peer. */
bool fcgi_request_whole(const unsigned char *buf, size_t len);

#endif
