#!/usr/bin/perl
# The running backend confines itself with seccomp once its socket is open
# (src/sandbox.c): every thread shows "Seccomp: 2" (filter mode) in
# /proc/PID/status, and every path a server in production takes runs under
# the filter here: every kind of answer, a peer gone before its answer
# (SIGPIPE, ignored), SIGTERM with requests in flight (a held long-poll, an
# event stream, a request still arriving), SIGINT, and the start under
# spawn-fcgi. Reconnecting to PostgreSQL by a name with two addresses is
# t/sandbox_reconnect.t. chat-fcgi reopens no log (it writes to stderr
# only), so there is no such path. --no-sandbox leaves it unconfined. That
# a forbidden call (execve, fork, ...) kills it, and that any other call
# fails with an error, is shown by t/unit/sandbox_test with the very same
# filter.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use EventStream;
use FastCGI;

$| = 1;

plan(skip_all => 'no /proc/PID/status with a Seccomp line')
	unless ChatTest::read_file("/proc/$$/status") =~ /^Seccomp:/m;

# Whether the backend runs under the filter comes from the build: a
# sanitizer build cannot be confined (LeakSanitizer ptraces at exit), and
# the normal build of the same run checks the filter.
my $confined = !$ENV{CHAT_SANITIZED};
my $want = $confined ? 2 : 0;
my $how = $confined ? 'under a seccomp filter' : 'unconfined, as a sanitizer build';

# "Seccomp:" of the process and of each of its threads.
sub seccomp_modes {
	my ($pid) = @_;
	my @modes;
	for my $status (glob("/proc/$pid/task/*/status")) {
		my ($mode) = ChatTest::read_file($status) =~ /^Seccomp:\s+(\d+)/m;
		push @modes, $mode // 'none';
	}
	return @modes;
}

# Every thread of the backend as the build says it runs.
sub as_built {
	my ($t, $name) = @_;
	my @modes = seccomp_modes($t->backend_pid);
	return ok(@modes > 1 && !grep({ $_ ne $want } @modes),
		"$name: every thread is $how (Seccomp: $want)")
		|| diag("Seccomp: @modes");
}

{
	my $t = ChatTest->new;
	my $pid = $t->backend_pid;
	like($t->backend_log, $confined ? qr/sandbox seccomp$/m : qr/sandbox off \(sanitizer build\)$/m,
		'the start line says how it is confined');
	cmp_ok(scalar(() = $t->backend_log =~ /this libseccomp does not know/g), '<=', $confined ? 1 : 0,
		'at most one line names the calls libseccomp does not know');
	my @modes = seccomp_modes($pid);
	cmp_ok(scalar @modes, '>', 1, 'the backend has its worker threads (' . @modes . ')');
	as_built($t, 'at start');

	# What the server does, sandboxed: JSON, a form, errors of each layer.
	is($t->json($t->post('{"message":"sandboxed"}'))->{message}, 'received sandboxed',
		'a JSON post is answered');
	is($t->json($t->post('message=ok', type => 'application/x-www-form-urlencoded'))->{message},
		'received ok', 'a form post is answered');
	is($t->post('{"message":1}')->{status}, 400, 'a bad message: 400');
	is($t->post('x', type => 'text/plain')->{status}, 415, 'a bad type: 415');
	is($t->post('{"message":"' . ('x' x 70000) . '"}')->{status}, 413, 'too large: 413');
	is($t->request(method => 'POST', path => '/chat/?q=1', body => 'message=%zz',
		headers => ['Content-Type' => 'application/x-www-form-urlencoded'])->{status},
		400, 'bad percent-encoding: 400');

	# A peer that closes before its answer is written: the write fails with
	# EPIPE, and SIGPIPE does not end the process. chat-fcgi ignores it, and
	# libfcgi's initialisation puts a handler of its own in place, so the
	# signal is delivered, and returned from, under the filter.
	# The masks' low 32 bits, as hex digits, hold signals 1 to 32.
	my %mask = ChatTest::read_file("/proc/$pid/status") =~ /^(SigIgn|SigCgt):\s+[0-9a-f]*([0-9a-f]{8})$/mg;
	ok((hex($mask{SigIgn} // 0) | hex($mask{SigCgt} // 0)) & (1 << (13 - 1)),
		'SIGPIPE (13) is ignored or caught');
	for my $i (1 .. 20) {
		my $s = FastCGI::connect_unix($t->socket) or last;
		print $s FastCGI::request(FastCGI::chat_params(), qq({"message":"gone $i"}));
		close $s;
	}
	sleep 0.2;
	is($t->json($t->post('{"message":"after"}'))->{message}, 'received after',
		'20 peers gone before their answers: it still serves');
	as_built($t, '... and');

	# SIGTERM with requests in flight: each gets its end, then exit 0.
	my $poll = $t->begin_request(path => '/chat/messages?room=bye&wait=20&after=0');
	my $es = EventStream->open($t, '/chat/events?room=bye-events');
	my $half = FastCGI::connect_unix($t->socket);
	print $half FastCGI::begin_request(1)
		. FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => 20)) . FastCGI::stdin(1, '{"mess', 0);
	sleep 0.3;
	is($es->status, 200, 'an event stream is open');
	ok(!$t->request_ready($poll), 'a long-poll is held');
	my ($status) = $t->signal_backend('TERM');
	is($status, 0, 'SIGTERM with a long-poll, a stream and a request half sent: exit 0');
	my $p = $t->finish_request($poll, 5);
	is($p->{status}, 200, '... the long-poll is answered 200') or diag($p->{raw});
	$es->drain(2);
	ok($es->ended, '... the stream ends cleanly (its last chunk)');
	my $h = FastCGI::read_records($half, 5);
	ok($h->{eof}, '... the request still arriving is closed');
	ok(!-e $t->socket, '... having removed its socket file');
	unlike($t->backend_log, qr/sandbox:/, 'no sandbox error in the log');
	$t->done;
}

{
	my $t = ChatTest->new;
	as_built($t, 'a second backend');
	is($t->json($t->post('{"message":"int"}'))->{message}, 'received int', '... serving');
	my ($status) = $t->signal_backend('INT');
	is($status, 0, 'SIGINT ends it cleanly, exit 0');
	like($t->backend_log, qr/SIGINT: finishing requests in flight/, '... having said why');
	$t->done;
}

{
	my $t = ChatTest->new(backend_args => ['--no-sandbox']);
	my @modes = seccomp_modes($t->backend_pid);
	is_deeply(\@modes, [(0) x @modes], '--no-sandbox: no thread is confined (Seccomp: 0)');
	like($t->backend_log, qr/sandbox off \(--no-sandbox\)/, '... and the start line says so');
	is($t->json($t->post('{"message":"free"}'))->{message}, 'received free', '... and it serves');
	$t->done;
}

{
	# As deployed: the socket on fd 0 from spawn-fcgi.
	my $t = ChatTest->new(spawn => 1);
	as_built($t, 'under spawn-fcgi');
	is($t->json($t->post('{"message":"spawned"}'))->{message}, 'received spawned', '... serving');
	$t->done;
}

my $help = `$ENV{CHAT_FCGI} --help 2>&1`;
like($help, qr/--no-sandbox/, '--help documents --no-sandbox');

done_testing;
