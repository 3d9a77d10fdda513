#!/usr/bin/perl
# The running backend confines itself with seccomp once its socket is open
# (src/sandbox.c): every thread shows "Seccomp: 2" (filter mode) in
# /proc/PID/status, it still serves every kind of answer and shuts down
# cleanly, and --no-sandbox leaves it unconfined. That a forbidden call
# (execve, fork, ...) kills it is shown by t/unit/sandbox_test with the
# very same filter.

use strict;
use warnings;

use Test::More;

use ChatTest;

$| = 1;

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

plan(skip_all => 'no /proc/PID/status with a Seccomp line')
	unless ChatTest::read_file("/proc/$$/status") =~ /^Seccomp:/m;

{
	my $t = ChatTest->new;
	my $pid = $t->backend_pid;
	# A sanitizer build cannot be confined (LeakSanitizer ptraces at exit),
	# and says so; the normal build of the same run checks the filter.
	my $sanitized = $t->backend_log =~ /sandbox off \(sanitizer build\)/;
	my $want = $sanitized ? 0 : 2;
	like($t->backend_log, $sanitized ? qr/sandbox off/ : qr/sandbox seccomp$/m,
		'the start line says how it is confined');
	my @modes = seccomp_modes($pid);
	cmp_ok(scalar @modes, '>', 1, 'the backend has its worker threads (' . @modes . ')');
	is_deeply(\@modes, [($want) x @modes], "every thread is under a seccomp filter (Seccomp: $want)");

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
	my @alive = seccomp_modes($pid);
	ok(@alive, 'the backend is still the same process');

	my ($status) = $t->signal_backend('TERM');
	is($status, 0, 'SIGTERM still ends it cleanly, exit 0');
	ok(!-e $t->socket, '... having removed its socket file');
	unlike($t->backend_log, qr/sandbox:/, 'no sandbox error in the log');
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
	my @modes = seccomp_modes($t->backend_pid);
	my $want = $t->backend_log =~ /sandbox off \(sanitizer build\)/ ? 0 : 2;
	is_deeply(\@modes, [($want) x @modes], 'under spawn-fcgi too');
	is($t->json($t->post('{"message":"spawned"}'))->{message}, 'received spawned', '... serving');
	$t->done;
}

my $help = `$ENV{CHAT_FCGI} --help 2>&1`;
like($help, qr/--no-sandbox/, '--help documents --no-sandbox');

done_testing;
