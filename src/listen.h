/* The listening socket: passed by systemd on fd 3 (LISTEN_FDS), inherited
 * on fd 0 (spawn-fcgi) or opened from --listen unix:PATH / HOST:PORT. */
#ifndef LISTEN_H
#define LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct listener {
	int fd;
	char name[512];  /* for the log: unix:PATH, HOST:PORT, "... (fd 0)" */
	char *unix_path; /* a socket file this process made, removed at exit */
	dev_t dev;
	ino_t ino;
};

/* Where systemd's socket activation puts the first socket (SD_LISTEN_FDS_START). */
#define SD_LISTEN_FD 3

/* Judges LISTEN_PID and LISTEN_FDS (either may be NULL) for the process
 * self: 1 when one socket waits on fd 3, 0 when the variables are absent or
 * meant for another process, -1 with a sentence in err when they are wrong
 * for us. Pure, so the unit tests call it directly. */
int socket_activation_check(const char *listen_pid, const char *listen_fds, pid_t self, char *err,
			    size_t err_size);

/* Opens or adopts the socket: systemd's on fd 3 first, then --listen (spec),
 * then fd 0 when spec is NULL. On failure returns -1 with a sentence in err. */
int listener_open(struct listener *l, const char *spec, mode_t mode, char *err, size_t err_size);

/* Stops taking connections at once: new ones are refused, not queued.
 * Other processes sharing the socket (spawn-fcgi -F, systemd) keep it. */
void listener_refuse(struct listener *l);

/* Closes the socket and removes the socket file if it is still ours. */
void listener_close(struct listener *l);

#endif
