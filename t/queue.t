#!/usr/bin/perl
# A peer that does not read its answers costs its connection's queue, for a
# while, and no thread. Straight to the socket, the peer sends many requests
# at once and reads nothing, so the answers fill the socket and then the
# connection's queue (src/server/output.c).
#  - A connection whose queue is over --max-queue is not read on; an answer
#    to add to it closes the connection: logged, counted as
#    reason="queue_full". Here 10,000 FCGI_GET_VALUES come in one write,
#    --max-queue 4K.
#  - Under it, the queue stays, and once the peer has taken nothing for
#    --send-timeout the connection is closed: reason="send_timeout". Here
#    3,000 small posts, --send-timeout 2.
# Meanwhile, and after, other connections are served at once.

use strict;
use warnings;

use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;
use FastCGI;

$| = 1;

my $request = FastCGI::request(FastCGI::chat_params(), '{"message":"unread"}', keep => 1);

# A metric of the backend, asked over a connection of its own.
sub metric {
	my ($t, $name) = @_;
	my $s = FastCGI::connect_unix($t->socket) // die "connect: $!";
	print $s FastCGI::metrics_request();
	my $r = FastCGI::read_response($s, 5);
	close $s;
	return $r->{body} =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

sub served {
	my ($t, $name) = @_;
	my $t0 = time;
	my $s = FastCGI::connect_unix($t->socket) // die "connect: $!";
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"next"}');
	my $r = FastCGI::read_response($s, 5);
	close $s;
	is($r->{body}, '{"message":"received next"}', "$name: another connection is served");
	cmp_ok(time - $t0, '<', 1 * ChatTest::slack(), '... at once');
}

# Sends $n requests on a new connection without reading; the socket.
sub flood {
	my ($t, $n) = @_;
	my $s = FastCGI::connect_unix($t->socket) // die "connect: $!";
	# The backend stops reading a connection whose queue is over the cap,
	# so the writes may block: they run in a child, which the test reaps.
	my $pid = fork() // die "fork: $!";
	if ($pid == 0) {
		local $SIG{PIPE} = 'IGNORE';
		for (1 .. $n / 100) {
			print $s $request x 100 or last;
		}
		POSIX::_exit(0);
	}
	return ($s, $pid);
}

# Waits until the backend closed $s (EOF), reading and dropping what it sent.
sub closed_within {
	my ($s, $seconds) = @_;
	my $deadline = time + $seconds;
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	while (time < $deadline) {
		next unless select(my $rout = $rin, undef, undef, 0.1);
		my $n = sysread($s, my $buf, 1 << 20);
		return 1 if defined $n && $n == 0;
		return 1 if !defined $n && !$!{EAGAIN} && !$!{EINTR};
	}
	return 0;
}

sub reap {
	my ($pid) = @_;
	kill('KILL', $pid);
	waitpid($pid, 0);
}

## Past --max-queue: closed

{
	# A connection over --max-queue is not read on, so requests that
	# follow wait; but management records in one take are answered one
	# after another, and the answer that finds the queue over the cap
	# closes the connection.
	my $t = ChatTest->new(no_nginx => 1, backend_args => ['--max-queue', '4K']);
	my $pid = $t->backend_pid;
	my $s = FastCGI::connect_unix($t->socket) // die "connect: $!";
	print $s FastCGI::get_values('FCGI_MPXS_CONNS') x 10000;
	my $deadline = time + 10;
	sleep 0.1 until (metric($t, 'chat_fcgi_connections_closed_total{reason="queue_full"}') // 0) > 0
		|| time > $deadline;
	is(metric($t, 'chat_fcgi_connections_closed_total{reason="queue_full"}'), 1,
		'10,000 FCGI_GET_VALUES at once, none of the answers read, --max-queue 4K: '
		. 'closed, counted as queue_full');
	ok(closed_within($s, 5), '... its end of the connection sees the close');
	like($t->backend_log, qr/closed a connection: .*--max-queue/, '... and it is logged');
	is(metric($t, 'chat_fcgi_output_queued_bytes'), 0, '... and its queue is freed');
	served($t, 'past --max-queue');
	close $s;
	ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0, '... by the same process');
	$t->done;
}

## Under it, nothing taken for --send-timeout: closed

{
	my $t = ChatTest->new(no_nginx => 1, backend_args => ['--send-timeout', '2']);
	my ($s, $writer) = flood($t, 3000);
	sleep 0.5;
	my $queued = metric($t, 'chat_fcgi_output_queued_bytes') // 0;
	cmp_ok($queued, '>', 0, "a peer that reads no answer: its answers wait in its queue ($queued bytes)");
	served($t, 'while they wait');
	# Read nothing: reading is what keeps a connection from its timeout.
	my $deadline = time + 5 * ChatTest::slack();
	sleep 0.1 until (metric($t, 'chat_fcgi_connections_closed_total{reason="send_timeout"}') // 0) > 0
		|| time > $deadline;
	is(metric($t, 'chat_fcgi_connections_closed_total{reason="send_timeout"}'), 1,
		'--send-timeout 2: the connection is closed, counted as send_timeout');
	is(metric($t, 'chat_fcgi_output_queued_bytes'), 0, '... and its queue is freed');
	like($t->backend_log, qr/closed a connection: .*send timeout/, '... and it is logged');
	ok(closed_within($s, 5), '... and its peer sees the close once it reads');
	reap($writer);
	close $s;
	$t->done;
}

done_testing;
