#!/usr/bin/perl
# Faults: the backend killed with kill -9 under load, behind nginx and the
# supervisor that ./dev up and the deployment examples use
# (conf/chat-fcgi-supervise): nginx answers a JSON 502 at once, the
# supervisor starts the backend again, and traffic is back within a second.
# Also what the supervisor does on SIGTERM and on bad options, and the
# places the backend writes to (its socket, its log) being unwritable or
# full. (A stopped backend, SIGSTOP, gives nginx's JSON 504 after the
# shipped fastcgi_read_timeout: t/nginx_errors.t.)

use strict;
use warnings;

use File::Copy qw(copy);
use File::Temp qw(tempdir);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;

# Waits until $cond returns true or $secs pass; returns its last value.
sub wait_until {
	my ($cond, $secs) = @_;
	my $deadline = time + $secs;
	my $v;
	until (($v = $cond->()) || time > $deadline) { sleep 0.02 }
	return $v;
}

sub median {
	my @s = sort { $a <=> $b } @_;
	return @s ? $s[int($#s / 2)] : undef;
}

## kill -9 under load, with the supervisor

{
	# Load from one address: the rate limit (rate_limit.t) is off.
	my $t = ChatTest->new(supervise => 1, rate_limit => 'off');
	my $sup = $t->backend_pid;
	my $first = wait_until(sub { $t->supervised_pid }, 5);
	ok($first, 'the supervisor runs chat-fcgi as its child');
	is($t->json($t->post('{"message":"before"}'))->{message}, 'received before',
		'it serves through nginx');

	# Clients post one after another and record, for each request, when it
	# started and ended, the status, and whether the body was a reply or an
	# error in JSON.
	my ($clients, $secs) = (4, 3);
	my @files = map { $t->dir . "/load.$_" } 1 .. $clients;
	my @kids;
	for my $f (@files) {
		my $p = fork() // die "fork: $!";
		if ($p == 0) {
			Test::More->builder->no_ending(1);
			open(my $fh, '>', $f) or POSIX::_exit(1);
			my $until = time + $secs;
			my $i = 0;
			while (time < $until) {
				$i++;
				my $t0 = time;
				my $r = $t->post(qq({"message":"load $i"}), timeout => 5);
				my $j = $t->json($r);
				my $kind = ref $j ne 'HASH' ? 'none'
					: ($j->{message} // '') eq "received load $i" ? 'reply'
					: defined $j->{error} ? 'error' : 'other';
				printf $fh "%.6f %.6f %d %s\n", $t0, time, $r->{status}, $kind;
			}
			close $fh;
			POSIX::_exit(0);
		}
		push @kids, $p;
	}
	sleep 1;
	my $killed_at = time;
	kill 'KILL', $first;
	my $second = wait_until(sub { my $p = $t->supervised_pid; $p && $p != $first ? $p : undef }, 5);
	waitpid($_, 0) for @kids;

	my @seen;
	for my $f (@files) {
		push @seen, map { [split / /] } split /\n/, ChatTest::read_file($f);
	}
	my @odd = grep { !($_->[2] == 200 && $_->[3] eq 'reply') && !($_->[2] == 502 && $_->[3] eq 'error') }
		@seen;
	is_deeply([map { "@$_[2,3]" } @odd], [], 'every answer was a 200 reply or a JSON 502: no hang, no other status');
	my @bad_gateway = grep { $_->[2] == 502 } @seen;
	ok(@bad_gateway, 'while the backend was dead, nginx answered 502 (' . scalar(@bad_gateway) . ' times)');
	my @took = map { $_->[1] - $_->[0] } @bad_gateway;
	my $med = median(@took);
	my $max = (sort { $b <=> $a } @took)[0];
	# On a busy machine one request may wait for a core; the typical one
	# shows what nginx does.
	ok(defined $med && $med < 0.1,
		sprintf('the 502s come at once: median %.1f ms, slowest %.1f ms, under 100 ms', map { ($_ // 0) * 1000 } $med, $max));
	ok(defined $max && $max < 1, 'no 502 took a second or more');

	ok($second, 'the supervisor started chat-fcgi again');
	is($t->backend_pid, $sup, '... and is itself the same process');
	my ($back) = sort { $a <=> $b } map { $_->[1] } grep { $_->[0] > $killed_at && $_->[2] == 200 } @seen;
	ok(defined $back && $back - $killed_at < 1,
		sprintf('traffic was back %.0f ms after the kill (within 1 s)', (($back // $killed_at + 99) - $killed_at) * 1000));
	my @late = grep { $_->[0] > $killed_at + 1 && $_->[2] != 200 } @seen;
	is(scalar @late, 0, 'every request started a second after the kill got its reply');
	ok((grep { $_->[1] < $killed_at && $_->[2] == 200 } @seen) >= 10, 'there was traffic before the kill');
	like($t->backend_log, qr/^chat-fcgi-supervise: chat-fcgi was killed by signal 9; starting it again$/m,
		'the supervisor logged why it restarted chat-fcgi');

	# Again, with nothing else going on: the supervisor keeps at it.
	kill 'KILL', $second;
	my $third = wait_until(sub { my $p = $t->supervised_pid; $p && $p != $second ? $p : undef }, 5);
	ok($third, 'a second kill -9: started again');
	my $r = wait_until(sub { my $r = $t->post('{"message":"third"}'); $r->{status} == 200 ? $r : undef }, 2);
	is($r && $t->json($r)->{message}, 'received third', '... and serving');

	# SIGTERM to the supervisor: chat-fcgi stops cleanly, then it.
	my ($st, $secs_taken) = $t->stop_backend;
	is($st, 0, 'SIGTERM to the supervisor: exit 0');
	cmp_ok($secs_taken, '<', 5, '... within 5 s');
	ok(!kill(0, $third), '... and chat-fcgi is gone too');
	like($t->backend_log, qr/SIGTERM: finishing requests in flight.*exiting after \d+ requests/s,
		'chat-fcgi got the SIGTERM and exited cleanly');
	$t->done(backend_was_down => 1);
}

## The supervisor's own rules

{
	my $t = ChatTest->new(supervise => 1, no_nginx => 1);
	my $kid = wait_until(sub { $t->supervised_pid }, 5);
	# chat-fcgi stopped on purpose (status 0): the supervisor does not
	# start it again, and ends too.
	kill 'TERM', $kid;
	my $sup = $t->backend_pid;
	ok(wait_until(sub { waitpid($sup, WNOHANG) == $sup }, 5), 'chat-fcgi stopped with SIGTERM: the supervisor ends too');
	is($? >> 8, 0, '... with status 0');
	like($t->backend_log, qr/^chat-fcgi-supervise: chat-fcgi stopped$/m, '... saying so');
	delete $t->{backend};
	$t->stop;
}
{
	my $t = ChatTest->new(supervise => 1, no_backend => 1, no_nginx => 1);
	my $log = $t->dir . '/bad.log';
	local $ENV{SPAWN_FCGI} = $t->{spawn};
	my $pid = $t->spawn_logged($log, ChatTest::srcdir() . '/conf/chat-fcgi-supervise', '-s', $t->socket, '--',
		$t->bin, '--threads', '0');
	ok(wait_until(sub { waitpid($pid, WNOHANG) == $pid }, 5), 'bad chat-fcgi options: the supervisor gives up');
	is($? >> 8, 2, '... with status 2, as chat-fcgi');
	like(ChatTest::read_file($log), qr/refused its options; not starting it again/, '... saying why');
	my @starts = ChatTest::read_file($log) =~ /^usage: chat-fcgi/mg;
	is(scalar @starts, 1, '... after one try');
	$t->stop;
}

{
	# spawn-fcgi itself fails (here: a socket in a directory that does not
	# exist, status 255): not a signal, and worth another try, since the
	# directory may yet appear.
	my $t = ChatTest->new(supervise => 1, no_backend => 1, no_nginx => 1);
	my $log = $t->dir . '/nosock.log';
	local $ENV{SPAWN_FCGI} = $t->{spawn};
	local $ENV{CHAT_FCGI_RESTART_DELAY} = '0.05';
	my $pid = $t->spawn_logged($log, ChatTest::srcdir() . '/conf/chat-fcgi-supervise',
		'-s', $t->dir . '/missing/chat.sock', '--', $t->bin);
	my $tries = sub { my @l = ChatTest::read_file($log) =~ /could not start chat-fcgi/g; scalar @l };
	ok(wait_until(sub { $tries->() >= 3 }, 5),
		'spawn-fcgi cannot make the socket: the supervisor keeps trying');
	like(ChatTest::read_file($log),
		qr/^chat-fcgi-supervise: spawn-fcgi could not start chat-fcgi \(status 255\); trying again$/m,
		'... and says spawn-fcgi failed (status 255), not that a signal killed chat-fcgi');
	unlike(ChatTest::read_file($log), qr/killed by signal/, '... with no signal in it');
	kill 'TERM', $pid;
	ok(wait_until(sub { waitpid($pid, WNOHANG) == $pid }, 5), 'SIGTERM stops it meanwhile');
	is($? >> 8, 0, '... with status 0');
	$t->stop;
}

## What the backend writes: its socket, its log

{
	my $dir = tempdir('chat-fcgi-faults-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});
	my $bin = $ENV{CHAT_FCGI} // ChatTest::srcdir() . '/src/chat-fcgi';

	# Runs chat-fcgi to its end; returns exit status and what it printed. As
	# root every directory is writable, so it runs as nobody then.
	my $run = sub {
		my (%o) = @_;
		my $out = "$dir/out";
		my $pid = fork() // die;
		if ($pid == 0) {
			open(STDIN, '<', '/dev/null');
			open(STDOUT, '>', $out);
			open(STDERR, '>&', \*STDOUT);
			if ($o{as_nobody}) {
				my (undef, undef, $uid, $gid) = getpwnam('nobody');
				POSIX::setgid($gid) && POSIX::setuid($uid) or POSIX::_exit(126);
			}
			exec(@{ $o{cmd} }) or POSIX::_exit(127);
		}
		my $deadline = time + 5;
		while (waitpid($pid, WNOHANG) != $pid) {
			if (time > $deadline) { kill 'KILL', $pid; waitpid($pid, 0); return (-1, 'timeout') }
			sleep 0.02;
		}
		return ($? >> 8, ChatTest::read_file($out));
	};

	my ($code, $out) = $run->(cmd => [$bin, '--store', 'none', '--listen', "unix:$dir/missing/chat.sock"]);
	is($code, 1, '--listen in a directory that does not exist: exit 1');
	like($out, qr{^chat-fcgi: cannot bind \Q$dir\E/missing/chat\.sock: No such file or directory$}m,
		'... saying which path and why');

	($code, $out) = $run->(cmd => [$bin, '--store', 'none', '--listen', "unix:/dev/null/chat.sock"]);
	is($code, 1, '--listen under a file that is not a directory: exit 1');
	like($out, qr{^chat-fcgi: cannot inspect /dev/null/chat\.sock: Not a directory$}m, '... saying why');

	# An unwritable directory: read-only for its owner, or owned by root
	# for nobody (root may write anywhere). Then chat-fcgi must be where
	# nobody can run it.
	my $ro = "$dir/read-only";
	mkdir($ro) or die "mkdir $ro: $!";
	my @as;
	if ($> == 0) {
		my $pub = tempdir('chat-fcgi-bin-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});
		chmod 0755, $pub;
		copy($bin, "$pub/chat-fcgi") && chmod(0755, "$pub/chat-fcgi") or die "copy: $!";
		($bin, $ro) = ("$pub/chat-fcgi", "$pub/read-only");
		mkdir($ro) && chmod(0755, $ro) or die "mkdir $ro: $!";
		@as = (as_nobody => 1);
	} else {
		chmod 0555, $ro;
	}
	($code, $out) = $run->(cmd => [$bin, '--store', 'none', '--listen', "unix:$ro/chat.sock"], @as);
	is($code, 1, '--listen in a directory it may not write: exit 1');
	like($out, qr{^chat-fcgi: cannot bind \Q$ro\E/chat\.sock: Permission denied$}m, '... saying which path and why');
	ok(!-e "$ro/chat.sock", '... leaving nothing behind');
}

{
	# A log that cannot be written (a full disk: stderr on /dev/full) must
	# not stop the service: the lines are lost, the answers are not.
	my $t = ChatTest->new(no_backend => 1);
	my $pid = fork() // die;
	if ($pid == 0) {
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>', '/dev/full');
		open(STDERR, '>', '/dev/full');
		exec($t->bin, '--listen', 'unix:' . $t->socket, '--socket-mode', '0600', '--verbose',
			'--store', 'sqlite:' . $t->store_path)
			or POSIX::_exit(127);
	}
	$t->{backend} = $pid;
	ok($t->wait_for_socket($pid), 'with its log on a full disk (/dev/full), chat-fcgi starts');
	my @got;
	for my $i (1 .. 20) {
		my $r = $i % 2 ? $t->post(qq({"message":"full $i"})) : $t->post('{"message":1}');
		push @got, $r->{status};
	}
	is_deeply(\@got, [map { $_ % 2 ? 200 : 400 } 1 .. 20],
		'it answers good and bad requests alike (each one a log line that cannot be written)');
	ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0, '... and is still the same running process');
	my ($st) = $t->stop_backend;
	is($st, 0, '... and stops cleanly on SIGTERM');
	$t->done;
}

done_testing;
