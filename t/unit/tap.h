/*
 * A tiny header-only TAP producer for the C unit tests, read by prove.
 *
 *   plan(n);                      optional: "1..n" up front
 *   ok(cond, "name %d", i);       one test; returns cond
 *   is_int(got, want, "name");    integers, both shown on failure
 *   is_str(got, want, "name");    NUL-terminated strings (NULL allowed)
 *   is_mem(got, got_len, want, want_len, "name");
 *                                 byte strings, escaped, with the first
 *                                 differing offset shown on failure
 *   diag("fmt", ...);             a "# " comment line
 *   return done_testing();        prints the plan if none was given;
 *                                 exit status 1 if anything failed
 *
 * Everything is static inline so that a test need not use every helper.
 * Output goes to stdout only, flushed after each test, so that a crash
 * still shows the last test that ran.
 */
#ifndef TAP_H
#define TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__)
#define TAP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TAP_PRINTF(f, a)
#endif

struct tap_state {
	int planned; /* -1 until plan() */
	int run;
	int failed;
};

static struct tap_state tap_state_ = {-1, 0, 0};

static inline void plan(int n)
{
	tap_state_.planned = n;
	printf("1..%d\n", n);
	fflush(stdout);
}

static inline void diag(const char *fmt, ...) TAP_PRINTF(1, 2);
static inline void diag(const char *fmt, ...)
{
	va_list ap;
	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* Prints bytes as a C string literal: printable ASCII as is, the rest
 * escaped; long strings are cut in the middle. */
static inline void tap_print_escaped_(const char *s, size_t len)
{
	static const size_t keep = 120;

	if (!s) {
		fputs("NULL", stdout);
		return;
	}
	fputc('"', stdout);
	for (size_t i = 0; i < len; i++) {
		if (len > 2 * keep && i == keep) {
			printf("\"...(%zu bytes)...\"", len - 2 * keep);
			i = len - keep - 1;
			continue;
		}
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"':
			fputs("\\\"", stdout);
			break;
		case '\\':
			fputs("\\\\", stdout);
			break;
		case '\n':
			fputs("\\n", stdout);
			break;
		case '\r':
			fputs("\\r", stdout);
			break;
		case '\t':
			fputs("\\t", stdout);
			break;
		default:
			if (c < 0x20 || c >= 0x7F)
				printf("\\x%02X", c);
			else
				fputc(c, stdout);
		}
	}
	fputc('"', stdout);
	printf(" (%zu bytes)", len);
}

static inline bool tap_vok_(bool cond, const char *file, int line, const char *fmt, va_list ap)
    TAP_PRINTF(4, 0);
static inline bool tap_vok_(bool cond, const char *file, int line, const char *fmt, va_list ap)
{
	tap_state_.run++;
	if (!cond) {
		tap_state_.failed++;
		fputs("not ", stdout);
	}
	printf("ok %d - ", tap_state_.run);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	if (!cond)
		printf("#   Failed test at %s line %d.\n", file, line);
	fflush(stdout);
	return cond;
}

static inline bool tap_ok_(bool cond, const char *file, int line, const char *fmt, ...)
    TAP_PRINTF(4, 5);
static inline bool tap_ok_(bool cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok_(cond, file, line, fmt, ap);
	va_end(ap);
	return r;
}

static inline bool tap_is_int_(long long got, long long want, const char *file, int line,
			       const char *fmt, ...) TAP_PRINTF(5, 6);
static inline bool tap_is_int_(long long got, long long want, const char *file, int line,
			       const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok_(got == want, file, line, fmt, ap);
	va_end(ap);
	if (!r) {
		printf("#          got: %lld\n", got);
		printf("#     expected: %lld\n", want);
		fflush(stdout);
	}
	return r;
}

static inline void tap_mem_diff_(const char *got, size_t got_len, const char *want, size_t want_len)
{
	fputs("#          got: ", stdout);
	tap_print_escaped_(got, got_len);
	fputs("\n#     expected: ", stdout);
	tap_print_escaped_(want, want_len);
	fputc('\n', stdout);
	if (got && want) {
		size_t i = 0;
		while (i < got_len && i < want_len && got[i] == want[i])
			i++;
		printf("#   first difference at byte %zu\n", i);
	}
	fflush(stdout);
}

static inline bool tap_is_mem_(const void *got, size_t got_len, const void *want, size_t want_len,
			       const char *file, int line, const char *fmt, ...) TAP_PRINTF(7, 8);
static inline bool tap_is_mem_(const void *got, size_t got_len, const void *want, size_t want_len,
			       const char *file, int line, const char *fmt, ...)
{
	bool same;
	if (!got || !want)
		same = !got && !want;
	else
		same = got_len == want_len && (got_len == 0 || memcmp(got, want, got_len) == 0);
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok_(same, file, line, fmt, ap);
	va_end(ap);
	if (!r)
		tap_mem_diff_(got, got_len, want, want_len);
	return r;
}

static inline bool tap_is_str_(const char *got, const char *want, const char *file, int line,
			       const char *fmt, ...) TAP_PRINTF(5, 6);
static inline bool tap_is_str_(const char *got, const char *want, const char *file, int line,
			       const char *fmt, ...)
{
	bool same = (!got || !want) ? (!got && !want) : strcmp(got, want) == 0;
	va_list ap;
	va_start(ap, fmt);
	bool r = tap_vok_(same, file, line, fmt, ap);
	va_end(ap);
	if (!r)
		tap_mem_diff_(got, got ? strlen(got) : 0, want, want ? strlen(want) : 0);
	return r;
}

/* The name (and its format arguments) is always the last argument. */
#define ok(cond, ...) tap_ok_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...)                                                                     \
	tap_is_int_((long long)(got), (long long)(want), __FILE__, __LINE__, __VA_ARGS__)
#define is_str(got, want, ...) tap_is_str_((got), (want), __FILE__, __LINE__, __VA_ARGS__)
#define is_mem(got, got_len, want, want_len, ...)                                                  \
	tap_is_mem_((got), (got_len), (want), (want_len), __FILE__, __LINE__, __VA_ARGS__)

/* Returns the exit status for main. */
static inline int done_testing(void)
{
	if (tap_state_.planned < 0) {
		printf("1..%d\n", tap_state_.run);
	} else if (tap_state_.planned != tap_state_.run) {
		printf("# planned %d tests but ran %d\n", tap_state_.planned, tap_state_.run);
		fflush(stdout);
		return 1;
	}
	if (tap_state_.failed)
		printf("# failed %d of %d tests\n", tap_state_.failed, tap_state_.run);
	fflush(stdout);
	return tap_state_.failed ? 1 : 0;
}

#endif
