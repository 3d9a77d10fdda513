/* Bytes the server took from a connection, handed to libfcgi as if it read
 * them itself.
 *
 * The server must see a request before libfcgi reads it (fcgi_head.h), and
 * it used to peek: the bytes stayed in the socket and libfcgi read them
 * again, one system call more per request. Now the server takes them with
 * one recv and sets them here as the thread's feed. libfcgi reads through
 * OS_Read, the function of its own OS layer (fcgios.h), which it calls
 * through its procedure linkage table like any exported function, so the
 * dynamic linker binds those calls to the OS_Read defined here: a read of
 * the fed descriptor gets the feed first, and the socket only once the feed
 * is used up. fcgi_feed_works() checks at start that this binding holds
 * (a libfcgi linked with -Bsymbolic, say, would read the socket and lose
 * the bytes taken). */
#ifndef FCGI_FEED_H
#define FCGI_FEED_H

#include <stdbool.h>
#include <stddef.h>

/* The most the server takes in one recv: what libfcgi reads at once (the
 * buffer FCGX_Accept_r gives its input stream), so that a feed is used up
 * by libfcgi's first read, as the socket's bytes were. */
#define FCGI_FEED_TAKE ((size_t)8192)

/* Makes len bytes at bytes what the calling thread's libfcgi reads of fd
 * next. owned, if not NULL, is freed by the next fcgi_feed_set or
 * fcgi_feed_clear on this thread. The bytes must stay until then. */
void fcgi_feed_set(int fd, const unsigned char *bytes, size_t len, void *owned);

/* The most OS_Read takes at once while reading ahead. */
#define FCGI_FEED_AHEAD_MAX ((size_t)128 * 1024)

/* libfcgi reads a body 8 KiB at a time, a system call each (eight more for
 * a 64 KiB message). While the calling thread reads the body of the
 * request on fd, of `announced` bytes, this lets OS_Read take up to that
 * much (plus room for record headers; at most FCGI_FEED_AHEAD_MAX) in one
 * read into a buffer of the feed's, and hand it to libfcgi from there.
 * Only this request's bytes can be on the socket then (nginx sends the next
 * one on a connection after the answer to this one), so nothing is taken
 * that libfcgi would not have read. Ends with fcgi_feed_clear. */
void fcgi_feed_ahead(int fd, size_t announced);

/* Bytes of the calling thread's feed that libfcgi has not read. */
size_t fcgi_feed_left(void);

/* Ends the calling thread's feed and its reading ahead (what libfcgi did not
 * read is dropped, as libfcgi drops what is left in its buffer after a
 * request). */
void fcgi_feed_clear(void);

/* Whether libfcgi's reads come through this feed: call after FCGX_Init. */
bool fcgi_feed_works(void);

#endif
