#!/usr/bin/perl
# --pollers: only that many threads take new requests, and one about to wait
# hands its place to a parked thread first. With the database locked by
# another process, posts to a room wait (then 503), and stateless posts,
# health checks and polls go on being answered at once. A post to a room
# takes no thread while it waits for the store (the store's own thread
# writes it): even with a single thread, the same stateless post is
# answered at once.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

use ChatTest;
use FastCGI;

$| = 1;

sub room_post {
	my ($t, $text) = @_;
	return $t->begin_request(method => 'POST', path => '/chat/',
		body => qq({"message":"$text","room":"locked"}),
		headers => ['Content-Type' => 'application/json']);
}

# Seconds a stateless post takes, and its status.
sub timed_post {
	my ($t, $text) = @_;
	my $t0 = time;
	my $r = $t->post(qq({"message":"$text"}), timeout => 15);
	return (time - $t0, $r->{status});
}

{
	my $t = ChatTest->new(backend_args => ['--threads', '3', '--pollers', '1'],
		rate_limit => 'off');
	is($t->post('{"message":"warm","room":"locked"}')->{status}, 200, 'a room post before the lock');
	my $lock = $t->lock_store;
	my @waiting = map { room_post($t, "w$_") } 1 .. 2;
	sleep 0.2;    # both are inside the store's busy wait now
	my ($worst, @status) = (0);
	for my $i (1 .. 20) {
		my ($took, $status) = timed_post($t, "s$i");
		$worst = $took if $took > $worst;
		push @status, $status;
	}
	is_deeply(\@status, [(200) x 20],
		'--pollers 1, two room posts waiting on a locked store: 20 stateless posts answered');
	ok($worst < 0.5 * ChatTest::slack(),
		sprintf('... none held up by the store (slowest %.0f ms)', $worst * 1000));
	my $h = $t->request(path => '/chat/health', timeout => 15);
	is($h->{status}, 200, '... health answers');
	my $m = $t->request(path => '/chat/messages?room=locked', timeout => 15);
	is($m->{status}, 200, '... a read of the room answers');
	my @r = map { $t->finish_request($_, 15) } @waiting;
	is_deeply([map { $_->{status} } @r], [503, 503], 'the room posts end in 503 (locked past 2 s)');
	close($lock);
	is($t->post('{"message":"again","room":"locked"}')->{status}, 200,
		'once the lock is gone, room posts work again');
	my ($took, $status) = timed_post($t, 'after');
	is($status, 200, '... and stateless ones still do');
	$t->done;
}

{
	my $t = ChatTest->new(backend_args => ['--threads', '1'], rate_limit => 'off');
	my $lock = $t->lock_store;
	my @waiting = map { room_post($t, "one$_") } 1 .. 3;
	sleep 0.2;
	my $m = $t->request(path => '/chat/metrics', timeout => 15);
	like($m->{body}, qr/^chat_fcgi_posts_storing 3$/m, '... the metrics count them as being stored');
	my ($took, $status) = timed_post($t, 'free');
	is($status, 200, '--threads 1, three room posts waiting on a locked store: a stateless post');
	ok($took < 0.5 * ChatTest::slack(),
		sprintf('... answered at once: the waiting posts hold no thread (%.0f ms)', $took * 1000));
	my @r = map { $t->finish_request($_, 15) } @waiting;
	is_deeply([map { $_->{status} } @r], [503, 503, 503], '... and they end in 503');
	close($lock);
	is($t->post('{"message":"again","room":"locked"}')->{status}, 200,
		'... then, the lock gone, room posts work again');
	like($t->request(path => '/chat/metrics')->{body}, qr/^chat_fcgi_posts_storing 0$/m,
		'... and none is left being stored');
	$t->done;
}

# More room posts than --max-posts (256 by default) wait for a locked store:
# the rest are refused at once with 503 and Retry-After, and with a single
# thread a stateless post is still answered at once. Every post gets its
# answer.
{
	my $t = ChatTest->new(backend_args => ['--threads', '1'], rate_limit => 'off');
	my $lock = $t->lock_store;
	my @posts;
	for my $i (1 .. 260) {
		my $s = FastCGI::connect_unix($t->socket) or last;
		print $s FastCGI::request(FastCGI::chat_params(),
			qq({"message":"q$i","room":"queue","client_id":"q$i"}));
		push @posts, $s;
	}
	is(scalar @posts, 260, '260 room posts sent to the backend, its store locked');
	sleep 0.3;
	my $t0 = time;
	my $s = FastCGI::connect_unix($t->socket);
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"behind"}');
	my $r = FastCGI::read_response($s, 30);
	my $took = time - $t0;
	is($r->{status}, 200, '... a stateless post is answered');
	ok($took < 0.5 * ChatTest::slack(), sprintf('... at once (%.0f ms)', $took * 1000));
	my @answers = map { FastCGI::read_response($_, 30) } @posts;
	my @refused = grep { ($_->{headers}{'retry-after'} // '') eq '1' } @answers;
	cmp_ok(scalar @refused, '>=', 4, '... the posts past --max-posts are refused with Retry-After: 1');
	is_deeply([grep { $_ ne '503' } map { $_->{status} // 'none' } @answers], [],
		'... and every room post is answered 503, the store being locked');
	close($lock);
	is($t->post('{"message":"again","room":"queue","client_id":"q1"}')->{status}, 200,
		'the lock gone, room posts are stored again');
	$t->done;
}

## A batch with a request whose body has not come

# A poller takes every event waiting in one epoll_wait (src/server/loop.c,
# BATCH_MAX) and serves them in order. A request whose body has not all
# come is kept as its connection's state (src/server/intake.c), so the
# poller goes straight on to the rest of its batch. The backend is stopped
# while the requests arrive on connections it has accepted, so that one
# epoll_wait takes them all.
sub one_batch {
	my ($t, @requests) = @_;
	my @s = map { FastCGI::connect_unix($t->socket) // die "connect: $!" } @requests;
	sleep 0.2;    # all accepted and watched
	kill('STOP', $t->backend_pid) or die "kill: $!";
	print { $s[$_] } $requests[$_] for 0 .. $#requests;
	sleep 0.1;
	kill('CONT', $t->backend_pid) or die "kill: $!";
	return @s;
}

my $slow_body = '{"message":"slow body"}';
my $slow_head = FastCGI::begin_request(1)
	. FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => length $slow_body))
	. FastCGI::stdin(1, substr($slow_body, 0, 5), 0);
my $slow_rest = FastCGI::stdin(1, substr($slow_body, 5));

{
	my $t = ChatTest->new(no_nginx => 1, backend_args => ['--threads', '2', '--pollers', '1']);
	my $t0 = time;
	my ($a, $b) = one_batch($t, $slow_head, FastCGI::request(FastCGI::chat_params(), '{"message":"behind it"}'));
	my $r = FastCGI::read_response($b, 5);
	my $took = time - $t0 - 0.3;
	is($r->{body}, '{"message":"received behind it"}', 'a request taken with one whose body has not come');
	ok($took < 0.3 * ChatTest::slack(), sprintf('... is answered while that body waits (%.0f ms)', $took * 1000));
	print $a $slow_rest;
	is(FastCGI::read_response($a, 5)->{body}, '{"message":"received slow body"}',
		'... and the first, once its body comes');
	$t->done;
}

{
	# Every thread a poller, none parked.
	my $t = ChatTest->new(no_nginx => 1, backend_args => ['--threads', '2', '--pollers', '2']);
	my $t0 = time;
	my ($a, $b) = one_batch($t, $slow_head, FastCGI::request(FastCGI::chat_params(), '{"message":"woken"}'));
	my $r = FastCGI::read_response($b, 5);
	my $took = time - $t0 - 0.3;
	is($r->{body}, '{"message":"received woken"}', '--pollers 2, no thread parked: the request behind a slow body');
	ok($took < 0.3 * ChatTest::slack(), sprintf('... is answered by the other poller (%.0f ms)', $took * 1000));
	print $a $slow_rest;
	is(FastCGI::read_response($a, 5)->{body}, '{"message":"received slow body"}', '... and the first one after');
	$t->done;
}

# Events the standby took so far (chat_fcgi_standby_events_total), asked
# of the backend itself.
sub standby_events {
	my ($t) = @_;
	my $s = FastCGI::connect_unix($t->socket) // die "connect: $!";
	print $s FastCGI::metrics_request();
	my $r = FastCGI::read_response($s, 5);
	close $s;
	return $r->{body} =~ /^chat_fcgi_standby_events_total (\d+)$/m ? $1 : -1;
}

{
	# Two requests whose bodies have not come, in one batch, with
	# --threads 2: they wait as connection states, so a third request is
	# served at once, and each of the two when its body comes.
	my $t = ChatTest->new(no_nginx => 1, backend_args => ['--threads', '2', '--pollers', '1']);
	my ($a, $b) = one_batch($t, $slow_head, $slow_head);
	sleep 0.2;
	my $c = FastCGI::connect_unix($t->socket);
	print $c FastCGI::request(FastCGI::chat_params(), '{"message":"third"}');
	is(FastCGI::read_response($c, 2)->{body}, '{"message":"received third"}',
		'--threads 2, a batch of two requests whose bodies have not come: a third is served');
	print $a $slow_rest;
	is(FastCGI::read_response($a, 5)->{body}, '{"message":"received slow body"}',
		'... the first ends when its body comes');
	print $b $slow_rest;
	is(FastCGI::read_response($b, 5)->{body}, '{"message":"received slow body"}', '... and the second');
	close $_ for $a, $b, $c;
	$t->done;
}

## The only poller put off the CPU: the standby thread answers

SKIP: {
	# One poller (the default on two CPUs) would stop the service whenever
	# another process keeps it off the CPU; the standby thread then takes
	# the requests (src/server/loop.c, standby). Here the poller and every other
	# thread of the backend are pinned to CPU 0, the standby and this test to
	# CPU 1, and a real-time process spins on CPU 0.
	my $cpus = () = ChatTest::read_file('/proc/cpuinfo') =~ /^processor\s*:/mg;
	skip('needs two CPUs', 5) if $cpus < 2;
	skip('needs permission for real-time scheduling (chrt -f)', 5)
		if system('chrt -f 1 true 2>/dev/null') != 0;
	my $t = ChatTest->new(no_nginx => 1, backend_args => ['--threads', '2', '--pollers', '1']);
	my $pid = $t->backend_pid;
	my (@standby, @others);
	for my $task (glob "/proc/$pid/task/*") {
		my ($tid) = $task =~ /(\d+)$/;
		my $comm = ChatTest::read_file("$task/comm");
		if ($comm =~ /^chat-standby$/m) { push @standby, $tid } else { push @others, $tid }
	}
	is(scalar @standby, 1, 'the backend has one standby thread, named chat-standby');
	my ($mask) = `taskset -p $$` =~ /:\s*(\S+)\s*$/;
	system("taskset -p -c 1 $_ >/dev/null") == 0 or die "taskset $_" for @standby, $$;
	system("taskset -p -c 0 $_ >/dev/null") == 0 or die "taskset $_" for @others;
	my $hog = fork // die "fork: $!";
	if (!$hog) {
		exec('chrt', '-f', '50', 'taskset', '-c', '0', $^X, '-e', '1 while time < $^T + 8');
		exit 127;
	}
	sleep 0.3;
	my ($worst, @status) = (0);
	for my $i (1 .. 10) {
		my $t0 = time;
		my $s = FastCGI::connect_unix($t->socket);
		print $s FastCGI::request(FastCGI::chat_params(), qq({"message":"h$i"}));
		my $r = FastCGI::read_response($s, 3);
		close $s;
		my $took = time - $t0;
		$worst = $took if $took > $worst;
		push @status, $r->{status};
		sleep 0.15;
	}
	my $spun = waitpid($hog, WNOHANG) == 0;
	kill('KILL', $hog);
	waitpid($hog, 0);
	system("taskset -p $mask $$ >/dev/null") if $mask;
	ok($spun, 'a real-time process spun on the poller\'s CPU all along');
	is_deeply(\@status, [(200) x 10], '... and 10 stateless posts, 150 ms apart, were answered');
	ok($worst < 0.3 * ChatTest::slack(), sprintf('... each within 300 ms (slowest %.0f ms)', $worst * 1000));
	ok(standby_events($t) > 0, '... by the standby (chat_fcgi_standby_events_total)');
	$t->done;
}

{
	my $t = ChatTest->new(backend_args => ['--threads', '2', '--pollers', '8']);
	is($t->post('{"message":"capped"}')->{status}, 200, '--pollers above --threads is capped');
	$t->done;
	my $out = `$ENV{CHAT_FCGI} --pollers 0 2>&1`;
	like($out, qr/--pollers takes a number from 1 to 512, not '0'/, '--pollers 0 is refused');
}

done_testing;
