#!/usr/bin/perl
# The backend's unix socket is reachable by nginx's user and nobody else,
# with the backend itself running unprivileged, as README's deployment does
# it: spawn-fcgi -M 0660 -U <backend user> -G www-data -u <backend user>.
# Here the backend runs as "daemon" (a stand-in for the chat-fcgi user),
# nginx's user is www-data, and "nobody" is everyone else. So does
# chat-fcgi --listen unix:... --socket-mode 0660 on its own.

use strict;
use warnings;

use File::Copy qw(copy);
use IO::Socket::UNIX;
use POSIX qw(WNOHANG);
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;

$| = 1;

plan(skip_all => 'switching users needs root (CI runs as root)') if $> != 0;
my %id;
for my $user (qw(daemon www-data nobody)) {
	my @pw = getpwnam($user) or plan(skip_all => "no user $user");
	$id{$user} = [$pw[2], $pw[3]];
}

my $t = ChatTest->new(no_backend => 1, no_nginx => 1, spawn => 1);
# The test's dir is private (0700); let other users through to the socket
# and the binary, and nothing more. The binary is copied: a checkout under
# a private home would keep the backend's user out.
chmod(0711, $t->dir) or die "chmod: $!";
my $bin = $t->dir . '/chat-fcgi';
copy($t->bin, $bin) or die "copy: $!";
chmod(0755, $bin) or die "chmod: $!";

# Tries to connect to $sock as $user (real and effective ids, no
# supplementary groups but the user's own); returns 0 on success, else errno.
sub connect_as {
	my ($user, $sock) = @_;
	my ($uid, $gid) = @{ $id{$user} };
	my $pid = fork() // die "fork: $!";
	if ($pid == 0) {
		$) = "$gid $gid";
		$( = $gid;
		POSIX::setuid($uid) or POSIX::_exit(200);
		POSIX::_exit(201) if $> != $uid || $< != $uid;
		my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock);
		POSIX::_exit($s ? 0 : ($! + 0) || 202);
	}
	waitpid($pid, 0);
	return $? >> 8;
}

sub wait_socket {
	my ($sock, $pid) = @_;
	my $deadline = time + 5;
	while (time < $deadline) {
		return 1 if -S $sock;
		return 0 if waitpid($pid, WNOHANG) == $pid;
		sleep 0.02;
	}
	return 0;
}

sub proc_ids {
	my ($pid) = @_;
	my $status = ChatTest::read_file("/proc/$pid/status");
	my ($uid) = $status =~ /^Uid:\s+(\d+)/m;
	my ($gid) = $status =~ /^Gid:\s+(\d+)/m;
	return ($uid // -1, $gid // -1);
}

sub stop {
	my ($pid) = @_;
	kill 'TERM', $pid;
	waitpid($pid, 0);
}

my $EACCES = POSIX::EACCES();
my $www_gid = $id{'www-data'}[1];

{
	# As deployed: spawn-fcgi makes the socket and drops to the backend's user.
	my $sock = $t->dir . '/spawned.sock';
	my $pid = $t->spawn_logged($t->dir . '/backend.log', $t->{spawn}, '-n', '-s', $sock,
		'-M', '0660', '-U', 'daemon', '-G', 'www-data', '-u', 'daemon', '-g', 'daemon',
		'--', $bin, '--store', 'none');    # sockets only: no history
	ok(wait_socket($sock, $pid), 'spawn-fcgi started chat-fcgi') or diag($t->backend_log);
	my @st = stat $sock;
	is(sprintf('%04o', ($st[2] // 0) & 07777), '0660', 'the socket is rw for owner and group only');
	is($st[5], $www_gid, "... and its group is nginx's, www-data");
	is_deeply([proc_ids($pid)], $id{daemon}, 'the backend runs as its unprivileged user');
	is(connect_as('www-data', $sock), 0, "nginx's user www-data can connect");
	is(connect_as('nobody', $sock), $EACCES, 'any other user (nobody) cannot: EACCES');
	stop($pid);
}

{
	# chat-fcgi making the socket itself, as a user in the www-data group,
	# in a directory of its own that anyone may pass through.
	my $run = $t->dir . '/run';
	mkdir($run, 0755) or die "mkdir: $!";
	chown($id{daemon}[0], $id{daemon}[1], $run) or die "chown: $!";
	my $sock = "$run/own.sock";
	my $pid = $t->spawn_logged($t->dir . '/backend.log', 'setpriv', '--reuid=daemon',
		"--regid=$www_gid", '--clear-groups', '--', $bin, '--store', 'none', '--listen',
		"unix:$sock", '--socket-mode', '0660');
	ok(wait_socket($sock, $pid), 'chat-fcgi --listen started as daemon:www-data')
		or diag($t->backend_log);
	is(sprintf('%04o', (stat $sock)[2] & 07777), '0660', '--socket-mode 0660 is applied');
	is(connect_as('www-data', $sock), 0, 'www-data can connect');
	is(connect_as('nobody', $sock), $EACCES, 'nobody cannot');
	stop($pid);
}

unlike($t->backend_log, qr/AddressSanitizer|runtime error/, 'no sanitizer report');
$t->stop;
done_testing;
