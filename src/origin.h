/*
 * Whether a form post comes from one of this site's own pages (a CSRF
 * check). A cross-site HTML form can send a form body without a preflight,
 * so such a post must show where it comes from: a browser always says so
 * with Sec-Fetch-Site (current browsers) or Origin (older ones).
 */
#ifndef ORIGIN_H
#define ORIGIN_H

#include <stdbool.h>

enum origin_verdict {
	ORIGIN_SAME,       /* from a page of this site, or typed by the user */
	ORIGIN_NO_BROWSER, /* neither header: curl or a script, not a browser */
	ORIGIN_FOREIGN     /* another site, or a sender that hides where it is */
};

/*
 * sec_fetch_site: Sec-Fetch-Site, decisive when present: "same-origin" and
 * "none" (the user typed it) pass, everything else is foreign.
 * origin: Origin, otherwise: it must be scheme://host as the request itself
 * was addressed (its scheme, its Host header), ports compared as numbers
 * with the scheme's default filled in. "null" is foreign.
 * Any argument may be NULL when the header or parameter is absent.
 */
enum origin_verdict origin_judge(const char *sec_fetch_site, const char *origin, const char *scheme,
				 const char *host);

/* Whether origin ("scheme://host[:port]") names the same origin as a
 * request made with scheme to the Host header host. */
bool origin_is_same(const char *origin, const char *scheme, const char *host);

#endif
