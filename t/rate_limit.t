#!/usr/bin/perl
# nginx limits POST /chat/ per client address, as shipped in
# conf/rate-limit.conf (5 a second, bursts of 20): over it a JSON 429 with
# Retry-After; reading the page is never limited; the limit is per address;
# and the setting turns it off (CHAT_RATE_LIMIT=off in conf/render,
# rate_limit => 'off' here), as the benchmark and load tests do.

use strict;
use warnings;

use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(sleep);

use ChatTest;

$| = 1;

my $FLOOD = 60;    # well over the burst of 20, sent as fast as one client can

sub flood {
	my ($t) = @_;
	return map { $t->post(qq({"message":"flood $_"})) } 1 .. $FLOOD;
}

# A post from another loopback address (all of 127/8 is local on Linux).
sub post_from {
	my ($t, $addr) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
		LocalAddr => $addr, Proto => 'tcp', Timeout => 5) or die "connect from $addr: $!";
	my $body = '{"message":"elsewhere"}';
	print $s "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
		. "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
	local $/;
	my $raw = <$s>;
	close $s;
	return ChatTest::parse_response($raw // '');
}

{
	my $t = ChatTest->new;    # the limit as shipped
	my @r = flood($t);
	my @status = map { $_->{status} } @r;
	is_deeply([@status[0 .. 19]], [(200) x 20], 'the first 20 posts (the burst) pass')
		or diag("@status");
	my @limited = grep { $_->{status} == 429 } @r;
	cmp_ok(scalar @limited, '>=', $FLOOD - 20 - 15,
		"most posts past the burst are refused (${\ scalar @limited} of $FLOOD)");
	ok(!grep({ $_ != 200 && $_ != 429 } @status), 'every answer is 200 or 429') or diag("@status");

	my $r = $limited[0] // {};
	is($r->{status}, 429, 'over the limit: 429');
	is($r->{headers}{'content-type'}, 'application/json; charset=utf-8', '... as JSON');
	like($t->json($r)->{error} // '', qr/Too many messages/, '... with an error sentence');
	is($r->{headers}{'retry-after'}, '1', '... and Retry-After: 1');

	my @page = map { $t->request(path => '/chat/')->{status} } 1 .. 30;
	is_deeply(\@page, [(200) x 30], 'meanwhile the page itself is served: GET is not limited');
	# A long-poll may hold its answer: 2 s tell enough (no answer is not 429).
	my $poll = $t->request(path => '/chat/messages?after=0', timeout => 2)->{status};
	isnt($poll, 429, "nor is waiting for messages (GET /chat/messages: $poll)");
	is(post_from($t, '127.0.0.2')->{status}, 200,
		'another client address is not limited by this one');

	sleep 1.5;    # Retry-After said 1 s; at 5/s the bucket has room again
	is($t->post('{"message":"later"}')->{status}, 200, 'after Retry-After, posts pass again');
	like($t->error_log, qr/\[warn\].*limiting requests/, 'refusals are logged at warn');
	$t->done;
}

{
	my $t = ChatTest->new(rate_limit => 'off');
	my @status = map { $_->{status} } flood($t);
	is_deeply(\@status, [(200) x $FLOOD], "rate_limit => 'off': all $FLOOD posts pass")
		or diag("@status");
	$t->done;
}

{
	my $t = ChatTest->new(rate_limit => '1r/m');
	my @status = map { $_->{status} } flood($t);
	is(scalar(grep { $_ == 200 } @status), 21,
		"rate_limit => '1r/m': the burst and one more pass, then nothing") or diag("@status");
	$t->done;
}

done_testing;
