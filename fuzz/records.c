/*
 * The record reader (src/server/records.c) on any bytes, read in pieces of
 * any sizes, and libfcgi on every parameter stream it lets through
 * (src/server/params.c).
 *
 * Each call keeps the promises of records.h: it uses no more than it is
 * given, RECORDS_MORE only once all is used, pieces lie inside the bytes
 * used, events come in an order the protocol allows, and the connection
 * ends at BROKEN (with a sentence), UNKNOWN_ROLE or CANT_MPX. A request's
 * parameters stay within RECORDS_PARAMS_MAX, and libfcgi reads them with no
 * error: one parameter per pair, in order, each as name=value.
 *
 * Input: a first byte whose low 3 bits are a count n and whose bit 3 says
 * that requests are not ended at STDIN_END or ABORT (records_request_done
 * is then never called); then n piece sizes of a byte each (0 is an empty
 * read), used in turn; then the stream. With n 0 the stream is read whole.
 */
#include "fuzz.h"
#include "params.h"
#include "records.h"

#include <fcgiapp.h>
#include <stdbool.h>
#include <string.h>

static FCGX_Request req;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FUZZ_CHECK(FCGX_Init() == 0, "FCGX_Init");
	FUZZ_CHECK(server_libfcgi_works(), "libfcgi does not read through params.c");
	FUZZ_CHECK(FCGX_InitRequest(&req, -1, 0) == 0, "FCGX_InitRequest");
	return 0;
}

/* Reads a pair's length at *at; false past the end. */
static bool length_at(const unsigned char *p, size_t len, size_t *at, size_t *n)
{
	if (*at >= len)
		return false;
	if (!(p[*at] & 0x80)) {
		*n = p[(*at)++];
		return true;
	}
	if (len - *at < 4)
		return false;
	*n = (size_t)(p[*at] & 0x7f) << 24 | (size_t)p[*at + 1] << 16 | (size_t)p[*at + 2] << 8 |
	     p[*at + 3];
	*at += 4;
	return true;
}

/* libfcgi's parameters for a stream the reader said is whole: FCGI_ROLE,
 * then each pair as the C string name=value (cut at a NUL, if any). */
static void check_params(const unsigned char *p, size_t len)
{
	FUZZ_CHECK(params_parse(&req, p, len) == 0, "libfcgi refused %zu bytes of parameters", len);
	FUZZ_CHECK(FCGX_GetError(req.in) == 0, "libfcgi's input stream: error %d",
		   FCGX_GetError(req.in));
	char **envp = req.envp;
	FUZZ_CHECK(envp && envp[0] && strcmp(envp[0], "FCGI_ROLE=RESPONDER") == 0,
		   "no FCGI_ROLE first");
	size_t at = 0, count = 0;
	while (at < len) {
		size_t nl = 0, vl = 0;
		FUZZ_CHECK(length_at(p, len, &at, &nl) && length_at(p, len, &at, &vl) &&
			       nl <= len - at && vl <= len - at - nl,
			   "the reader let through a stream cut inside a pair (at %zu)", at);
		const char *name = (const char *)p + at, *value = name + nl;
		at += nl + vl;
		count++;
		const char *e = envp[count];
		FUZZ_CHECK(e, "libfcgi has %zu parameters, the stream more", count - 1);
		/* The entry as a C string: the name, '=' and the value, up to
		 * the first NUL. */
		size_t name_c = strnlen(name, nl);
		if (name_c < nl) {
			FUZZ_CHECK(strlen(e) == name_c && memcmp(e, name, name_c) == 0,
				   "parameter %zu: not its name", count);
			continue;
		}
		size_t value_c = strnlen(value, vl);
		FUZZ_CHECK(strlen(e) == nl + 1 + value_c && memcmp(e, name, nl) == 0 &&
			       e[nl] == '=' && memcmp(e + nl + 1, value, value_c) == 0,
			   "parameter %zu: not name=value", count);
		/* FCGX_GetParam scans from the start: for every pair of a
		 * short list, and the first few of a long one. */
		if (nl > 0 && count <= 512) {
			char *c = fuzz_alloc(nl + 1);
			memcpy(c, name, nl);
			c[nl] = '\0';
			FUZZ_CHECK(FCGX_GetParam(c, envp) != NULL, "parameter %zu: not found",
				   count);
			free(c);
		}
	}
	FUZZ_CHECK(envp[count + 1] == NULL, "libfcgi has more parameters than %zu pairs", count);
	params_free(&req);
}

/* The protocol's order of events, from the reader's outside. */
struct model {
	enum { IDLE, PARAMS, BODY, WHOLE } phase;
	unsigned char *params;
	size_t params_len;
};

/* Judges one event; false when the connection is over. */
static bool event(struct records *r, struct model *m, enum records_event ev,
		  const struct records_found *f, bool done)
{
	switch (ev) {
	case RECORDS_MORE:
		break;
	case RECORDS_BEGIN:
		FUZZ_CHECK(m->phase == IDLE && f->id != 0, "BEGIN %u in phase %d", f->id, m->phase);
		m->phase = PARAMS;
		m->params_len = 0;
		break;
	case RECORDS_PARAMS:
		FUZZ_CHECK(m->phase == PARAMS, "PARAMS in phase %d", m->phase);
		FUZZ_CHECK(f->len <= RECORDS_PARAMS_MAX - m->params_len,
			   "parameters over RECORDS_PARAMS_MAX");
		memcpy(m->params + m->params_len, f->data, f->len);
		m->params_len += f->len;
		break;
	case RECORDS_PARAMS_END:
		FUZZ_CHECK(m->phase == PARAMS, "PARAMS_END in phase %d", m->phase);
		m->phase = BODY;
		check_params(m->params, m->params_len);
		break;
	case RECORDS_STDIN:
		FUZZ_CHECK(m->phase == BODY, "STDIN in phase %d", m->phase);
		break;
	case RECORDS_STDIN_END:
		FUZZ_CHECK(m->phase == BODY, "STDIN_END in phase %d", m->phase);
		m->phase = WHOLE;
		break;
	case RECORDS_ABORT:
		FUZZ_CHECK(m->phase != IDLE, "ABORT with no request");
		break;
	case RECORDS_GET_VALUES:
		FUZZ_CHECK((f->asked & ~7u) == 0, "asked %#x", f->asked);
		break;
	case RECORDS_UNKNOWN_TYPE:
		FUZZ_CHECK(f->type <= 255 && f->type != 9, "UNKNOWN_TYPE %u", f->type);
		break;
	case RECORDS_UNKNOWN_ROLE:
		FUZZ_CHECK(m->phase == IDLE && f->id != 0, "UNKNOWN_ROLE %u in phase %d", f->id,
			   m->phase);
		return false;
	case RECORDS_CANT_MPX:
		FUZZ_CHECK(m->phase != IDLE && f->id != 0, "CANT_MPX %u in phase %d", f->id,
			   m->phase);
		return false;
	case RECORDS_BROKEN:
		FUZZ_CHECK(f->why && f->why[0], "BROKEN without a sentence");
		return false;
	default:
		FUZZ_CHECK(false, "event %d", (int)ev);
	}
	if (done && (ev == RECORDS_STDIN_END || ev == RECORDS_ABORT)) {
		records_request_done(r);
		m->phase = IDLE;
	}
	FUZZ_CHECK(records_in_request(r) == (m->phase != IDLE), "records_in_request: %d",
		   records_in_request(r));
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t nsizes = data[0] & 7u;
	bool done = !(data[0] & 8u);
	if (size < 1 + nsizes)
		return 0;
	const uint8_t *sizes = data + 1;
	const uint8_t *stream = data + 1 + nsizes;
	size_t len = size - 1 - nsizes;
	bool any = false;
	for (size_t i = 0; i < nsizes; i++)
		any = any || sizes[i] > 0;

	struct records r;
	records_init(&r);
	struct model m = {.phase = IDLE, .params = fuzz_alloc(RECORDS_PARAMS_MAX)};
	size_t consumed = 0, pieces = 0;
	bool open = true;
	for (size_t from = 0, k = 0; open && (from < len || k == 0); k++) {
		size_t n = len - from;
		if (any && sizes[k % nsizes] < n)
			n = sizes[k % nsizes];
		/* Each piece in a buffer of its exact size: ASan sees a read
		 * past it. */
		unsigned char *piece = fuzz_alloc(n);
		memcpy(piece, stream + from, n);
		from += n;
		size_t at = 0, calls = 0, idle = 0;
		while (open) {
			size_t used = SIZE_MAX, left = n - at;
			struct records_found f;
			enum records_event ev = records_read(&r, piece + at, left, &used, &f);
			FUZZ_CHECK(used <= left, "used %zu of %zu bytes", used, left);
			consumed += used;
			if (ev == RECORDS_PARAMS || ev == RECORDS_STDIN) {
				FUZZ_CHECK(f.len > 0 && f.data >= piece + at &&
					       f.len <= (size_t)(piece + at + used - f.data),
					   "a piece of %zu bytes outside the %zu used", f.len,
					   used);
				pieces += f.len;
				FUZZ_CHECK(pieces <= consumed, "pieces of %zu bytes from %zu used",
					   pieces, consumed);
			}
			at += used;
			/* Every call uses bytes or finds something; two in a
			 * row that use none of the bytes given would go round
			 * for ever. */
			idle = used == 0 && left > 0 ? idle + 1 : 0;
			FUZZ_CHECK(idle <= 1, "two calls in a row use none of %zu bytes", left);
			FUZZ_CHECK(++calls <= 2 * n + 4, "%zu calls on a piece of %zu bytes", calls,
				   n);
			if (ev == RECORDS_MORE) {
				FUZZ_CHECK(at == n, "RECORDS_MORE with %zu bytes unused", n - at);
				break;
			}
			open = event(&r, &m, ev, &f, done);
		}
		free(piece);
	}
	free(m.params);
	return 0;
}
