#!/usr/bin/perl
# A store whose network stalls holds up no other request. PostgreSQL is
# frozen (SIGSTOP to its postmaster and every backend of it), which to
# chat-fcgi is a database server that takes the bytes and never answers.
# With --threads 2, ten reads of a room then wait for it: they wait as
# connections parked on the store's own threads (src/server/reads.c), not in
# the backend's two threads, so stateless posts and the metrics go on being
# answered at once. The reads end as the store decides: an answer once
# PostgreSQL is let go, or a JSON 503 with Retry-After when a connection to
# it cannot be made within its 2 s; none hangs.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;
use PgTest;

$| = 1;

my $pg = PgTest->new(fsync_off => 1);
my $db = $pg->createdb('stall');
my $t = ChatTest->new(backend_args => ['--store', $pg->uri($db), '--threads', '2'],
	rate_limit => 'off');

# The postmaster and its children: every process of this server.
sub pg_pids {
	my ($pid) = split /\n/, ChatTest::read_file($pg->dir . '/data/postmaster.pid');
	return () unless $pid && $pid =~ /^\d+$/;
	return ($pid, ChatTest::children_of($pid));
}

my @frozen;
sub freeze { @frozen = pg_pids(); kill('STOP', @frozen) }
sub thaw   { kill('CONT', @frozen) if @frozen; @frozen = () }
END { thaw() }

is($t->post_room('r', 'before', 'c-1')->{status}, 200, 'a post to room r on PostgreSQL');
my ($m, $j) = $t->messages('room=r');
is(scalar @{ $j->{entries} // [] }, 2, '... and its two entries read back');

my @pids = pg_pids();
ok(@pids >= 2, sprintf('PostgreSQL runs as %d processes', scalar @pids));
freeze();

my @reads = map { $t->begin_request(path => '/chat/messages?room=r') } 1 .. 10;
sleep 0.3;
ok(!grep({ $t->request_ready($_) } @reads), 'PostgreSQL frozen: ten reads of the room wait');

my ($worst, $n, @bad) = (0, 0);
my $until = time + 3;
while (time < $until) {
	my $t0 = time;
	my $r = $t->post('{"message":"meanwhile"}', timeout => 5);
	my $took = time - $t0;
	$worst = $took if $took > $worst;
	push @bad, $r->{status} unless $r->{status} == 200;
	my $metrics = $t->request(path => '/chat/metrics', timeout => 5);
	push @bad, "metrics $metrics->{status}" unless $metrics->{status} == 200;
	$n++;
	sleep 0.1;
}
is_deeply(\@bad, [], "... meanwhile $n stateless posts and metrics reads, --threads 2: all 200");
cmp_ok($worst, '<', 1 * ChatTest::slack(), sprintf('... each within 1 s (slowest %.0f ms)', $worst * 1000));

thaw();
my @answers = map { $t->finish_request($_, 20) } @reads;
my @odd = grep { !($_->{status} == 200 || ($_->{status} == 503 && ($_->{headers}{'retry-after'} // '') eq '1'
	&& ($t->json($_) // {})->{error})) } @answers;
is(scalar @odd, 0, 'PostgreSQL let go: each of the ten reads is answered, 200 or a JSON 503 with Retry-After')
	or diag(join "\n---\n", map { $_->{raw} } @odd);
note(sprintf('%d of the reads answered 200', scalar grep { $_->{status} == 200 } @answers));
($m, $j) = $t->messages('room=r');
is(scalar @{ $j->{entries} // [] }, 2, '... and reads work again');
is($t->post_room('r', 'after', 'c-2')->{status}, 200, '... and posts are stored again');

$t->done;
done_testing;
