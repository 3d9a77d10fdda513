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
	my $read = $t->request(path => '/chat/messages?room=lobby', timeout => 5)->{status};
	is($read, 200, 'nor are reads of a room (GET /chat/messages: 200)');
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

# IPv6 clients are counted by the /64 they are in: a host may take any
# address of its /64. The client's address comes from X-Forwarded-For here,
# as behind a local proxy (real_ip, README's Security section).
{
	my $t = ChatTest->new(rate_limit => '1r/m',
		server_extra => "set_real_ip_from 127.0.0.1;\nreal_ip_header X-Forwarded-For;\n");
	my $from = sub {
		my ($addr, $n) = @_;
		return map { $t->post(qq({"message":"v6 $_"}), headers => ['X-Forwarded-For' => $addr])->{status} }
			1 .. $n;
	};
	my @first = $from->('2001:db8:0:7::1', 21);
	is(scalar(grep { $_ == 200 } @first), 21, 'an IPv6 client: the burst and one more pass');
	is(($from->('2001:db8:0:7::beef', 1))[0], 429, '... another address of the same /64: 429, counted with it');
	is(($from->('2001:db8:0:8::1', 1))[0], 200, '... an address of the next /64: 200');
	is(($from->('192.0.2.7', 1))[0], 200, '... an IPv4 client: 200');
	$t->done;
}

# Long-polls and event streams held at once per client: 64, then a JSON 429
# with Retry-After, while another client is not held back.
{
	my $t = ChatTest->new(rate_limit => '50r/s');
	my @held = map { $t->begin_request(path => "/chat/messages?room=w&after=0&wait=20") } 1 .. 64;
	sleep 0.5;
	my $r = $t->request(path => '/chat/messages?room=w&after=0&wait=20', timeout => 5);
	is($r->{status}, 429, '64 long-polls held by one client: the 65th gets 429');
	like($t->json($r)->{error} // '', qr/Too many waits/, '... with its own error sentence');
	is($r->{headers}{'retry-after'}, '1', '... and Retry-After: 1');
	my $es = $t->request(path => '/chat/events?room=w', headers => [Accept => 'text/event-stream'],
		timeout => 5);
	is($es->{status}, 429, '... an event stream counts with them: 429');
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
		LocalAddr => '127.0.0.2', Proto => 'tcp', Timeout => 5) or die "connect: $!";
	print $s "GET /chat/messages?room=w&after=0&wait=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
	local $/;
	my $other = ChatTest::parse_response(<$s> // '');
	is($other->{status}, 200, '... another client\'s long-poll is held and answered');
	close $_ for @held;
	sleep 0.5;
	is($t->request(path => '/chat/messages?room=w&after=0&wait=1', timeout => 5)->{status}, 200,
		'... and once they are closed, the first client may wait again');
	like($t->error_log, qr/\[warn\].*limiting connections/, 'refusals are logged at warn');
	$t->done;
}

{
	my $t = ChatTest->new(rate_limit => 'off');
	my @held = map { $t->begin_request(path => "/chat/messages?room=w&after=0&wait=20") } 1 .. 70;
	sleep 0.5;
	my $r = $t->request(path => '/chat/messages?room=w&after=0&wait=1', timeout => 5);
	is($r->{status}, 200, "rate_limit => 'off': 70 long-polls held by one client, and one more is answered");
	close $_ for @held;
	$t->done;
}

done_testing;
