/*
 * The paths the backend answers, in one table: each route's path, the
 * methods it allows, the pure handler that answers it and its label in the
 * metrics. It names the handlers and nothing else of them; it knows nothing
 * of the server or of libfcgi.
 */
#ifndef ROUTES_H
#define ROUTES_H

#include "response.h"

#include <stdbool.h>

enum route_id {
	ROUTE_CHAT,     /* POST /chat/ */
	ROUTE_MESSAGES, /* GET /chat/messages */
	ROUTE_EVENTS,   /* GET /chat/events */
	ROUTE_HEALTH,   /* GET /chat/health */
	ROUTE_METRICS,  /* GET /chat/metrics */
	ROUTE_OTHER,    /* any other path: 404 */
	ROUTE_COUNT
};

struct route {
	/* The path part of REQUEST_URI, matched exactly; NULL for ROUTE_OTHER. */
	const char *path;
	/* Its methods, as an Allow header lists them; NULL: none. */
	const char *allow;
	/* Answers a request whose head chat_respond has judged; NULL for the
	 * routes about the server itself, which the server answers. */
	void (*respond)(const struct chat_request *req, const struct chat_limits *lim,
			struct chat_response *res);
	/* The route label of chat_fcgi_requests_total; dashboards use it. */
	const char *metric;
};

extern const struct route routes[ROUTE_COUNT];

/* The route of a path; ROUTE_OTHER for NULL or a path no route has. */
enum route_id route_of(const char *path);

/* Is method (NULL: none) one of r's? */
bool route_allows(const struct route *r, const char *method);

#endif
