/* Log lines on stderr, one write(2) each so threads never interleave. */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>

enum log_level {
	LOG_ERROR = 0,  /* always shown: failures of the service itself */
	LOG_NOTICE = 1, /* start, exit, failed requests; hidden by --quiet */
	LOG_DEBUG = 2   /* every request; shown with --verbose */
};

void log_set_level(enum log_level level);
int log_enabled(enum log_level level);

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void log_msg(enum log_level level, const char *fmt, ...);

/* Copies untrusted text for a log line: bytes outside printable ASCII become
 * '?', and it is cut to size - 1 bytes, so a request cannot forge lines. */
void log_clean(char *dst, size_t size, const char *src);

#endif
