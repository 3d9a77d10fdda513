/* The CSRF check: origin_judge on its own, then through chat_respond, where
 * only form posts are judged. */
#include "chat.h"
#include "origin.h"
#include "tap.h"

#include <string.h>

static const struct chat_limits lim = {.max_body = CHAT_MAX_BODY_DEFAULT};

/* A request as nginx passes it for a page served from http://chat.example:8080. */
static int respond_status(const char *ctype, const char *body, const char *sec_fetch_site,
			  const char *origin)
{
	char clen[32];
	snprintf(clen, sizeof clen, "%zu", strlen(body));
	struct chat_request req = {
	    .method = "POST",
	    .path = "/chat/",
	    .content_type = ctype,
	    .content_length = clen,
	    .origin = origin,
	    .sec_fetch_site = sec_fetch_site,
	    .host = "chat.example:8080",
	    .scheme = "http",
	    .body = body,
	    .body_len = strlen(body),
	};
	struct chat_response res;
	chat_respond(&req, &lim, &res);
	int status = res.status;
	if (status == 403)
		ok(strstr(res.body, "\"error\":\"Form posts are accepted only") != NULL,
		   "   403 has a JSON error sentence");
	chat_response_free(&res);
	return status;
}

int main(void)
{
	/* ---- same origin or not, from Origin alone ---- */
	static const struct {
		const char *origin, *scheme, *host;
		bool same;
	} cases[] = {
	    {"http://chat.example:8080", "http", "chat.example:8080", true},
	    {"http://chat.example", "http", "chat.example", true},
	    {"http://chat.example:80", "http", "chat.example", true},
	    {"http://chat.example", "http", "chat.example:80", true},
	    {"https://chat.example", "https", "chat.example:443", true},
	    {"HTTP://Chat.Example", "http", "chat.example", true},
	    {"http://[::1]:8080", "http", "[::1]:8080", true},
	    {"http://127.0.0.1:8080", "http", "127.0.0.1:8080", true},
	    {"http://chat.example:8081", "http", "chat.example:8080", false},
	    {"http://chat.example", "http", "chat.example:8080", false},
	    {"https://chat.example", "http", "chat.example", false},
	    {"http://chat.example", "https", "chat.example", false},
	    {"http://evil.example", "http", "chat.example", false},
	    {"http://chat.example.evil.example", "http", "chat.example", false},
	    {"http://evil.example/chat.example", "http", "chat.example", false},
	    {"http://chat.example@evil.example", "http", "evil.example", false},
	    {"http://chat.example/", "http", "chat.example", false},
	    {"http://chat.example:", "http", "chat.example", false},
	    {"http://chat.example:99999", "http", "chat.example:99999", false},
	    {"http://chat.example:+80", "http", "chat.example", false},
	    {"http://", "http", "", false},
	    {"null", "http", "chat.example", false},
	    {"chat.example", "http", "chat.example", false},
	    {"ftp://chat.example", "ftp", "chat.example", false},
	    {"http://[::1", "http", "[::1", false},
	    {"http://chat.example", NULL, "chat.example", false},
	    {"http://chat.example", "http", NULL, false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		is_int(origin_is_same(cases[i].origin, cases[i].scheme, cases[i].host),
		       cases[i].same, "Origin %s for %s://%s is %s", cases[i].origin,
		       cases[i].scheme ? cases[i].scheme : "(none)",
		       cases[i].host ? cases[i].host : "(none)",
		       cases[i].same ? "the same origin" : "foreign");

	/* ---- Sec-Fetch-Site decides when present ---- */
	const char *here = "http://chat.example", *there = "http://evil.example";
	is_int(origin_judge("same-origin", NULL, "http", "chat.example"), ORIGIN_SAME,
	       "Sec-Fetch-Site same-origin passes");
	is_int(origin_judge("none", NULL, "http", "chat.example"), ORIGIN_SAME,
	       "Sec-Fetch-Site none (typed by the user) passes");
	is_int(origin_judge("cross-site", here, "http", "chat.example"), ORIGIN_FOREIGN,
	       "Sec-Fetch-Site cross-site is refused even with a matching Origin");
	is_int(origin_judge("same-site", here, "http", "chat.example"), ORIGIN_FOREIGN,
	       "Sec-Fetch-Site same-site (a sibling subdomain) is refused");
	is_int(origin_judge("Same-Origin", here, "http", "chat.example"), ORIGIN_FOREIGN,
	       "Sec-Fetch-Site values are exact tokens");
	is_int(origin_judge("same-origin", there, "http", "chat.example"), ORIGIN_SAME,
	       "Sec-Fetch-Site same-origin wins over Origin");
	is_int(origin_judge(NULL, here, "http", "chat.example"), ORIGIN_SAME,
	       "no Sec-Fetch-Site: a matching Origin passes");
	is_int(origin_judge(NULL, there, "http", "chat.example"), ORIGIN_FOREIGN,
	       "no Sec-Fetch-Site: a foreign Origin is refused");
	is_int(origin_judge("", "null", "http", "chat.example"), ORIGIN_FOREIGN,
	       "Origin null is refused");
	is_int(origin_judge(NULL, NULL, "http", "chat.example"), ORIGIN_NO_BROWSER,
	       "neither header: not a browser");
	is_int(origin_judge("", "", "http", "chat.example"), ORIGIN_NO_BROWSER,
	       "empty headers count as absent (nginx passes absent ones so)");

	/* ---- through chat_respond: forms are judged, JSON is not ---- */
	const char *form = "application/x-www-form-urlencoded";
	const char *json = "application/json";
	const char *page = "http://chat.example:8080";
	is_int(respond_status(form, "message=hi", NULL, NULL), 200, "form post from curl: 200");
	is_int(respond_status(form, "message=hi", "same-origin", page), 200,
	       "form post from our page: 200");
	is_int(respond_status(form, "message=hi", NULL, page), 200,
	       "form post with our Origin only (older browser): 200");
	is_int(respond_status(form, "message=hi", "cross-site", "http://evil.example"), 403,
	       "form post from another site: 403");
	is_int(respond_status(form, "message=hi", NULL, "http://evil.example"), 403,
	       "form post with a foreign Origin only: 403");
	is_int(respond_status("application/x-www-form-urlencoded; charset=UTF-8", "message=hi",
			      "same-site", NULL),
	       403, "form post from a sibling subdomain: 403");
	is_int(respond_status(json, "{\"message\":\"hi\"}", "cross-site", "http://evil.example"),
	       200, "JSON is not judged: only a preflighted fetch could send it cross-site");
	is_int(respond_status("text/plain", "message=hi", "cross-site", "http://evil.example"), 415,
	       "text/plain (what a cross-site form may send as JSON) gets 415");
	return done_testing();
}
