#!/usr/bin/perl
# systemd socket activation (sd_listen_fds(3)): chat-fcgi serves the
# listening socket passed on fd 3 with LISTEN_FDS=1 and LISTEN_PID set to
# its own pid, leaves the socket to its owner at exit, ignores variables
# meant for another process and says clearly what is wrong with bad ones.
# The test plays systemd: it makes the socket, and the child it forks sets
# LISTEN_PID to its own pid before exec, which keeps the pid.

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::INET;
use IO::Socket::UNIX;
use Fcntl qw(F_SETFD);
use POSIX qw(WNOHANG);
use Socket qw(SOCK_DGRAM SOCK_STREAM);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;

my $bin = $ENV{CHAT_FCGI} // ChatTest::srcdir() . '/src/chat-fcgi';
BAIL_OUT("no chat-fcgi at $bin") unless -x $bin;
my $dir = tempdir('chat-fcgi-activation-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});

# Starts chat-fcgi with $fd3 (a handle, or undef) on fd 3, stdin from
# /dev/null, and the environment %env, where LISTEN_PID => 'self' becomes the
# child's own pid. Returns the pid; the log goes to $dir/NAME.log.
sub start {
	my ($name, $fd3, $env, @args) = @_;
	my $log = "$dir/$name.log";
	unlink $log;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0) {
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>', $log);
		open(STDERR, '>', $log);
		if ($fd3) {
			# dup2 onto itself keeps Perl's close-on-exec flag: clear it.
			POSIX::dup2(fileno($fd3), 3) // POSIX::_exit(126);
			open(my $three, '<&=', 3) or POSIX::_exit(126);
			fcntl($three, F_SETFD, 0) or POSIX::_exit(126);
		}
		delete @ENV{qw(LISTEN_PID LISTEN_FDS LISTEN_FDNAMES)};
		for my $k (keys %$env) {
			$ENV{$k} = $env->{$k} eq 'self' ? $$ : $env->{$k};
		}
		# No history: the default store's directory need not exist here.
		exec($bin, '--store', 'none', @args) or POSIX::_exit(127);
	}
	return $pid;
}

# Waits for the process to exit; returns its exit code, or -1 on timeout.
sub finish {
	my ($pid, $timeout) = @_;
	my $deadline = time + ($timeout // 5);
	while (time < $deadline) {
		return $? >> 8 if waitpid($pid, WNOHANG) == $pid;
		sleep 0.02;
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return -1;
}

sub log_of { ChatTest::read_file("$dir/$_[0].log") }

sub listening_unix {
	my ($path) = @_;
	unlink $path;
	return IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path, Listen => 16)
		// die "listen $path: $!";
}

# One request on its own connection, the connection closed after it.
sub chat {
	my ($s, $message) = @_;
	return unless $s;
	print $s FastCGI::request(FastCGI::chat_params(), qq({"message":"$message"}));
	my $r = FastCGI::read_response($s);
	close $s;
	return $r->{body};
}

# Polls until the backend answers on $path (it is ready once it logged).
sub wait_started {
	my ($name, $pid) = @_;
	my $deadline = time + 5;
	while (time < $deadline) {
		return 1 if log_of($name) =~ /listening on/;
		return 0 if waitpid($pid, WNOHANG) == $pid;
		sleep 0.02;
	}
	return 0;
}

my %activated = (LISTEN_PID => 'self', LISTEN_FDS => 1, LISTEN_FDNAMES => 'chat-fcgi.socket');

## The socket on fd 3 is served

my $path = "$dir/chat.sock";
my $listener = listening_unix($path);
my $pid = start('served', $listener, \%activated);
ok(wait_started('served', $pid), 'with LISTEN_FDS=1 and its own LISTEN_PID it starts')
	or diag(log_of('served'));
like(log_of('served'), qr{listening on unix:\Q$path\E \(fd 3 from systemd\)},
	'... logging the socket it was given');
is(chat(FastCGI::connect_unix($path), 'activated'), '{"message":"received activated"}',
	'... and answers FastCGI on it');

# Another request, with several at once, to see the threads share fd 3.
my @s = map { FastCGI::connect_unix($path) } 1 .. 4;
is_deeply([map { chat($s[$_], "m$_") } 0 .. 3],
	[map { qq({"message":"received m$_"}) } 0 .. 3], 'four connections at once are all served');

kill 'TERM', $pid;
is(finish($pid), 0, 'SIGTERM: exit 0');
ok(-S $path, "the socket file stays: it is systemd's, not chat-fcgi's");

# As under systemd: the owner of the socket still holds it, so a client that
# connects while no backend runs waits in the queue, and the next backend
# (Restart=on-failure, or the next activation) answers it.
my $waiting = FastCGI::connect_unix($path);
ok($waiting, 'a client can connect while no backend runs');
print $waiting FastCGI::request(FastCGI::chat_params(), '{"message":"queued"}') if $waiting;
$pid = start('again', $listener, \%activated);
ok(wait_started('again', $pid), 'a second backend takes the same socket')
	or diag(log_of('again'));
is($waiting ? FastCGI::read_response($waiting)->{body} : '', '{"message":"received queued"}',
	'... and answers the client that waited');
kill 'TERM', $pid;
is(finish($pid), 0, '... and exits 0');

## Through nginx and the real snippet, as deployed

{
	my $t = ChatTest->new(no_backend => 1);
	my $sock = listening_unix($t->socket);
	my $p = start('nginx', $sock, \%activated);
	ok(wait_started('nginx', $p), 'socket-activated behind nginx: it starts')
		or diag(log_of('nginx'));
	my $r = $t->post('{"message":"via nginx"}');
	is($r->{status}, 200, '... nginx passes POST /chat/ to it');
	is($t->json($r)->{message}, 'received via nginx', '... and gets the answer');
	kill 'TERM', $p;
	is(finish($p), 0, '... exit 0');
	close $sock;
	$t->done;
}

## A TCP socket passed the same way

my $tcp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16,
	Proto => 'tcp') // die "tcp listen: $!";
$pid = start('tcp', $tcp, \%activated);
ok(wait_started('tcp', $pid), 'a TCP socket on fd 3 is accepted too') or diag(log_of('tcp'));
like(log_of('tcp'), qr/listening on 127\.0\.0\.1:\d+ \(fd 3 from systemd\)/, '... and logged');
is(chat(FastCGI::connect_tcp('127.0.0.1', $tcp->sockport), 'tcp'),
	'{"message":"received tcp"}', '... and served');
kill 'TERM', $pid;
is(finish($pid), 0, '... exit 0');
close $tcp;

## Variables meant for another process are ignored

# The parent's pid (this test) is not the backend's: fd 3 is not used, so
# without --listen it falls back to fd 0, which is /dev/null here.
$pid = start('other', $listener, { LISTEN_PID => $$, LISTEN_FDS => 1 });
is(finish($pid), 1, 'LISTEN_PID of another process: fd 3 is ignored (fd 0 is tried)');
like(log_of('other'), qr/fd 0 is not a listening socket/, '... and fd 0 judged instead');

my $own = "$dir/own.sock";
$pid = start('other-listen', $listener, { LISTEN_PID => $$, LISTEN_FDS => 1 }, '--listen',
	"unix:$own");
ok(wait_started('other-listen', $pid), 'LISTEN_PID of another process with --listen: it starts')
	or diag(log_of('other-listen'));
like(log_of('other-listen'), qr{listening on unix:\Q$own\E with}, '... on its own --listen socket');
is(chat(FastCGI::connect_unix($own), 'own'), '{"message":"received own"}', '... and serves it');
kill 'TERM', $pid;
is(finish($pid), 0, '... exit 0');

## Bad variables, or a bad fd 3, for this process: a clear error, exit 1

sub fails {
	my ($name, $fd3, $env, $want, $what, @args) = @_;
	my $p = start($name, $fd3, $env, @args);
	is(finish($p), 1, "$what: exit 1");
	like(log_of($name), $want, '... saying why') or diag(log_of($name));
}

fails('two', $listener, { %activated, LISTEN_FDS => 2 },
	qr/systemd passed 2 sockets \(LISTEN_FDS=2\).*single ListenStream=/, 'LISTEN_FDS=2');
fails('zero', $listener, { %activated, LISTEN_FDS => 0 }, qr/systemd passed 0 sockets/,
	'LISTEN_FDS=0');
fails('junk', $listener, { %activated, LISTEN_FDS => 'one' }, qr/LISTEN_FDS is 'one'/,
	'LISTEN_FDS=one');
fails('unset', $listener, { LISTEN_PID => 'self' }, qr/LISTEN_FDS is not set/,
	'LISTEN_PID without LISTEN_FDS');

open(my $file, '<', '/dev/null') or die;
fails('file', $file, \%activated, qr/fd 3 is not a listening stream socket/,
	'fd 3 is a file, not a socket');
fails('closed', undef, \%activated, qr/fd 3 is not a listening stream socket/,
	'fd 3 is not open');
my $unbound = IO::Socket::UNIX->new(Type => SOCK_STREAM) // die;
fails('unbound', $unbound, \%activated, qr/fd 3 is not a listening stream socket/,
	'fd 3 is a socket that does not listen');
my $dgram = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => "$dir/dgram.sock") // die;
fails('dgram', $dgram, \%activated, qr/fd 3 is not a listening stream socket/,
	'fd 3 is a datagram socket');
fails('both', $listener, \%activated, qr/systemd passed a socket.*--listen unix:\S+ asks for another/,
	'a passed socket and --listen', '--listen', "unix:$dir/both.sock");
ok(!-e "$dir/both.sock", '... and no socket file is made for --listen');

close $listener;
done_testing;
