#!/usr/bin/perl
# --max-posts bounds the room posts waiting for the store at once. With the
# store's write lock held by another process, the first N wait for it; the
# ones after them get 503 at once, a JSON error and Retry-After: 1 (what
# the page's backoff and any client understands), and are counted in
# chat_fcgi_posts_refused_total. So a stalled disk or a locked database
# costs at most N posts' memory, and nobody waits without being told.
# Once the lock is gone the waiting posts are committed and answered 200,
# and new posts are stored again.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;

$| = 1;

sub room_post {
	my ($t, $text) = @_;
	return $t->begin_request(method => 'POST', path => '/chat/',
		body => qq({"message":"$text","room":"bound","client_id":"$text"}),
		headers => ['Content-Type' => 'application/json']);
}

my $max = 4;
my $t = ChatTest->new(rate_limit => 'off', backend_args => ['--max-posts', $max]);
is($t->post_room('bound', 'before', 'before')->{status}, 200, 'a room post before the lock is stored');

# The store gives a locked database 2 s before it answers 503 (t/pollers.t):
# everything up to the release happens well within that.
my $lock = $t->lock_store;
my $locked_at = time;
my @waiting = map { room_post($t, "wait$_") } 1 .. $max;
my $storing;
my $deadline = time + 1;
sleep 0.02 until ($storing = $t->metric('chat_fcgi_posts_storing') // -1) >= $max || time > $deadline;
is($storing, $max, "--max-posts $max, the store locked by another process: $max room posts wait for it");

# Four more at once: each must be refused at once, so one shared second is
# enough for all of them.
my @refused = map { room_post($t, "over$_") } 1 .. 4;
my $t0 = time;
my @r = map { $t->finish_request($_, $t0 + 1 - time) } @refused;
my $took = time - $t0;
for my $i (0 .. $#r) {
	my $name = sprintf('the %s room post', (qw(5th 6th 7th 8th))[$i]);
	$t->is_json_error($r[$i], 503, $name);
	is($r[$i]{headers}{'retry-after'}, '1', "$name: Retry-After: 1");
}
cmp_ok($took, '<', 0.5 * ChatTest::slack(), sprintf('... all four refused at once (%.0f ms)', $took * 1000));
is($t->metric('chat_fcgi_posts_refused_total'), 4, '... and counted in chat_fcgi_posts_refused_total');
is($t->metric('chat_fcgi_posts_storing'), $max, "... while the $max first ones still wait");

my $held = time - $locked_at;
close($lock);
note(sprintf('the lock was held %.2f s', $held));
my @answers = map { $t->finish_request($_, 10) } @waiting;
is_deeply([map { $_->{status} } @answers], [(200) x $max], "the lock released: the $max waiting posts are answered 200");
is_deeply([map { $t->json($_)->{entries}[0]{text} // '' } @answers], [map { "wait$_" } 1 .. $max],
	'... each with its own stored entry');
is($t->post_room('bound', 'after', 'after')->{status}, 200, 'a new room post is stored again');

my (undef, $j) = $t->messages('room=bound&after=0');
is_deeply([map { $_->{text} } grep { $_->{role} eq 'user' } @{ $j->{entries} // [] }],
	['before', (map { "wait$_" } 1 .. $max), 'after'], 'the room holds those posts, and none of the refused ones');
is($t->metric('chat_fcgi_posts_refused_total'), 4, 'the refusals are still 4');
$t->done;

done_testing;
