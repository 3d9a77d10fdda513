/* The listening socket: inherited on fd 0 (spawn-fcgi) or opened from
 * --listen unix:PATH / HOST:PORT. */
#ifndef LISTEN_H
#define LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct listener {
	int fd;
	char name[512];  /* for the log: unix:PATH, HOST:PORT or "fd 0 (...)" */
	char *unix_path; /* a socket file this process made, removed at exit */
	dev_t dev;
	ino_t ino;
};

/* Opens or adopts the socket. On failure returns -1 with a sentence in err. */
int listener_open(struct listener *l, const char *spec, mode_t mode, char *err, size_t err_size);

/* Stops taking connections at once: new ones are refused, not queued.
 * Other processes sharing the socket (spawn-fcgi -F, systemd) keep it. */
void listener_refuse(struct listener *l);

/* Closes the socket and removes the socket file if it is still ours. */
void listener_close(struct listener *l);

#endif
