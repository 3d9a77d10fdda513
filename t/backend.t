#!/usr/bin/perl
# chat-fcgi as a process: options, listening sockets, the thread pool,
# clients that go away, logs, and a graceful shutdown.

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::IP;
use IO::Socket::UNIX;
use POSIX qw(WNOHANG);
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;

my $bin = $ENV{CHAT_FCGI} // ChatTest::srcdir() . '/src/chat-fcgi';
BAIL_OUT("no chat-fcgi at $bin") unless -x $bin;
my $dir = tempdir('chat-fcgi-backend-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});

# The process tests need no history: without this, chat-fcgi would use
# the installed default store, whose directory may not exist here.
sub no_store { return ((grep { /^--store/ } @_) ? () : ('--store', 'none'), @_) }

# Runs chat-fcgi to its end with stdin from /dev/null; returns exit code,
# stdout, stderr.
sub run {
	my (@args) = no_store(@_);
	my $out = "$dir/out", my $err = "$dir/err";
	my $pid = fork() // die;
	if ($pid == 0) {
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>', $out);
		open(STDERR, '>', $err);
		exec(ChatTest::backend_command($dir, $bin), @args) or POSIX::_exit(127);
	}
	my $deadline = time + 5 * ChatTest::slack();
	while (waitpid($pid, WNOHANG) != $pid) {
		if (time > $deadline) { kill 'KILL', $pid; waitpid($pid, 0); return (-1, '', 'timeout') }
		sleep 0.02;
	}
	return ($? >> 8, ChatTest::read_file($out), ChatTest::read_file($err));
}

# Starts chat-fcgi in the background with its log in $dir/NAME.log.
sub start {
	my ($name, @args) = @_;
	@args = no_store(@args);
	my $log = "$dir/$name.log";
	unlink $log;
	return ChatTest->spawn_logged($log, ChatTest::backend_command($dir, $bin), @args);
}

sub wait_connect {
	my ($path, $pid) = @_;
	my $deadline = time + 5 * ChatTest::slack();
	while (time < $deadline) {
		my $s = FastCGI::connect_unix($path);
		return $s if $s;
		return if $pid && waitpid($pid, WNOHANG) == $pid;
		sleep 0.02;
	}
	return;
}

sub stop {
	my ($pid, $sig) = @_;
	kill($sig // 'TERM', $pid);
	my $t0 = time;
	while (time - $t0 < 10) {
		return ($? >> 8, time - $t0) if waitpid($pid, WNOHANG) == $pid;
		sleep 0.02;
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return (-1, time - $t0);
}

# One request on its own connection, closed after the answer as nginx does
# (libfcgi waits up to 2 s for the peer to close).
sub chat {
	my ($s, $message) = @_;
	print $s FastCGI::request(FastCGI::chat_params(), qq({"message":"$message"}));
	my $r = FastCGI::read_response($s);
	close $s;
	return $r;
}

## Options

my ($code, $out, $err) = run('--help');
is($code, 0, '--help exits 0');
like($out, qr/--listen.*--socket-mode.*--threads.*--max-waits.*--max-body.*--quiet.*--verbose/s,
	'--help lists every option');

($code, $out) = run('--version');
is($code, 0, '--version exits 0');
like($out, qr/^chat-fcgi \d+\.\d+\.\d+$/m, '--version prints the version');

for my $bad (['--bogus'], ['--threads', '0'], ['--threads', 'many'], ['--threads', '513'],
	['--max-waits', '-1'], ['--max-waits', '100001'], ['--max-waits', 'x'],
	['--max-body', 'abc'], ['--max-body', '0'], ['--max-body', '17M'], ['--socket-mode', '999'],
	['--listen', 'nowhere'], ['--listen'], ['extra-argument'])
{
	($code, $out, $err) = run(@$bad);
	is($code, 2, "@$bad exits 2");
	like($err, qr/^usage: chat-fcgi/m, "@$bad prints usage");
}

# A bad number says what the option takes, in the user's terms.
for my $case (
	[['--threads', '0'], "--threads takes a number from 1 to 512, not '0'"],
	[['--threads', 'many'], "--threads takes a number from 1 to 512, not 'many'"],
	[['-t', '513'], "--threads takes a number from 1 to 512, not '513'"],
	[['--max-waits', '-1'], "--max-waits takes a number from 0 to 100000, not '-1'"],
	[['--max-body', '17M'], "--max-body takes a size from 1 to 16M, not '17M'"],
	[['--max-body', '0'], "--max-body takes a size from 1 to 16M, not '0'"],
	[['--socket-mode', '999'], "--socket-mode takes octal permissions up to 0777, such as 0660, not '999'"],
	[['--room-history', '0'], "--room-history takes a number from 1 to 100000000, not '0'"],
	# strtoull alone would skip the white space and read 5.
	[['--threads', "\t5"], "--threads takes a number from 1 to 512, not '\t5'"],
	[['--threads', ' 5'], "--threads takes a number from 1 to 512, not ' 5'"],
	[['--room-history', '+5'], "--room-history takes a number from 1 to 100000000, not '+5'"],
	[['--max-waits', '5 '], "--max-waits takes a number from 0 to 100000, not '5 '"])
{
	my ($args, $message) = @$case;
	($code, $out, $err) = run(@$args);
	is($code, 2, "@$args exits 2");
	like($err, qr/^chat-fcgi: \Q$message\E\n/, "@$args: says $message");
}

($code, $out, $err) = run();
is($code, 1, 'without --listen and no socket on fd 0: exit 1');
like($err, qr/fd 0 is not a listening socket.*spawn-fcgi/, '... saying what to do');

## --listen unix:PATH, socket modes, stale and live sockets

my $sock = "$dir/a.sock";
my $pid = start('a', '--listen', "unix:$sock");
my $s = wait_connect($sock, $pid);
ok($s, 'listens on unix:PATH');
is((stat $sock)[2] & 07777, 0660, 'the socket has mode 0660 by default');
my $r = chat($s, 'django');
is($r->{status}, 200, 'answers over its own socket');
is($r->{body}, '{"message":"received django"}', '... the reply');
like($r->{headers}{'content-type'}, qr{^application/json; charset=utf-8$}, '... as JSON');

($code, $out, $err) = run('--listen', "unix:$sock");
is($code, 1, 'a socket in use by a live server is refused');
like($err, qr/in use/, '... with a clear message');
ok(-S $sock, '... and the live socket is left alone');

my ($status, $secs) = stop($pid);
is($status, 0, 'SIGTERM: exit 0');
ok(!-e $sock, 'SIGTERM: the socket file is removed');
like(ChatTest::read_file("$dir/a.log"),
	qr/chat-fcgi \d+\.\d+\.\d+ listening on unix:\Q$sock\E with 8 threads/,
	'the start line names version, socket and threads');
like(ChatTest::read_file("$dir/a.log"), qr/exiting after 1 requests/, 'one line at exit');

{
	# A socket file whose server died without removing it.
	my $stale = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $sock, Listen => 1)
		or die "bind $sock: $!";
	close $stale;
	ok(-S $sock, 'a stale socket file exists');
	$pid = start('b', '--listen', "unix:$sock", '--socket-mode', '0600');
	$s = wait_connect($sock, $pid);
	ok($s, 'a stale socket file is replaced');
	is((stat $sock)[2] & 07777, 0600, '--socket-mode 0600 is applied');
	is(chat($s, 'x')->{status}, 200, '... and serves');
	is((stop($pid))[0], 0, '... and stops');
}

{
	my $file = "$dir/not-a-socket";
	ChatTest::write_file($file, "keep me\n");
	($code, $out, $err) = run('--listen', "unix:$file");
	is($code, 1, 'a path that is not a socket is refused');
	like($err, qr/not a socket/, '... saying why');
	is(ChatTest::read_file($file), "keep me\n", '... and the file is untouched');
}

## --listen HOST:PORT

{
	my $port = ChatTest::free_port();
	$pid = start('tcp', '--listen', "127.0.0.1:$port");
	my $t;
	for (1 .. 100) { $t = FastCGI::connect_tcp('127.0.0.1', $port) and last; sleep 0.05 }
	ok($t, '--listen HOST:PORT listens on TCP');
	is(chat($t, 'tcp')->{body}, '{"message":"received tcp"}', '... and answers');
	is((stop($pid, 'INT'))[0], 0, 'SIGINT: exit 0 as well');
}

## --allow-from: the TCP peers accepted

{
	my $port = ChatTest::free_port();
	my $pid = start('allow', '--listen', "127.0.0.1:$port", '--allow-from', '127.0.0.2, ::1');
	my $near;
	for (1 .. 100) {
		$near = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, LocalHost => '127.0.0.2',
			Proto => 'tcp') and last;
		sleep 0.05;
	}
	ok($near, '--allow-from 127.0.0.2: a peer of 127.0.0.2 connects');
	binmode $near;
	$near->autoflush(1);
	is(chat($near, 'allowed')->{body}, '{"message":"received allowed"}', '... and is served');
	my $far = FastCGI::connect_tcp('127.0.0.1', $port);
	print $far FastCGI::request(FastCGI::chat_params(), '{"message":"refused"}') if $far;
	my $got = $far ? FastCGI::read_records($far, 3) : {eof => 1, records => []};
	ok($got->{eof} && !@{ $got->{records} }, '... a peer of 127.0.0.1 is closed unanswered');
	like(ChatTest::read_file("$dir/allow.log"), qr/refused a connection from 127\.0\.0\.1, not in --allow-from/,
		'... and the refusal is logged');
	close $_ for grep { $_ } $near, $far;
	is((stop($pid))[0], 0, '... the backend goes on, and stops cleanly');

	# libfcgi's own variable says the same when --allow-from is not given.
	local $ENV{FCGI_WEB_SERVER_ADDRS} = '127.0.0.2';
	$port = ChatTest::free_port();
	$pid = start('allow-env', '--listen', "127.0.0.1:$port");
	sleep 0.3;
	$far = FastCGI::connect_tcp('127.0.0.1', $port);
	print $far FastCGI::request(FastCGI::chat_params(), '{"message":"refused"}') if $far;
	$got = $far ? FastCGI::read_records($far, 3) : {eof => 1, records => []};
	ok($got->{eof} && !@{ $got->{records} }, 'FCGI_WEB_SERVER_ADDRS=127.0.0.2: a peer of 127.0.0.1 is closed');
	close $far if $far;
	stop($pid);
	my ($code, $out, $err) = run('--listen', '127.0.0.1:1', '--allow-from', '10.0.0.0/33');
	is($code, 2, 'a bad --allow-from: usage, exit 2');
	like($err, qr/--allow-from: a prefix of 33 bits/, '... saying what is wrong');
}

## The thread pool

{
	$pid = start('threads', '--listen', "unix:$sock", '--threads', '2');
	my $a = wait_connect($sock, $pid);
	# Two requests whose bodies have not arrived wait as connection states,
	# not in the two threads.
	print $a FastCGI::begin_request(1) . FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => 16));
	my $b = FastCGI::connect_unix($sock);
	print $b FastCGI::begin_request(1) . FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => 16));
	sleep 0.2;
	my $c = FastCGI::connect_unix($sock);
	print $c FastCGI::request(FastCGI::chat_params(), '{"message":"c"}');
	my $rc = FastCGI::read_response($c, 2);
	is($rc->{body}, '{"message":"received c"}',
		'with --threads 2 and two requests waiting for their bodies, a third is served');
	print $a FastCGI::stdin(1, '{"message":"a"} ');
	is(FastCGI::read_response($a)->{body}, '{"message":"received a"}',
		'the first finishes when its body arrives');
	print $b FastCGI::stdin(1, '{"message":"b"} ');
	is(FastCGI::read_response($b)->{body}, '{"message":"received b"}', 'the second finishes too');
	close $_ for $a, $b, $c;
	stop($pid);
}

## Idle connections take no thread

{
	# libfcgi's own model gives each connection a thread until it closes;
	# here a thread only ever works on a request that has arrived.
	$pid = start('idle', '--listen', "unix:$sock", '--threads', '1');
	my $first = wait_connect($sock, $pid);
	my @silent = map { FastCGI::connect_unix($sock) or die "connect: $!" } 1 .. 20;
	my @kept;
	for my $i (1 .. 5) {
		my $k = FastCGI::connect_unix($sock) or die "connect: $!";
		print $k FastCGI::request(FastCGI::chat_params(), qq({"message":"k$i"}), keep => 1);
		is(FastCGI::read_response($k, 2)->{body}, qq({"message":"received k$i"}),
			"with --threads 1 and 20 silent connections open, kept connection $i is served");
		push @kept, $k;
	}
	print $first FastCGI::request(FastCGI::chat_params(), '{"message":"new"}');
	is(FastCGI::read_response($first, 2)->{body}, '{"message":"received new"}',
		'... and so is a new one, while 5 kept connections sit idle');
	print { $kept[0] } FastCGI::request(FastCGI::chat_params(), '{"message":"again"}', keep => 1);
	is(FastCGI::read_response($kept[0], 2)->{body}, '{"message":"received again"}',
		'an idle kept connection is served again when its next request comes');
	my ($st, $secs) = stop($pid);
	is($st, 0, 'SIGTERM with idle connections open: exit 0');
	cmp_ok($secs, '<', 2, '... at once: idle connections are closed, not waited for');
	my $buf = '';
	my $eof = !sysread($kept[1], $buf, 1);
	ok($eof, '... and the backend closed them');
	close $_ for $first, @silent, @kept;
}

## A client that goes away mid-body

{
	$pid = start('gone', '--listen', "unix:$sock", '--threads', '1');
	my $a = wait_connect($sock, $pid);
	print $a FastCGI::begin_request(1) . FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => 100))
		. FastCGI::stdin(1, '{"message":"', 0);
	sleep 0.1;
	close $a;
	my $b = FastCGI::connect_unix($sock);
	my $rb = chat($b, 'next');
	is($rb->{body}, '{"message":"received next"}',
		'after a client went away mid-body, the next request is served');
	ok(kill(0, $pid), '... by the same process');
	stop($pid);
	like(ChatTest::read_file("$dir/gone.log"), qr/went away mid-body/, '... and it is logged');
}

## Bodies left unread must not break a kept connection

{
	$pid = start('keep', '--listen', "unix:$sock");
	my $k = wait_connect($sock, $pid);
	my $big = 'x' x 20000;
	print $k FastCGI::request(FastCGI::chat_params(REQUEST_METHOD => 'PUT'), $big, keep => 1);
	my $r1 = FastCGI::read_response($k);
	is($r1->{status}, 405, 'a rejected request on a kept connection: 405');
	is($r1->{headers}{allow}, 'POST', '... with Allow: POST');
	print $k FastCGI::request(FastCGI::chat_params(), '{"message":"again"}', keep => 1);
	is(FastCGI::read_response($k)->{body}, '{"message":"received again"}',
		'the next request on the same connection is read from the right place');
	print $k FastCGI::request(FastCGI::chat_params(), '{"message":"' . ('y' x 70000) . '"}', keep => 1);
	is(FastCGI::read_response($k)->{status}, 413, 'a body over --max-body: 413');
	print $k FastCGI::request(FastCGI::chat_params(), '{"message":"after"}', keep => 1);
	is(FastCGI::read_response($k)->{body}, '{"message":"received after"}',
		'... and the connection stays in step after it');
	close $k;
	stop($pid);
}

## A long reply goes out in records of its own: whole, and in step

{
	# 700 000 bytes: more records than one writev sends (8 x 65528).
	$pid = start('long', '--listen', "unix:$sock", '--max-body', '1M');
	my $k = wait_connect($sock, $pid);
	my $text = ('z' x 99) . '\\"';
	$text x= 7000;
	print $k FastCGI::request(FastCGI::chat_params(),
		qq({"message":"$text"}), keep => 1);
	my $r = FastCGI::read_response($k, 10 * ChatTest::slack());
	ok($r->{ended}, 'a 700 000-byte reply ends its request');
	is($r->{headers}{'content-length'}, length($r->{body}), '... as long as it says');
	ok($r->{body} eq qq({"message":"received $text"}), '... and is the message, byte for byte');
	print $k FastCGI::request(FastCGI::chat_params(), '{"message":"next"}', keep => 1);
	is(FastCGI::read_response($k)->{body}, '{"message":"received next"}',
		'... and the kept connection stays in step after it');
	close $k;
	stop($pid);
}

## Graceful shutdown: requests in flight finish, new ones are refused

{
	$pid = start('shutdown', '--listen', "unix:$sock");
	my $a = wait_connect($sock, $pid);
	print $a FastCGI::begin_request(1) . FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => 19));
	sleep 0.1;
	kill 'TERM', $pid;
	# Under valgrind a signal arrives late: wait for the refusal, within bounds.
	my $until = time + 0.3 * ChatTest::slack();
	my $refused;
	do { sleep 0.05; $refused = !FastCGI::connect_unix($sock) } until $refused || time > $until;
	ok($refused, 'after SIGTERM no new connection is accepted');
	print $a FastCGI::stdin(1, '{"message":"last"} ');
	my $ra = FastCGI::read_response($a);
	is($ra->{body}, '{"message":"received last"}', 'the request in flight still gets its answer');
	close $a;
	my $t0 = time;
	my $exited;
	while (time - $t0 < 5 * ChatTest::slack()) {
		if (waitpid($pid, WNOHANG) == $pid) { $exited = 1; last }
		sleep 0.02;
	}
	ok($exited, 'and the process exits within 5 s');
	is($? >> 8, 0, '... with status 0');
	ok(!-e $sock, '... having removed its socket');
	my $log = ChatTest::read_file("$dir/shutdown.log");
	like($log, qr/SIGTERM: finishing requests in flight/, 'the signal is logged');
	like($log, qr/exiting after 1 requests/, 'the exit is logged');
}

{
	# An idle kept connection must not hold up the exit.
	$pid = start('idle', '--listen', "unix:$sock");
	my $k = wait_connect($sock, $pid);
	print $k FastCGI::request(FastCGI::chat_params(), '{"message":"k"}', keep => 1);
	FastCGI::read_response($k);
	my ($st, $took) = stop($pid);
	is($st, 0, 'with an idle kept connection, SIGTERM still exits 0');
	cmp_ok($took, '<', 5, "... within 5 s (took ${\ sprintf '%.2f', $took} s)");
}

## Log levels

{
	$pid = start('verbose', '--listen', "unix:$sock", '--verbose');
	my $v = wait_connect($sock, $pid);
	chat($v, 'hello');
	stop($pid);
	like(ChatTest::read_file("$dir/verbose.log"), qr{^chat-fcgi: 200 POST /chat/ }m,
		'--verbose logs every request');

	$pid = start('normal', '--listen', "unix:$sock");
	$v = wait_connect($sock, $pid);
	chat($v, 'hello');
	$v = FastCGI::connect_unix($sock);
	print $v FastCGI::request(FastCGI::chat_params(), '{"message":1}');
	FastCGI::read_response($v);
	close $v;
	stop($pid);
	my $log = ChatTest::read_file("$dir/normal.log");
	unlike($log, qr{ 200 POST}, 'by default a success is not logged');
	like($log, qr{^chat-fcgi: 400 POST /chat/ [\d.]+ ms id=-: The "message" member must be a string\.$}m,
		'a failed request is logged with status and reason');

	$pid = start('quiet', '--listen', "unix:$sock", '--quiet');
	$v = wait_connect($sock, $pid);
	print $v FastCGI::request(FastCGI::chat_params(), '{"message":1}');
	FastCGI::read_response($v);
	close $v;
	stop($pid);
	is(ChatTest::read_file("$dir/quiet.log"), '', '--quiet logs nothing in normal operation');

	# Untrusted text cannot forge log lines.
	$pid = start('forge', '--listen', "unix:$sock");
	$v = wait_connect($sock, $pid);
	print $v FastCGI::request(FastCGI::chat_params(REQUEST_URI => "/x\nchat-fcgi: forged"), '{}');
	FastCGI::read_response($v);
	close $v;
	stop($pid);
	unlike(ChatTest::read_file("$dir/forge.log"), qr/^chat-fcgi: forged/m,
		'a newline in the URI does not start a log line');
}

## Graceful shutdown under traffic, through nginx

{
	# Posts as fast as it can: the rate limit (rate_limit.t) is off.
	my $t = ChatTest->new(rate_limit => 'off');
	my $statuses = $t->dir . '/statuses';
	my $pid = fork() // die;
	if ($pid == 0) {
		# Posts one after another for a while; records each status and
		# whether the body was a JSON object with message or error.
		open(my $fh, '>', $statuses) or POSIX::_exit(1);
		my $until = time + 1.5;
		while (time < $until) {
			my $r = $t->post('{"message":"busy"}', timeout => 5);
			my $j = $t->json($r);
			my $kind = ref $j eq 'HASH' ? (exists $j->{message} ? 'message' : 'error') : 'none';
			print $fh "$r->{status} $kind\n";
		}
		close $fh;
		POSIX::_exit(0);
	}
	sleep 0.5;
	my ($st, $took) = $t->stop_backend;
	waitpid($pid, 0);
	is($st, 0, 'under traffic through nginx, SIGTERM: exit 0');
	cmp_ok($took, '<', 5, '... within 5 s');
	ok(!-e $t->socket, '... the socket file is removed');
	my @seen = split /\n/, ChatTest::read_file($statuses);
	my @odd = grep { $_ ne '200 message' && $_ ne '502 error' } @seen;
	is_deeply(\@odd, [], 'every answer was a 200 reply or a JSON 502, nothing broken or hung');
	ok((grep { $_ eq '200 message' } @seen) && (grep { $_ eq '502 error' } @seen),
		'... with replies before the stop and 502s after it (' . scalar(@seen) . ' requests)');
	$t->done(backend_was_down => 1);
}

## IPv6

SKIP: {
	my $probe = IO::Socket::IP->new(LocalHost => '::1', Listen => 1);
	skip 'no IPv6 loopback here', 2 unless $probe;
	my $port = $probe->sockport;
	close $probe;
	$pid = start('tcp6', '--listen', "[::1]:$port");
	my $t6;
	for (1 .. 100) { $t6 = FastCGI::connect_tcp('::1', $port) and last; sleep 0.05 }
	ok($t6, '--listen [::1]:PORT listens on IPv6');
	is(chat($t6, 'six')->{body}, '{"message":"received six"}', '... and answers');
	stop($pid);
}

# Connects n nonblocking sockets to path while pid is stopped (nothing
# accepts): the number queued, and the first error of those refused.
sub connect_burst {
	my ($path, $pid, $n) = @_;
	my ($queued, $refused, @s) = (0, '');
	kill('STOP', $pid) or die "SIGSTOP: $!";
	for (1 .. $n) {
		socket(my $s, Socket::AF_UNIX(), Socket::SOCK_STREAM() | Socket::SOCK_NONBLOCK(), 0)
			or die "socket: $!";
		if (connect($s, Socket::pack_sockaddr_un($path))) {
			$queued++;
			push @s, $s;
		} else {
			$refused ||= "$!";
		}
	}
	close($_) for @s;
	kill('CONT', $pid) or die "SIGCONT: $!";
	return ($queued, $refused);
}

## spawn-fcgi hands the socket on fd 0

SKIP: {
	my $spawn = $ENV{CHAT_SPAWN_FCGI} // ChatTest::which('spawn-fcgi', '/usr/bin');
	skip 'spawn-fcgi not installed', 6 unless $spawn;
	my $t = ChatTest->new(spawn => 1);
	is($t->json($t->post('{"message":"spawned"}'))->{message}, 'received spawned',
		'under spawn-fcgi (fd 0) it serves through nginx');
	# spawn-fcgi's backlog is 1024; a burst past it would fail nginx's
	# connect with EAGAIN (a 502) while the backend is busy accepting.
	my ($queued, $refused) = connect_burst($t->socket, $t->backend_pid, 1500);
	is($queued, 1500, 'a burst of 1500 connections queues whole while it is stopped: '
		. 'the backlog of fd 0 is raised') or diag("refused: $refused");
	is($t->json($t->post('{"message":"after"}'))->{message}, 'received after',
		'... and it serves on once they are gone');
	my ($st, $took) = $t->stop_backend;
	is($st, 0, '... and exits 0 on SIGTERM');
	like($t->backend_log, qr/listening on unix:.*\(fd 0\)/, '... having logged the inherited socket');
	$t->done;
}

## Its own socket (--listen unix:PATH) takes a burst as large

{
	my $t = ChatTest->new;
	my ($queued, $refused) = connect_burst($t->socket, $t->backend_pid, 1500);
	is($queued, 1500, 'a socket of its own queues a burst of 1500 connections too')
		or diag("refused: $refused");
	is($t->json($t->post('{"message":"after"}'))->{message}, 'received after',
		'... and it serves on');
	$t->done;
}

## Every backend this file started by itself: no sanitizer report, no
## valgrind error (under CHAT_VALGRIND=1)

my @reports = grep { ChatTest::sanitizer_report(ChatTest::read_file($_)) } glob("$dir/*.log"), "$dir/err";
is_deeply(\@reports, [], 'no sanitizer report in any backend log')
	or diag(join '', map { ChatTest::read_file($_) } @reports);
is(ChatTest::valgrind_problems($dir), '', 'no valgrind error or definite leak')
	if $ENV{CHAT_VALGRIND};

done_testing;
