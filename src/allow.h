/*
 * The peers a TCP listener accepts: --allow-from, or libfcgi's own
 * FCGI_WEB_SERVER_ADDRS, as a list of IPv4 and IPv6 addresses, each with
 * an optional prefix length (10.0.0.0/24, ::1). Pure: parsing and matching
 * only; the server closes what does not match as it accepts.
 */
#ifndef ALLOW_H
#define ALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Entries a list may have. */
#define ALLOW_MAX 64

struct allow_entry {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned prefix; /* bits that must match */
};

struct allow_list {
	struct allow_entry entry[ALLOW_MAX];
	size_t n;
};

/* Parses "ADDR[/BITS][,ADDR[/BITS]]..." (spaces around commas allowed).
 * 0, or -1 with a sentence in err naming the bad part. */
int allow_parse(struct allow_list *list, const char *text, char *err, size_t err_size);

/* Is the peer at sa (IPv4, IPv6, or IPv4 mapped into IPv6) in the list? A
 * peer of another family (a unix socket) always is. */
bool allow_match(const struct allow_list *list, const struct sockaddr *sa, socklen_t len);

#endif
