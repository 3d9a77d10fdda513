/* The table of routes, and the lookups in it. Each handler is known here
 * by its name alone. */
#include "routes.h"

#include "events.h"
#include "message.h"
#include "rooms.h"

#include <string.h>

const struct route routes[ROUTE_COUNT] = {
    [ROUTE_CHAT] = {"/chat/", "POST", message_respond, "chat"},
    [ROUTE_MESSAGES] = {"/chat/messages", "GET, HEAD", rooms_messages, "messages"},
    [ROUTE_EVENTS] = {"/chat/events", "GET, HEAD", events_respond, "events"},
    [ROUTE_HEALTH] = {"/chat/health", "GET, HEAD", NULL, "health"},
    [ROUTE_METRICS] = {"/chat/metrics", "GET, HEAD", NULL, "metrics"},
    [ROUTE_OTHER] = {NULL, NULL, NULL, "other"},
};

enum route_id route_of(const char *path)
{
	if (!path)
		return ROUTE_OTHER;
	for (size_t i = 0; i < ROUTE_COUNT; i++)
		if (routes[i].path && strcmp(routes[i].path, path) == 0)
			return (enum route_id)i;
	return ROUTE_OTHER;
}

bool route_allows(const struct route *r, const char *method)
{
	if (!method || !r->allow)
		return false;
	/* The list is "A, B": methods apart by a comma and a space. Every
	 * request passes here, so it is read in place, once. */
	for (const char *p = r->allow; *p;) {
		const char *m = method;
		while (*m && *p == *m && *p != ',') {
			p++;
			m++;
		}
		if (!*m && (*p == ',' || !*p))
			return true;
		while (*p && *p != ',')
			p++;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return false;
}
