#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static enum log_level shown = LOG_NOTICE;

void log_set_level(enum log_level level)
{
	shown = level;
}

int log_enabled(enum log_level level)
{
	return level <= shown;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	/* Lines longer than this are cut: a log line is for a person to read. */
	char line[1024];
	static const char prefix[] = "chat-fcgi: ";

	if (!log_enabled(level))
		return;
	size_t n = sizeof prefix - 1;
	for (size_t i = 0; i < n; i++)
		line[i] = prefix[i];

	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
	va_end(ap);
	if (r < 0)
		return;
	n += (size_t)r < sizeof line - n - 1 ? (size_t)r : sizeof line - n - 2;
	line[n++] = '\n';

	/* A log that cannot be written has nowhere to report to: give up. */
	for (size_t off = 0; off < n;) {
		ssize_t w = write(STDERR_FILENO, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

void log_clean(char *dst, size_t size, const char *src)
{
	size_t i = 0;
	if (size == 0)
		return;
	for (; src && src[i] && i + 1 < size; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	dst[i] = '\0';
}
