/* Matching a Content-Type header against a media type (RFC 9110, 8.3). */
#ifndef MEDIA_TYPE_H
#define MEDIA_TYPE_H

#include <stdbool.h>

enum media_match {
	MEDIA_OTHER,      /* another type, or no header */
	MEDIA_MATCH,      /* the type, with no charset or charset=utf-8 */
	MEDIA_BAD_CHARSET /* the type, but a charset other than UTF-8 */
};

/* type is lower case, e.g. "application/json". */
enum media_match media_type_match(const char *header, const char *type);

#endif
