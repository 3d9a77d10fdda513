package ChatTest;

# A private nginx and chat-fcgi for one test file, in the spirit of nginx's
# own test suite: a temp dir, the project's real nginx snippet rendered by
# conf/render on a free port, raw HTTP requests, logs read at the end.
#
#   my $t = ChatTest->new(backend_args => ['--max-body', '1000']);
#   my $r = $t->request(method => 'POST', path => '/chat/', body => '{}',
#                       headers => ['Content-Type' => 'application/json']);
#   is($r->{status}, 200); is($t->json($r)->{message}, 'received ');
#   $t->done;    # stops everything and checks the logs for alerts
#
# Options of new: backend_args => [...], spawn => 1 (start the backend under
# spawn-fcgi), supervise => 1 (under conf/chat-fcgi-supervise, which restarts
# it when it dies: backend_pid is then the supervisor's, supervised_pid the
# running chat-fcgi's), server_extra / http_extra => nginx directives for
# those blocks, no_backend => 1, no_nginx => 1, rate_limit => 'off' (or a
# rate such as '50r/s'; the default is the shipped conf/rate-limit.conf; see
# conf/render), backend_env => {NAME => VALUE, ...} (set in the backend's
# environment only, e.g. LD_PRELOAD: nginx and the test do not get it; a
# spawn-fcgi, supervisor or valgrind that starts the backend does, and
# passes it on), wrap => [COMMAND...] (runs the backend as COMMAND... chat-fcgi
# ARGS: COMMAND must exec it in the same process, as unshare(1) does, so
# that backend_pid is chat-fcgi's own). The backend keeps
# its rooms in $t->store_path (chat.db in the temp dir) unless backend_args
# has --store.
#
# Environment: CHAT_FCGI (the backend binary), CHAT_SRCDIR (the source
# tree), CHAT_NGINX, CHAT_SPAWN_FCGI, CHAT_KEEP=1 keeps the temp dir, CHAT_VERBOSE=1
# prints the logs at the end. CHAT_VALGRIND=1 runs every backend under
# valgrind memcheck (backend_command), and done fails on any error it logs.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(WNOHANG);
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(sleep time);

my @live;    # every ChatTest not yet stopped, for END

sub which {
	my ($name, @extra) = @_;
	for my $d (split(/:/, $ENV{PATH} // ''), @extra) {
		return "$d/$name" if -x "$d/$name";
	}
	return undef;
}

# How much longer than usual things may take: valgrind runs the backend
# some twenty times slower.
sub slack { return $ENV{CHAT_VALGRIND} ? 6 : 1 }

# The command that runs the backend: as is, or under valgrind memcheck when
# CHAT_VALGRIND=1, logging to $dir/valgrind-PID.log. Errors and "definitely
# lost" leaks make the exit status 99 and are found by valgrind_problems.
sub backend_command {
	my ($dir, @cmd) = @_;
	return @cmd unless $ENV{CHAT_VALGRIND};
	my $valgrind = which('valgrind', '/usr/bin') or BAIL_OUT('CHAT_VALGRIND=1 but no valgrind');
	return ($valgrind, '--error-exitcode=99', '--leak-check=full',
		'--errors-for-leak-kinds=definite', '--show-leak-kinds=definite',
		'--track-fds=no', "--log-file=$dir/valgrind-%p.log", @cmd,
		# valgrind does not know the seccomp call, so no sandbox under it.
		'--no-sandbox');
}

# The valgrind logs under $dir that report an error or a definite leak,
# with their text; '' when there are none (or valgrind was not used).
sub valgrind_problems {
	my ($dir) = @_;
	my $bad = '';
	for my $log (sort glob("$dir/valgrind-*.log")) {
		my $text = read_file($log);
		# Definite leaks count as errors; a process killed by SIGKILL
		# leaves no summary, and nothing to judge.
		$bad .= "$log:\n$text"
			if $text =~ /ERROR SUMMARY: [1-9]|definitely lost: [1-9]/;
	}
	return $bad;
}

# Sanitizer reports (AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer)
# in a log; a sanitized backend writes them to its stderr.
sub sanitizer_report {
	my ($text) = @_;
	return $text =~ /AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer/;
}

sub srcdir {
	return $ENV{CHAT_SRCDIR} // dirname(dirname(dirname(abs_path(__FILE__))));
}

sub new {
	my ($class, %opt) = @_;
	my $src = srcdir();
	my $self = bless {
		opt     => \%opt,
		src     => $src,
		bin     => $ENV{CHAT_FCGI} // "$src/src/chat-fcgi",
		nginx   => $ENV{CHAT_NGINX} // which('nginx', '/usr/sbin', '/sbin'),
		spawn   => $ENV{CHAT_SPAWN_FCGI} // which('spawn-fcgi', '/usr/bin', '/usr/sbin'),
	}, $class;

	# Skips only for a missing tool; CI installs them all.
	plan(skip_all => 'nginx not installed') unless $self->{nginx} && -x $self->{nginx};
	plan(skip_all => 'spawn-fcgi not installed')
		if ($opt{spawn} || $opt{supervise}) && !($self->{spawn} && -x $self->{spawn});
	BAIL_OUT("no chat-fcgi binary at $self->{bin}: run make first") unless -x $self->{bin};

	$self->{dir} = tempdir('chat-fcgi-t-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});
	$self->{socket} = "$self->{dir}/chat.sock";
	$self->{port} = free_port();

	my @render = ("$src/conf/render", $self->{dir}, $self->{port}, $self->{socket},
		"$src/html");
	for my $part (qw(server_extra http_extra)) {
		my $f = '';
		if (defined $opt{$part}) {
			$f = "$self->{dir}/$part.conf";
			write_file($f, $opt{$part});
		}
		push @render, $f;
	}
	{
		local $ENV{CHAT_RATE_LIMIT} = $opt{rate_limit} // 'on';
		system(@render) == 0 or BAIL_OUT("conf/render failed");
	}

	push @live, $self;
	$self->start_backend unless $opt{no_backend};
	$self->start_nginx unless $opt{no_nginx};
	return $self;
}

sub dir    { $_[0]{dir} }
sub port   { $_[0]{port} }
sub socket { $_[0]{socket} }
sub bin    { $_[0]{bin} }
sub url    { my ($self, $path) = @_; return "http://127.0.0.1:$self->{port}" . ($path // '/') }

sub free_port {
	for (1 .. 50) {
		my $port = 20000 + int(rand(30000));
		my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
			Proto => 'tcp', ReuseAddr => 0) or next;
		close $s;
		return $port;
	}
	BAIL_OUT('no free port found');
}

sub write_file {
	my ($path, $text) = @_;
	open(my $fh, '>', $path) or die "$path: $!";
	print $fh $text;
	close $fh or die "$path: $!";
}

sub read_file {
	my ($path) = @_;
	open(my $fh, '<', $path) or return '';
	local $/;
	return scalar <$fh>;
}

# nginx -t on an nginx.conf of its own in the directory run: the http level
# includes http_include (a file or a glob), one server includes
# server_include, as an admin's nginx.conf would. Returns nginx's exit
# status (as $?) and what it printed.
sub nginx_accepts_snippets {
	my ($nginx, $run, $http_include, $server_include) = @_;
	write_file("$run/nginx.conf", <<"CONF");
pid $run/nginx.pid;
error_log $run/error.log;
events { }
http {
    access_log off;
    client_body_temp_path $run/body;
    include $http_include;
    server { listen 127.0.0.1:1; include $server_include; }
}
CONF
	my $out = `"$nginx" -t -p "$run/" -c "$run/nginx.conf" -e "$run/error.log" 2>&1`;
	return ($?, $out);
}

# Starts chat-fcgi on the test's socket: by itself with --listen, or under
# spawn-fcgi (fd 0) when the test asked for spawn => 1. Extra arguments
# replace the ones given to new.
sub start_backend {
	my ($self, @args) = @_;
	@args = @{ $self->{opt}{backend_args} // [] } unless @args;
	push @args, '--store', "sqlite:" . $self->store_path unless grep { /^--store(=|$)/ } @args;
	my @backend = backend_command($self->{dir}, $self->{bin});
	# strace => PATH: every thread's system calls go to trace_log (-D: the
	# tracer is a grandchild, so the pid is chat-fcgi's own).
	unshift @backend, $self->{opt}{strace}, '-D', '-f', '-qq', '-o', $self->trace_log, '--'
		if $self->{opt}{strace};
	unshift @backend, @{ $self->{opt}{wrap} } if $self->{opt}{wrap};
	my @spawn = ('-s', $self->{socket}, '-M', '0600', '--', @backend, @args);
	my @cmd = $self->{opt}{supervise} ? ("$self->{src}/conf/chat-fcgi-supervise", @spawn)
		: $self->{opt}{spawn} ? ($self->{spawn}, '-n', @spawn)
		: (@backend, '--listen', "unix:$self->{socket}", '--socket-mode', '0600', @args);
	local $ENV{SPAWN_FCGI} = $self->{spawn} if $self->{opt}{supervise};
	# The child inherits the environment of the fork; local puts the test's
	# own back right after it.
	my $env = $self->{opt}{backend_env} // {};
	local @ENV{ keys %$env } = values %$env;
	my $pid = $self->spawn_logged("$self->{dir}/backend.log", @cmd);
	$self->{backend} = $pid;
	$self->wait_for_socket($pid) or BAIL_OUT("chat-fcgi did not start:\n" . $self->backend_log);
	# Under spawn-fcgi the socket is there before chat-fcgi even runs: its
	# start line is what says it is confined, threaded and serving.
	$self->wait_for_log(qr/ listening on /)
		or BAIL_OUT("chat-fcgi never logged its start line:\n" . $self->backend_log);
	return $pid;
}

sub spawn_logged {
	my ($self, $log, @cmd) = @_;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0) {
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $log);
		open(STDERR, '>>', $log);
		exec(@cmd) or POSIX::_exit(127);
	}
	return $pid;
}

sub wait_for_socket {
	my ($self, $pid) = @_;
	my $deadline = time + 5 * slack();
	while (time < $deadline) {
		return 0 if waitpid($pid, WNOHANG) == $pid;
		my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $self->{socket});
		if ($s) { close $s; return 1 }
		sleep 0.02;
	}
	return 0;
}

sub wait_for_log {
	my ($self, $re) = @_;
	my $deadline = time + 5 * slack();
	while (time < $deadline) {
		return 1 if $self->backend_log =~ $re;
		sleep 0.02;
	}
	return 0;
}

sub backend_pid { $_[0]{backend} }
sub store_path  { "$_[0]{dir}/chat.db" }
sub trace_log   { "$_[0]{dir}/strace.log" }

# The processes whose parent is $pid (from /proc: Linux only).
sub children_of {
	my ($pid) = @_;
	my @kids;
	for my $stat (glob '/proc/[0-9]*/stat') {
		my $line = read_file($stat);
		# pid (comm) state ppid: comm may hold spaces and parentheses.
		push @kids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $pid;
	}
	return @kids;
}

# Under supervise => 1: the chat-fcgi the supervisor runs now (undef while
# it is between two runs).
sub supervised_pid {
	my ($self) = @_;
	my $sup = $self->{backend} or return;
	my ($kid) = children_of($sup);
	return $kid;
}

# Sends a signal to the backend and waits for it to exit; returns its exit
# status (as $?) and the seconds it took, or undef if it outlived timeout.
sub signal_backend {
	my ($self, $sig, $timeout) = @_;
	my $pid = $self->{backend} or return;
	kill($sig, $pid);
	my $t0 = time;
	while (time - $t0 < ($timeout // 10 * slack())) {
		if (waitpid($pid, WNOHANG) == $pid) {
			delete $self->{backend};
			return wantarray ? ($?, time - $t0) : $?;
		}
		sleep 0.02;
	}
	return;
}

sub stop_backend {
	my ($self) = @_;
	my @r = $self->signal_backend('TERM');
	return @r if @r;
	$self->signal_backend('KILL') if $self->{backend};
	return;
}

sub start_nginx {
	my ($self) = @_;
	my $d = $self->{dir};
	$self->{nginx_pid} = $self->spawn_logged("$d/nginx.out", $self->{nginx}, '-p', "$d/", '-c',
		"$d/nginx.conf", '-e', "$d/nginx-error.log");
	my $deadline = time + 5;
	while (time < $deadline) {
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
			Proto => 'tcp');
		if ($s) { close $s; return 1 }
		BAIL_OUT("nginx did not start:\n" . read_file("$d/nginx-error.log") . read_file("$d/nginx.out"))
			if waitpid($self->{nginx_pid}, WNOHANG) == $self->{nginx_pid};
		sleep 0.02;
	}
	BAIL_OUT("nginx did not listen on $self->{port}");
}

sub stop_nginx {
	my ($self) = @_;
	my $pid = delete $self->{nginx_pid} or return;
	kill('QUIT', $pid);
	my $deadline = time + 5;
	while (time < $deadline) {
		return if waitpid($pid, WNOHANG) == $pid;
		sleep 0.02;
	}
	kill('KILL', $pid);
	waitpid($pid, 0);
}

sub backend_log { read_file("$_[0]{dir}/backend.log") }
sub error_log   { read_file("$_[0]{dir}/nginx-error.log") }
sub access_log  { read_file("$_[0]{dir}/access.log") }

# Raw HTTP: sends $raw as is and reads until the server closes or timeout.
sub http {
	my ($self, $raw, %o) = @_;
	return read_until_closed($self->send_raw($raw), $o{timeout});
}

# Connects to nginx and sends raw; returns the socket.
sub send_raw {
	my ($self, $raw) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
		Proto => 'tcp', Timeout => 5) or die "connect: $!";
	binmode $s;
	$s->autoflush(1);
	print $s $raw;
	return $s;
}

# What the server sends until it closes, or timeout seconds (default 10).
sub read_until_closed {
	my ($s, $timeout) = @_;
	my $out = '';
	my $deadline = time + ($timeout // 10);
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	while (time < $deadline) {
		my $n = select(my $rout = $rin, undef, undef, 0.05);
		next unless $n;
		my $got = sysread($s, my $buf, 65536);
		last unless $got;
		$out .= $buf;
	}
	close $s;
	return $out;
}

# A raw request: method, path, headers (a list of name => value pairs, so a
# header may repeat), body. Host, Connection: close and Content-Length (when
# there is a body and no length was given) are added.
sub raw_request {
	my (%r) = @_;
	my @h = @{ $r{headers} // [] };
	my %given = map { lc($h[$_ * 2]) => 1 } 0 .. int(@h / 2) - 1;
	my $raw = ($r{method} // 'GET') . ' ' . ($r{path} // '/') . " HTTP/1.1\r\n";
	$raw .= "Host: localhost\r\n" unless $given{host};
	$raw .= "Connection: close\r\n" unless $given{connection};
	$raw .= 'Content-Length: ' . length($r{body}) . "\r\n"
		if defined $r{body} && !$given{'content-length'} && !$given{'transfer-encoding'};
	while (my ($k, $v) = splice(@h, 0, 2)) { $raw .= "$k: $v\r\n" }
	return $raw . "\r\n" . ($r{body} // '');
}

# Sends raw_request(%r) and returns the parsed answer (timeout => seconds).
sub request {
	my ($self, %r) = @_;
	return parse_response($self->http(raw_request(%r), timeout => $r{timeout}));
}

# A request sent now and read later (long-polls): begin_request takes the
# arguments of request and returns the socket; finish_request reads the
# answer until the server closes, or timeout seconds.
sub begin_request {
	my ($self, %r) = @_;
	return $self->send_raw(raw_request(%r));
}

sub finish_request {
	my ($self, $s, $timeout) = @_;
	return parse_response(read_until_closed($s, $timeout));
}

# Is an answer waiting on a begun request's socket? (Without reading it.)
sub request_ready {
	my ($self, $s, $timeout) = @_;
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	return select(my $rout = $rin, undef, undef, $timeout // 0) > 0;
}

# POST /chat/ with a JSON (or any) body.
sub post {
	my ($self, $body, %o) = @_;
	return $self->request(method => 'POST', path => $o{path} // '/chat/', body => $body,
		headers => ['Content-Type' => $o{type} // 'application/json', @{ $o{headers} // [] }],
		timeout => $o{timeout});
}

# POST /chat/ with a room (and a client id when given): the response.
sub post_room {
	my ($self, $room, $text, $cid, %o) = @_;
	my %b = (message => $text, room => $room);
	$b{client_id} = $cid if defined $cid;
	return $self->post(JSON::PP->new->utf8->canonical->encode(\%b), %o);
}

# GET /chat/messages?QUERY: the response and its JSON.
sub messages {
	my ($self, $query, %o) = @_;
	my $r = $self->request(path => "/chat/messages?$query", %o);
	return ($r, $self->json($r));
}

sub parse_response {
	my ($raw) = @_;
	my %r = (raw => $raw, status => 0, headers => {}, body => '');
	my ($head, $body) = split(/\r\n\r\n/, $raw, 2);
	return \%r unless defined $head && $head =~ m{^HTTP/1\.[01] (\d{3})};
	$r{status} = $1;
	for my $line (split /\r\n/, $head) {
		next unless $line =~ /^([^:]+):\s*(.*)$/;
		my $k = lc $1;
		$r{headers}{$k} = exists $r{headers}{$k} ? "$r{headers}{$k}, $2" : $2;
	}
	$body //= '';
	if (($r{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
		my $plain = '';
		while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
			my $n = hex $1;
			last if $n == 0;
			$plain .= substr($body, 0, $n, '');
			$body =~ s/^\r\n//;
		}
		$body = $plain;
	}
	$r{body} = $body;
	return \%r;
}

# The body as JSON (bytes in, Perl characters out); undef if it is not JSON.
# A JSON error, from the backend or from nginx's own error pages: the
# status, the JSON type, and a body {"error": "<sentence>"}.
sub is_json_error {
	my ($self, $r, $status, $name) = @_;
	is($r->{status}, $status, "$name: status $status") or diag($r->{raw});
	like($r->{headers}{'content-type'} // '', qr{^application/json; charset=utf-8$},
		"$name: Content-Type is application/json; charset=utf-8");
	my $j = $self->json($r);
	ok(ref $j eq 'HASH' && defined $j->{error} && !ref $j->{error} && $j->{error} =~ /\w/,
		"$name: body is {\"error\": \"<sentence>\"}")
		or diag($r->{body});
}

sub json {
	my ($self, $r) = @_;
	my $v = eval { JSON::PP->new->utf8->decode($r->{body}) };
	return $v;
}

# Holds the write lock of the backend's SQLite store (or of the database
# file $db) from another process, as a second writer would, until the
# returned handle is closed. Needs sqlite3 (the Debian package).
sub lock_store {
	my ($self, $db) = @_;
	$db //= $self->store_path;
	my $sqlite3 = which('sqlite3', '/usr/bin')
		or BAIL_OUT('sqlite3 (the Debian package sqlite3) is needed by this test');
	my $out = "$db.lock-out";
	unlink $out;
	open(my $lock, '|-', "$sqlite3 '$db' > '$out' 2>&1") or die "sqlite3: $!";
	$lock->autoflush(1);
	print $lock "BEGIN IMMEDIATE;\nSELECT 'locked';\n";
	my $deadline = time + 10;
	sleep 0.05 until read_file($out) =~ /locked/ || time > $deadline;
	return $lock;
}

# The value of one unlabelled metric of GET /chat/metrics (undef if absent),
# e.g. chat_fcgi_streams: the event streams the backend holds now.
sub metric {
	my ($self, $name) = @_;
	my ($v) = $self->request(path => '/chat/metrics')->{body} =~ /^\Q$name\E (\S+)$/m;
	return $v;
}

sub stop {
	my ($self) = @_;
	$self->stop_nginx;
	# The backend's end, when this stops it: its exit status (as $?), or
	# undef when it outlived SIGTERM and was killed.
	if ($self->{backend}) {
		my ($status) = $self->stop_backend;
		$self->{stopped_status} = $status;
		$self->{stopped_here} = 1;
	}
	@live = grep { $_ != $self } @live;
	if ($ENV{CHAT_VERBOSE}) {
		diag("backend log:\n" . $self->backend_log);
		diag("nginx error log:\n" . $self->error_log);
	}
}

# Stops everything, then checks what nginx-tests check at the end: no alerts
# or worse in nginx's log, no crash report from the backend, and that the
# backend, still running, exited 0 on the SIGTERM that stopped it (a backend
# that died of SIGSYS, an abort or stack smashing fails here). A test that
# stopped the backend on purpose passes backend_was_down => 1: nginx logs
# each refused connect() to its socket at [crit]; one that stopped it
# itself checked its end already.
sub done {
	my ($self, %o) = @_;
	$self->stop;
	if ($self->{stopped_here}) {
		my $status = $self->{stopped_status};
		my $how = !defined $status ? 'outlived SIGTERM and was killed'
			: $status & 127 ? 'died of signal ' . ($status & 127)
			: 'exited ' . ($status >> 8);
		ok(defined $status && $status == 0, "chat-fcgi exited 0 on SIGTERM (it $how)")
			or diag($self->backend_log);
	}
	my $log = $self->error_log;
	$log = join '', grep { !/\[crit\].*connect\(\) to unix:\S+ failed/ } split /^/, $log
		if $o{backend_was_down};
	unlike($log, qr/\[(alert|emerg|crit)\]/, 'no alerts in the nginx error log')
		or diag($log);
	ok(!sanitizer_report($self->backend_log), 'no sanitizer report from chat-fcgi')
		or diag($self->backend_log);
	if ($ENV{CHAT_VALGRIND}) {
		my $bad = valgrind_problems($self->{dir});
		is($bad, '', 'no valgrind error or definite leak in chat-fcgi') or diag($bad);
	}
}

END {
	$_->stop for @live;
}

1;
