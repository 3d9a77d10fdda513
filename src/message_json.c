#include "message_json.h"

#include "chat.h"
#include "json_strict.h"

#include <json-c/json.h>
#include <limits.h>

int message_from_json(const char *body, size_t body_len, struct json_object **root,
		      const char **text, size_t *len, const char **why)
{
	*root = NULL;
	if (!json_strict_check(body, body_len, CHAT_JSON_MAX_DEPTH, why))
		return -1;
	if (body_len > INT_MAX) { /* json-c takes an int length */
		*why = "The body is too large.";
		return -1;
	}

	/* The text is valid JSON now, so json-c only has to build the tree. */
	json_tokener *tok = json_tokener_new_ex(CHAT_JSON_MAX_DEPTH + 1);
	if (!tok) {
		*why = "The server is out of memory.";
		return -2;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	json_object *obj = json_tokener_parse_ex(tok, body, (int)body_len);
	enum json_tokener_error err = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (!obj || err != json_tokener_success) {
		json_object_put(obj);
		/* Either memory ran out or json-c disagrees with RFC 8259 on a
		 * text we passed; both are refusals, not crashes. */
		*why = "The body is not valid JSON.";
		return -1;
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		*why = "The body must be a JSON object, such as {\"message\": \"hello\"}.";
		return -1;
	}

	json_object *message;
	if (!json_object_object_get_ex(obj, "message", &message)) {
		*root = obj;
		*text = "";
		*len = 0;
		return 0;
	}
	if (!json_object_is_type(message, json_type_string)) {
		json_object_put(obj);
		*why = "The \"message\" member must be a string.";
		return -1;
	}
	*root = obj;
	*text = json_object_get_string(message);
	*len = (size_t)json_object_get_string_len(message);
	return 0;
}

int message_json_member(struct json_object *root, const char *name, const char **s, size_t *len)
{
	json_object *member;
	if (!root || !json_object_object_get_ex(root, name, &member))
		return 0;
	if (!json_object_is_type(member, json_type_string))
		return -1;
	*s = json_object_get_string(member);
	*len = (size_t)json_object_get_string_len(member);
	return 1;
}
