/*
 * chat-fcgi: the FastCGI backend of the chat page. nginx serves the page
 * and passes POST /chat/ here; see chat.c for what is answered.
 */
#include "allow.h"
#include "chat.h"
#include "listen.h"
#include "log.h"
#include "options.h"
#include "sandbox.h"
#include "server/server.h"
#include "store.h"

#include <fcgiapp.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* SIGTERM must end the process within 5 s: requests in flight and their
 * answers get this long, the threads a little more (src/server/loop.c). */
#define SHUTDOWN_GRACE_MS 2500u

/* The server's change detector, for waiters woken by other processes. */
static int store_version(void *ctx, uint64_t *version)
{
	return store_data_version(ctx, version);
}

/* Which rooms those were. */
static void store_rooms(void *ctx, struct store_changes *out)
{
	store_changed_rooms(ctx, out);
}

/* GET /chat/health asks this. */
static int store_health(void *ctx, char *why, size_t why_size)
{
	return store_check(ctx, why, why_size);
}

int main(int argc, char **argv)
{
	struct options opt;
	switch (options_parse(argc, argv, &opt)) {
	case OPTIONS_EXIT:
		return 0;
	case OPTIONS_USAGE:
		return 2;
	case OPTIONS_RUN:
		break;
	}
	log_set_level(opt.verbosity == 0 ? LOG_ERROR : opt.verbosity == 1 ? LOG_NOTICE : LOG_DEBUG);

	/* Signals go to one place, sigwait below: workers never see them. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		log_msg(LOG_ERROR, "cannot set up signal handling");
		return 1;
	}

	char err[512];
	/* Who may connect over TCP: --allow-from, else libfcgi's own variable,
	 * which its accept reads and the server's own accept must honour too. */
	static struct allow_list allow;
	const char *allow_from = opt.allow_from ? opt.allow_from : getenv("FCGI_WEB_SERVER_ADDRS");
	if (allow_from && *allow_from && allow_parse(&allow, allow_from, err, sizeof err) != 0) {
		log_msg(LOG_ERROR, "%s: %s",
			opt.allow_from ? "--allow-from" : "FCGI_WEB_SERVER_ADDRS", err);
		return 1;
	}
	struct listener l;
	if (listener_open(&l, opt.listen, opt.socket_mode, err, sizeof err) != 0) {
		log_msg(LOG_ERROR, "%s", err);
		return 1;
	}
	/* After the socket: a bad socket is reported first. */
	struct store *store = NULL;
	if (opt.store_path) {
		struct store_options so = {.history = opt.room_history,
					   .sync_full = opt.store_sync_full};
		if (store_open(&store, opt.store_path, &so, err, sizeof err) != 0) {
			log_msg(LOG_ERROR, "%s", err);
			listener_close(&l);
			return 1;
		}
	}

	if (FCGX_Init() != 0) {
		log_msg(LOG_ERROR, "libfcgi failed to initialise");
		listener_close(&l);
		store_close(store);
		return 1;
	}
	if (!server_libfcgi_works()) {
		log_msg(LOG_ERROR, "this libfcgi does not read and write through the OS_Read and "
				   "OS_Write chat-fcgi defines (was it linked with -Bsymbolic?): "
				   "requests cannot be handed to it");
		listener_close(&l);
		store_close(store);
		return 1;
	}

	/* From here on the process only serves: confine it before the first
	 * request, and before the workers start so that they inherit it. */
	const char *confined = "seccomp";
	char unknown[256];
	if (!opt.sandbox) {
		confined = "off (--no-sandbox)";
	} else if (sandbox_support() == SANDBOX_UNSUPPORTED_SANITIZER) {
		confined = "off (sanitizer build)";
	} else if (sandbox_enter_with(store && store_is_postgresql(opt.store_path), unknown,
				      sizeof unknown, err, sizeof err) != 0) {
		log_msg(LOG_ERROR, "%s (--no-sandbox runs without it)", err);
		listener_close(&l);
		return 1;
	} else if (unknown[0]) {
		/* A newer C library may need one of them, and gets ENOSYS. */
		log_msg(LOG_NOTICE,
			"sandbox: this libseccomp does not know %s: under the filter they fail "
			"with ENOSYS",
			unknown);
	}

	struct server_config cfg = {
	    .listen_fd = l.fd,
	    .threads = opt.threads,
	    .pollers = opt.pollers,
	    .max_held = opt.max_waits,
	    .max_streams = opt.max_streams,
	    .max_posts = opt.max_posts,
	    .max_queue = opt.max_queue,
	    .send_timeout_ms = opt.send_timeout_s * 1000u,
	    .receive_timeout_ms = opt.receive_timeout_s * 1000u,
	    .allow = allow_from && *allow_from ? &allow : NULL,
	    .limits = {.max_body = opt.max_body,
		       .store = store,
		       .stream_pace_ms = opt.stream_pace_ms},
	    .store_version = store ? store_version : NULL,
	    .store_rooms = store ? store_rooms : NULL,
	    .store_check = store ? store_health : NULL,
	    .store_ctx = store,
	};
	struct server *srv = server_start(&cfg);
	if (!srv) {
		listener_close(&l);
		store_close(store);
		return 1;
	}
	/* A PostgreSQL URI may hold a password: it is not logged. */
	bool pg = store && store_is_postgresql(opt.store_path);
	log_msg(LOG_NOTICE,
		"chat-fcgi %s listening on %s with %u threads, max body %zu bytes, store %s%s, "
		"sandbox %s",
		VERSION_STRING, l.name, opt.threads, opt.max_body,
		pg      ? "postgresql"
		: store ? "sqlite:"
			: "none",
		store && !pg ? opt.store_path : "", confined);

	int sig = 0;
	if (sigwait(&stop, &sig) != 0)
		sig = SIGTERM;
	log_msg(LOG_NOTICE, "%s: finishing requests in flight",
		sig == SIGINT ? "SIGINT" : "SIGTERM");
	listener_refuse(&l);
	unsigned long served = server_stop(srv, SHUTDOWN_GRACE_MS);
	listener_close(&l);
	/* The store stays open: a worker still inside a request after the grace
	 * period may be using it, and every commit is already on disk. */
	log_msg(LOG_NOTICE, "exiting after %lu requests", served);
	return 0;
}
