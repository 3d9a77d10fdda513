#!/usr/bin/perl
# A body trickled a byte at a time past its deadline: that connection is
# closed, and with --threads 2 and 40 such peers, nginx's requests are still
# answered. --receive-timeout is a total for a request's head (BEGIN_REQUEST
# and PARAMS), then for its body (STDIN), not a limit on each read: a peer
# that keeps sending a byte now and then is cut off all the same, and while
# it trickles it holds no thread. Each such close is logged ("closed",
# "receive timeout") and counted in
# chat_fcgi_connections_closed_total{reason="receive_timeout"}.
#
# The peers talk FastCGI straight to the backend's socket: nginx buffers a
# client's whole body before it passes the request on (t/hostile.t), so
# only a peer on the socket itself can trickle to the backend.

use strict;
use warnings;

use IO::Select;
use POSIX qw(WNOHANG _exit);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;
$SIG{PIPE} = 'IGNORE';    # writes to a peer the backend closed fail, no more

my $receive_timeout = 3;
my $t = ChatTest->new(rate_limit => 'off',
	backend_args => ['--threads', '2', '--receive-timeout', $receive_timeout]);
my $pid = $t->backend_pid;

# The head of a post announcing a body of 1,000 bytes, none of which is in it.
my $head = FastCGI::begin_request(1)
	. FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => 1000));

sub connect_backend { FastCGI::connect_unix($t->socket) // die "connect: $!" }

# Sends $first on a new connection, then the pieces that $next gives (one
# every $every seconds; undef when there is no more), until the backend
# closes the connection or $limit seconds pass. Returns the seconds from the
# first write to the close (undef if it stayed open) and what the backend
# sent.
sub trickle {
	my ($first, $next, $every, $limit) = @_;
	my $s = connect_backend();
	my $t0 = time;
	syswrite($s, $first);
	my ($got, $closed, $due) = ('', undef, $t0 + $every);
	my $sel = IO::Select->new($s);
	while (!defined $closed && time - $t0 < $limit) {
		my $wait = $due - time;
		$wait = 0 if $wait < 0;
		if ($sel->can_read($wait)) {
			my $n = sysread($s, my $buf, 65536);
			if (!$n) { $closed = time - $t0; last }
			$got .= $buf;
		}
		if (time >= $due) {
			my $piece = $next->();
			$closed = time - $t0 if defined $piece && !defined syswrite($s, $piece);
			$due += $every;
		}
	}
	close $s;
	return ($closed, $got);
}

# The backend's count of connections closed for $reason, through nginx.
sub closed_count {
	my ($reason) = @_;
	my $r = $t->request(path => '/chat/metrics', timeout => 3);
	return $r->{body} =~ /^chat_fcgi_connections_closed_total\{reason="\Q$reason\E"\} (\d+)$/m ? $1 : undef;
}

# The log lines saying a connection was closed for a receive timeout, once
# they have had a moment to be written.
sub timeout_lines {
	my ($want) = @_;
	my @lines;
	my $deadline = time + 1 * ChatTest::slack();
	do {
		@lines = grep { /closed/ && /receive timeout/ } split /\n/, $t->backend_log;
	} while (@lines < $want && time < $deadline && sleep 0.05);
	return scalar @lines;
}

sub within_deadline {
	my ($secs) = @_;
	return defined $secs && $secs >= $receive_timeout - 0.05 && $secs <= $receive_timeout + 2;
}

## One body, a byte every 0.5 s

{
	my ($closed, $got) = trickle($head, sub { FastCGI::stdin(1, 'x', 0) }, 0.5, 11);
	ok(within_deadline($closed), sprintf('a body trickled a byte every 0.5 s: closed %d to %d s after its head (%s)',
		$receive_timeout, $receive_timeout + 2, defined $closed ? sprintf('%.1f s', $closed) : 'still open after 11 s'));
	is(length $got, 0, '... without an answer');
	is(timeout_lines(1), 1, '... logged once, "closed" for a "receive timeout"');
	is(closed_count('receive_timeout'), 1, '... and counted (reason="receive_timeout")');
}

## A head trickled a byte at a time: its parameters never whole

{
	# BEGIN_REQUEST goes at once, then a PARAMS record announcing 200 bytes
	# of pairs, of which a byte comes every 0.25 s.
	my $params = FastCGI::record(FastCGI::PARAMS, 1, FastCGI::name_value('HTTP_X_SLOW', 'p' x 185));
	my @bytes = split //, $params;
	my ($closed, $got) = trickle(FastCGI::begin_request(1), sub { shift @bytes }, 0.25, 11);
	ok(within_deadline($closed), sprintf('a head trickled a byte every 0.25 s: closed %d to %d s after its first byte (%s)',
		$receive_timeout, $receive_timeout + 2, defined $closed ? sprintf('%.1f s', $closed) : 'still open after 11 s'));
	is(length $got, 0, '... without an answer');
	is(timeout_lines(2), 2, '... logged');
	is(closed_count('receive_timeout'), 2, '... and counted');
}

## 40 bodies trickled a byte every 2 s, while nginx's requests go on

{
	my $peers = 40;
	pipe(my $rd, my $wr) or die "pipe: $!";
	my $kid = fork() // die "fork: $!";
	if ($kid == 0) {
		# Each peer's head, then a byte every 2 s, for 10 s at most; a line
		# per peer at the end: the seconds from its head to the close
		# ("open" if it was not closed) and the bytes it was sent.
		close $rd;
		Test::More->builder->no_ending(1);
		$wr->autoflush(1);
		my (@s, @t0, %closed, %got);
		for my $i (0 .. $peers - 1) {
			$s[$i] = FastCGI::connect_unix($t->socket) or _exit(1);
			$t0[$i] = time;
			syswrite($s[$i], $head);
		}
		print $wr "ready\n";
		my $sel = IO::Select->new(@s);
		my %index = map { fileno($s[$_]) => $_ } 0 .. $#s;
		my $start = time;
		my $due = $start + 2;
		while ($sel->count && time - $start < 10) {
			my $wait = $due - time;
			for my $fh ($sel->can_read($wait > 0 ? $wait : 0)) {
				my $i = $index{ fileno $fh };
				my $n = sysread($fh, my $buf, 65536);
				if ($n) { $got{$i} .= $buf; next }
				$closed{$i} = time - $t0[$i];
				$sel->remove($fh);
			}
			next if time < $due;
			for my $fh ($sel->handles) {
				my $i = $index{ fileno $fh };
				next if defined syswrite($fh, FastCGI::stdin(1, 'x', 0));
				$closed{$i} = time - $t0[$i];
				$sel->remove($fh);
			}
			$due += 2;
		}
		printf $wr "%s %d\n", $closed{$_} // 'open', length($got{$_} // '') for 0 .. $peers - 1;
		close $_ for @s;
		_exit(0);
	}
	close $wr;
	my $ready = <$rd> // '';
	is($ready, "ready\n", "$peers peers sent a head announcing 1,000 bytes and trickle a byte every 2 s");

	# Every 200 ms for 8 s: a stateless post and a read of a room, each
	# through nginx, each timed.
	my (@took, @bad);
	my $start = time;
	my $tick = $start;
	while (time - $start < 8) {
		for my $req (['a stateless post', sub { $t->post('{"message":"meanwhile"}', timeout => 3) }],
			['GET /chat/messages', sub { $t->request(path => '/chat/messages?room=trickle', timeout => 3) }])
		{
			my ($what, $send) = @$req;
			my $t0 = time;
			my $r = $send->();
			my $secs = time - $t0;
			push @took, $secs;
			push @bad, sprintf('%s at %.1f s: %s after %.1f s', $what, $t0 - $start,
				$r->{status} || 'no answer', $secs) if $r->{status} != 200;
		}
		$tick += 0.2;
		sleep($tick - time) if $tick > time;
	}
	my ($slowest) = sort { $b <=> $a } @took;
	is_deeply(\@bad, [], scalar(@took) . ' requests through nginx meanwhile: all 200');
	cmp_ok($slowest, '<', 1 * ChatTest::slack(), sprintf('... each within 1 s (slowest %.0f ms)', $slowest * 1000));

	my @report = <$rd>;
	close $rd;
	waitpid($kid, 0);
	my @closed = map { /^(\S+)/ ? $1 : 'open' } @report;
	my @late = grep { !within_deadline($_ eq 'open' ? undef : $_) } @closed;
	is(scalar @report, $peers, 'each peer reported');
	is_deeply(\@late, [], "the $peers trickled bodies were each closed at their deadline")
		or diag("closed after (s): @closed");
	is_deeply([grep { !/ 0$/ } @report], [], '... none answered');
	is(closed_count('receive_timeout'), 2 + $peers, '... each counted');
	is(timeout_lines(2 + $peers), 2 + $peers, '... and logged');
}

is($t->backend_pid, $pid, 'the backend is the process it was at the start');
ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0, '... still running');
is($t->post('{"message":"end"}', timeout => 5)->{status}, 200, '... and answering');
$t->done;

done_testing;
