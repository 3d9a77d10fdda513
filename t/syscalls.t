#!/usr/bin/perl
# The systemd sandbox fits the backend: chat-fcgi, started as the socket
# unit starts it (fd 3, LISTEN_FDS) and put through requests, good and bad,
# and a SIGTERM, under strace, makes only system calls that
# chat-fcgi.service allows (SystemCallFilter=@system-service minus
# @privileged and @resources), opens AF_UNIX sockets only
# (RestrictAddressFamilies=AF_UNIX) and never maps memory writable and
# executable at once (MemoryDenyWriteExecute=yes). A new system call, say
# from a rewrite or a library, fails here rather than in production, where
# it would get EPERM.

use strict;
use warnings;

use Fcntl qw(F_SETFD);
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use POSIX qw(WNOHANG);
use Socket qw(SOCK_STREAM);
use Test::More;

plan(skip_all => "LeakSanitizer cannot run under strace (ptrace); the plain and distcheck passes run this") if $ENV{CHAT_SANITIZED};
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

my $bin = $ENV{CHAT_FCGI} // ChatTest::srcdir() . '/src/chat-fcgi';
BAIL_OUT("no chat-fcgi at $bin") unless -x $bin;
my $strace = ChatTest::which('strace', '/usr/bin');
my $sa = ChatTest::which('systemd-analyze', '/usr/bin', '/bin');
plan(skip_all => 'strace not installed (./dev check installs it)') unless $strace;
plan(skip_all => 'systemd-analyze not installed (./dev check installs it)') unless $sa;
system("\"$strace\" -qq -o /dev/null true >/dev/null 2>&1") == 0
	or plan(skip_all => 'strace cannot trace here (ptrace not permitted)');

my $dir = tempdir('chat-fcgi-sandbox-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});
my $unit = ChatTest::read_file(($ENV{CHAT_SRCDIR} // ChatTest::srcdir()) . '/conf/chat-fcgi.service.in');

# The filter as the unit states it, expanded by systemd itself.
my @allow_sets = map { split ' ' } $unit =~ /^SystemCallFilter=([^~\s][^\n]*)$/mg;
my @deny_sets = map { split ' ' } $unit =~ /^SystemCallFilter=~([^\n]*)$/mg;
is($allow_sets[0] // '', '@system-service', 'the unit allows @system-service (and perhaps a few more)');
is_deeply(\@deny_sets, ['@privileged', '@resources'], '... minus @privileged and @resources');
like($unit, qr/^RestrictAddressFamilies=AF_UNIX$/m, 'it allows AF_UNIX sockets only');
like($unit, qr/^MemoryDenyWriteExecute=yes$/m, 'it denies writable executable memory');

my %seen;
sub expand {
	my ($set) = @_;
	return ($set) unless $set =~ /^@/;
	return () if $seen{$set}++;
	my @calls;
	for (split /\n/, `"$sa" syscall-filter "$set"`) {
		next if /^\S/ || /^\s*(#|$)/;
		s/^\s+//;
		push @calls, /^@/ ? expand($_) : $_;
	}
	return @calls;
}
my %allowed = map { $_ => 1 } map { %seen = (); expand($_) } @allow_sets;
my %denied = map { $_ => 1 } map { %seen = (); expand($_) } @deny_sets;
ok(keys %allowed > 100 && $allowed{read} && $denied{setuid}, 'systemd-analyze expands the sets');

## chat-fcgi under strace, as the socket unit starts it

my $path = "$dir/chat.sock";
my $listener = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path, Listen => 16)
	// die "listen: $!";
my $trace = "$dir/strace.log";
my $log = "$dir/backend.log";
my $pid = fork() // die;
if ($pid == 0) {
	open(STDIN, '<', '/dev/null');
	open(STDOUT, '>', $log);
	open(STDERR, '>', $log);
	POSIX::dup2(fileno($listener), 3) // POSIX::_exit(126);
	open(my $three, '<&=', 3) or POSIX::_exit(126);
	fcntl($three, F_SETFD, 0) or POSIX::_exit(126);
	# strace -D runs the tracer as a grandchild, so chat-fcgi keeps this
	# process's pid, which LISTEN_PID names.
	@ENV{qw(LISTEN_PID LISTEN_FDS)} = ($$, 1);
	# With a real store: SQLite's calls (locks, WAL, checkpoints) count too.
	exec($strace, '-D', '-f', '-qq', '-o', $trace, '--', $bin, '--verbose', '--store',
		"sqlite:$dir/chat.db")
		or POSIX::_exit(127);
}
my $deadline = time + 10;
sleep 0.05 until ChatTest::read_file($log) =~ /listening on/ || time > $deadline;
like(ChatTest::read_file($log), qr/listening on .*\(fd 3 from systemd\)/,
	'chat-fcgi starts under strace on the passed socket');

# A few kinds of request: answered, rejected, too large, cut short.
sub exchange {
	my ($p, $body, $cut) = @_;
	my $s = FastCGI::connect_unix($path) or return '';
	if ($cut) {
		print $s FastCGI::begin_request(1) . FastCGI::params(1, $p) . FastCGI::stdin(1, $body, 0);
		close $s;
		return 'cut';
	}
	print $s FastCGI::request($p, $body);
	my $r = FastCGI::read_response($s, 10);
	close $s;
	return $r->{status};
}
is(exchange(FastCGI::chat_params(), '{"message":"sandboxed"}'), 200, 'a message: 200');
is(exchange(FastCGI::chat_params(), '{"message":'), 400, 'bad JSON: 400');
is(exchange(FastCGI::chat_params(CONTENT_TYPE => 'text/plain'), 'x'), 415, 'a wrong type: 415');
is(exchange(FastCGI::chat_params(), 'x' x 70000), 413, 'too large: 413');
is(exchange(FastCGI::chat_params(REQUEST_METHOD => 'GET'), ''), 405, 'GET: 405');
is(exchange(FastCGI::chat_params(), '{"message":"kept","room":"box","client_id":"c"}'), 200,
	'a message stored in a room: 200');
is(exchange(FastCGI::chat_params(REQUEST_METHOD => 'GET', REQUEST_URI => '/chat/messages?room=box',
	QUERY_STRING => 'room=box'), ''), 200, 'its history: 200');
exchange(FastCGI::chat_params(CONTENT_LENGTH => 100), '{"mess', 1);
is(exchange(FastCGI::chat_params(), '{"message":"after"}'), 200, 'a client that went away, then 200');

kill 'TERM', $pid;
$deadline = time + 10;
sleep 0.05 until waitpid($pid, WNOHANG) == $pid || time > $deadline;
is($? >> 8, 0, 'SIGTERM: exit 0');
# The tracer, a grandchild, finishes writing once the tracee is gone.
$deadline = time + 5;
sleep 0.05 until ChatTest::read_file($trace) =~ /\+\+\+ exited with/ || time > $deadline;

my $t = ChatTest::read_file($trace);
my %calls;
for (split /\n/, $t) {
	$calls{$1}++ if /^\d+\s+([a-z_0-9]+)\(/;
}
# The exec that starts the program is systemd's; the filter applies after.
delete $calls{execve};
# SQLite gives its new -wal and -shm files the database's owner, with
# fchown, only when it runs as root (robustFchown in its os_unix.c), and
# ignores the result. The unit never runs it as root (User=, DynamicUser=),
# so only a test run as root sees the call.
delete $calls{fchown} if $> == 0;
ok(keys %calls > 10, 'strace saw the system calls') or diag($t);
my @outside = grep { !$allowed{$_} || $denied{$_} } sort keys %calls;
is_deeply(\@outside, [], 'every system call is one SystemCallFilter= allows')
	or diag('system calls seen: ' . join(' ', sort keys %calls));
my @families = $t =~ /\bsocket\((\w+)/g;
is_deeply([grep { $_ ne 'AF_UNIX' } @families], [], 'every socket it opens is AF_UNIX');
my @wx = grep { /\b(mmap|mprotect|pkey_mprotect)\(/ && /PROT_WRITE/ && /PROT_EXEC/ } split /\n/, $t;
is_deeply(\@wx, [], 'no memory is mapped writable and executable');
diag('system calls seen: ' . join(' ', sort keys %calls)) if $ENV{CHAT_VERBOSE};

done_testing;
