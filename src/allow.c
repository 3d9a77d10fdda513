#include "allow.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One entry, "ADDR" or "ADDR/BITS", of len bytes at s. */
static int parse_entry(struct allow_entry *e, const char *s, size_t len, char *err, size_t err_size)
{
	char buf[INET6_ADDRSTRLEN + 8];
	if (len == 0 || len >= sizeof buf) {
		snprintf(err, err_size, "an empty or overlong address in the allowed list");
		return -1;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, e->addr) == 1) {
		e->family = AF_INET;
		e->prefix = 32;
	} else if (inet_pton(AF_INET6, buf, e->addr) == 1) {
		e->family = AF_INET6;
		e->prefix = 128;
	} else {
		snprintf(err, err_size, "'%s' is not an IPv4 or IPv6 address", buf);
		return -1;
	}
	if (slash) {
		const char *bits = slash + 1;
		unsigned v = 0;
		if (!*bits || strlen(bits) > 3) {
			snprintf(err, err_size, "a bad prefix length after '%s'", buf);
			return -1;
		}
		for (const char *p = bits; *p; p++) {
			if (*p < '0' || *p > '9') {
				snprintf(err, err_size, "a bad prefix length after '%s'", buf);
				return -1;
			}
			v = v * 10 + (unsigned)(*p - '0');
		}
		if (v > e->prefix) {
			snprintf(err, err_size, "a prefix of %u bits for '%s'", v, buf);
			return -1;
		}
		e->prefix = v;
	}
	return 0;
}

int allow_parse(struct allow_list *list, const char *text, char *err, size_t err_size)
{
	list->n = 0;
	for (const char *p = text;;) {
		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		size_t len = strcspn(p, ", ");
		if (list->n == ALLOW_MAX) {
			snprintf(err, err_size, "more than %d addresses in the allowed list",
				 ALLOW_MAX);
			return -1;
		}
		if (parse_entry(&list->entry[list->n], p, len, err, err_size) != 0)
			return -1;
		list->n++;
		p += len;
	}
	if (list->n == 0) {
		snprintf(err, err_size, "an empty allowed list");
		return -1;
	}
	return 0;
}

/* The first bits of a and b are equal. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	size_t whole = bits / 8;
	if (memcmp(a, b, whole) != 0)
		return false;
	unsigned rest = bits % 8;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

bool allow_match(const struct allow_list *list, const struct sockaddr *sa, socklen_t len)
{
	unsigned char addr[16];
	int family;
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		memcpy(addr, &in->sin_addr, 4);
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			/* An IPv4 peer on a dual-stack socket: ::ffff:a.b.c.d. */
			memcpy(addr, in6->sin6_addr.s6_addr + 12, 4);
			family = AF_INET;
		} else {
			memcpy(addr, &in6->sin6_addr, 16);
			family = AF_INET6;
		}
	} else {
		return true;
	}
	for (size_t i = 0; i < list->n; i++)
		if (list->entry[i].family == family &&
		    prefix_equal(list->entry[i].addr, addr, list->entry[i].prefix))
			return true;
	return false;
}
