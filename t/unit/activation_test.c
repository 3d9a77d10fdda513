/* socket_activation_check: LISTEN_PID and LISTEN_FDS as systemd sets them
 * (sd_listen_fds(3)), judged without touching the environment. */
#include "listen.h"
#include "tap.h"

static int check(const char *pid, const char *fds, char *err, size_t size)
{
	err[0] = '\0';
	return socket_activation_check(pid, fds, 4242, err, size);
}

int main(void)
{
	char err[256];

	is_int(check(NULL, NULL, err, sizeof err), 0, "no LISTEN_PID: not socket-activated");
	is_int(check(NULL, "1", err, sizeof err), 0, "LISTEN_FDS alone: not socket-activated");
	is_int(check("4242", "1", err, sizeof err), 1, "our pid and one socket: use fd 3");
	is_str(err, "", "... with no error");

	/* Meant for another process: left alone, not an error. */
	is_int(check("4243", "1", err, sizeof err), 0, "another pid: ignored");
	is_int(check("4243", "2", err, sizeof err), 0, "another pid with 2 sockets: ignored");
	is_int(check("1", "1", err, sizeof err), 0, "pid 1: ignored");
	static const char *const bad_pids[] = {
	    "", "0", "-4242", "+4242", " 4242", "4242 ", "4242x", "0x1092", "99999999999999999999"};
	for (size_t i = 0; i < sizeof bad_pids / sizeof *bad_pids; i++)
		is_int(check(bad_pids[i], "1", err, sizeof err), 0,
		       "LISTEN_PID '%s' is not our pid: ignored", bad_pids[i]);

	/* For us, but wrong: a clear error. */
	is_int(check("4242", "2", err, sizeof err), -1, "LISTEN_FDS=2: error");
	ok(strstr(err, "2 sockets") && strstr(err, "ListenStream="), "... saying what to fix: %s",
	   err);
	is_int(check("4242", "0", err, sizeof err), -1, "LISTEN_FDS=0: error");
	ok(strstr(err, "0 sockets") != NULL, "... naming the count: %s", err);
	is_int(check("4242", NULL, err, sizeof err), -1, "LISTEN_FDS missing: error");
	ok(strstr(err, "not set") != NULL, "... saying so: %s", err);
	static const char *const bad_fds[] = {
	    "", "x", "1x", "-1", " 1", "1 ", "99999999999999999999"};
	for (size_t i = 0; i < sizeof bad_fds / sizeof *bad_fds; i++) {
		is_int(check("4242", bad_fds[i], err, sizeof err), -1, "LISTEN_FDS '%s': error",
		       bad_fds[i]);
		ok(strstr(err, "LISTEN_FDS") != NULL, "... naming the variable: %s", err);
	}

	/* A short buffer still gets a terminated sentence. */
	char tiny[8];
	is_int(check("4242", "3", tiny, sizeof tiny), -1, "a tiny error buffer: still -1");
	is_int((long long)strlen(tiny), (long long)sizeof tiny - 1, "... and the sentence is cut");
	return done_testing();
}
