#include "origin.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

/* host and port of an authority (RFC 3986, 3.2: host [":" port], where a
 * host may be an IPv6 literal in brackets); port is -1 when absent. */
struct authority {
	const char *host;
	size_t host_len;
	long port;
};

/* Parses exactly [s, s + len): nothing may come before or after, no
 * userinfo, no path. */
static bool parse_authority(const char *s, size_t len, struct authority *a)
{
	const char *end = s + len;
	const char *p;

	if (len == 0)
		return false;
	if (*s == '[') {
		p = memchr(s, ']', len);
		if (!p)
			return false;
		p++;
	} else {
		p = s;
		while (p < end && *p != ':')
			p++;
	}
	a->host = s;
	a->host_len = (size_t)(p - s);
	if (a->host_len == 0)
		return false;
	for (const char *h = s; h < p; h++) {
		unsigned char c = (unsigned char)*h;
		if (c <= ' ' || c >= 0x7F || c == '/' || c == '@' || c == '?' || c == '#' ||
		    c == '\\')
			return false;
	}
	a->port = -1;
	if (p == end)
		return true;
	if (*p != ':' || p + 1 == end || end - (p + 1) > 5)
		return false;
	long port = 0;
	for (p++; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		port = port * 10 + (*p - '0');
	}
	if (port > 65535)
		return false;
	a->port = port;
	return true;
}

static long default_port(const char *scheme)
{
	if (strcasecmp(scheme, "http") == 0)
		return 80;
	if (strcasecmp(scheme, "https") == 0)
		return 443;
	return -1;
}

bool origin_is_same(const char *origin, const char *scheme, const char *host)
{
	if (!origin || !scheme || !host)
		return false;
	const char *sep = strstr(origin, "://");
	if (!sep)
		return false;
	size_t scheme_len = (size_t)(sep - origin);
	if (scheme_len != strlen(scheme) || strncasecmp(origin, scheme, scheme_len) != 0)
		return false;
	long dflt = default_port(scheme);
	if (dflt < 0)
		return false;

	struct authority theirs, ours;
	const char *auth = sep + 3;
	if (!parse_authority(auth, strlen(auth), &theirs) ||
	    !parse_authority(host, strlen(host), &ours))
		return false;
	if (theirs.host_len != ours.host_len ||
	    strncasecmp(theirs.host, ours.host, ours.host_len) != 0)
		return false;
	return (theirs.port < 0 ? dflt : theirs.port) == (ours.port < 0 ? dflt : ours.port);
}

enum origin_verdict origin_judge(const char *sec_fetch_site, const char *origin, const char *scheme,
				 const char *host)
{
	/* An empty header counts as absent: nginx passes an absent one as "". */
	if (sec_fetch_site && *sec_fetch_site) {
		if (strcmp(sec_fetch_site, "same-origin") == 0 ||
		    strcmp(sec_fetch_site, "none") == 0)
			return ORIGIN_SAME;
		return ORIGIN_FOREIGN; /* same-site, cross-site, or anything unknown */
	}
	if (origin && *origin)
		return origin_is_same(origin, scheme, host) ? ORIGIN_SAME : ORIGIN_FOREIGN;
	return ORIGIN_NO_BROWSER;
}
