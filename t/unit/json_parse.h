/* Parsing a response body the way a strict client would, for the tests. */
#ifndef JSON_PARSE_H
#define JSON_PARSE_H

#include "tap.h"

#include <json-c/json.h>
#include <stdlib.h>

/* Parses text with json-c, strictly and checking UTF-8, with nothing after
 * the value; returns the value, or NULL with a diagnostic. */
static inline json_object *parse_strict(const char *text, size_t len)
{
	json_tokener *tok = json_tokener_new();
	if (!tok)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
	if (json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len) {
		diag("the body is not JSON to json-c: %s at offset %zu",
		     json_tokener_error_desc(json_tokener_get_error(tok)),
		     json_tokener_get_parse_end(tok));
		json_object_put(obj);
		obj = NULL;
	}
	json_tokener_free(tok);
	return obj;
}

#endif
