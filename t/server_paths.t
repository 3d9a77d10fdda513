#!/usr/bin/perl
# The server's paths that nginx seldom takes, straight to the socket: a
# long-poll and an event stream aborted by FCGI_ABORT_REQUEST or given up by
# their peer, two whole requests in one write (the second waits in the
# connection until the first is answered), a stream whose room changes while
# its last part is still unread. After each, the gauges come back down:
# held long-polls, open streams and requests in flight (only the metrics
# request itself), so no path forgets what it counted.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;
use FastCGI;

$| = 1;

my $t = ChatTest->new(no_nginx => 1);

sub connect_backend { FastCGI::connect_unix($t->socket) // die "connect: $!" }

# The metrics, over a connection of their own.
sub metrics {
	my $s = connect_backend();
	print $s FastCGI::metrics_request();
	my $r = FastCGI::read_response($s, 5);
	close $s;
	my %m = $r->{body} =~ /^(chat_fcgi_\w+) (\S+)$/mg;
	return \%m;
}

# Waits until the gauges are back: nothing held, no stream, only the
# metrics request in flight.
sub settled {
	my ($name) = @_;
	my $m;
	my $deadline = time + 5 * ChatTest::slack();
	while (time < $deadline) {
		$m = metrics();
		last if $m->{chat_fcgi_held_waits} == 0 && $m->{chat_fcgi_streams} == 0
			&& $m->{chat_fcgi_requests_in_flight} == 1;
		sleep 0.05;
	}
	is(join(' ', map { $m->{"chat_fcgi_$_"} } qw(held_waits streams requests_in_flight)), '0 0 1',
		"$name: nothing held, no stream, only the metrics request in flight");
}

# A post to a room, over a connection of its own: its status.
sub post_room {
	my ($room, $text) = @_;
	my $s = connect_backend();
	print $s FastCGI::request(FastCGI::chat_params(), qq({"message":"$text","room":"$room"}));
	my $r = FastCGI::read_response($s, 5);
	close $s;
	return $r->{status};
}

sub get_params {
	my ($uri, $query, %extra) = @_;
	return {REQUEST_METHOD => 'GET', REQUEST_URI => "$uri?$query", QUERY_STRING => $query, %extra};
}

sub types { join ' ', map { $_->[0] } @{ $_[0]{records} } }

# The bodies of the next $n answers on $s, in the order they come.
sub bodies {
	my ($s, $n) = @_;
	my @bodies;
	my $stdout = '';
	my $deadline = time + 5 * ChatTest::slack();
	while (@bodies < $n && time < $deadline) {
		my $got = FastCGI::read_records($s, 0.3);
		for my $r (@{ $got->{records} }) {
			$stdout .= $r->[2] if $r->[0] == FastCGI::FCGI_STDOUT;
			if ($r->[0] == FastCGI::END_REQUEST) {
				push @bodies, (split /\r\n\r\n/, $stdout, 2)[1] // '';
				$stdout = '';
			}
		}
		last if $got->{eof};
	}
	return @bodies;
}

is(post_room('r', 'first'), 200, 'a post to room r');

## A long-poll aborted, and one given up

{
	my $s = connect_backend();
	print $s FastCGI::request(get_params('/chat/messages', 'room=r&after=2&wait=20'), '', keep => 1);
	sleep 0.3;
	is(metrics()->{chat_fcgi_held_waits}, 1, 'a long-poll on room r is held');
	print $s FastCGI::record(FastCGI::ABORT_REQUEST, 1, '');
	my $got = FastCGI::read_records($s, 3, until => sub { grep { $_->[0] == FastCGI::END_REQUEST } @_ });
	like(types($got), qr/${\ FastCGI::END_REQUEST}$/, '... FCGI_ABORT_REQUEST ends it with FCGI_END_REQUEST');
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"after"}', keep => 1);
	is(FastCGI::read_response($s, 5)->{body}, '{"message":"received after"}',
		'... and the connection serves the next request');
	close $s;
	settled('a long-poll aborted');

	$s = connect_backend();
	print $s FastCGI::request(get_params('/chat/messages', 'room=r&after=2&wait=20'), '', keep => 1);
	sleep 0.3;
	close $s;
	settled('a long-poll whose peer went away');
}

## An event stream aborted, and one given up

{
	my $s = connect_backend();
	print $s FastCGI::request(get_params('/chat/events', 'room=r&after=0', HTTP_ACCEPT => 'text/event-stream'),
		'', keep => 1);
	my $got = FastCGI::read_records($s, 3, until => sub {
		(join '', map { $_->[2] } grep { $_->[0] == FastCGI::FCGI_STDOUT } @_) =~ /received first/ });
	like(join('', map { $_->[2] } @{ $got->{records} }), qr/id: 2\nevent: message/,
		'an event stream of room r sends its entries');
	is(metrics()->{chat_fcgi_streams}, 1, '... and is counted open');
	print $s FastCGI::record(FastCGI::ABORT_REQUEST, 1, '');
	$got = FastCGI::read_records($s, 3, until => sub { grep { $_->[0] == FastCGI::END_REQUEST } @_ });
	like(types($got), qr/${\ FastCGI::FCGI_STDOUT} ${\ FastCGI::END_REQUEST}$/,
		'... FCGI_ABORT_REQUEST ends it: the end of its output, then FCGI_END_REQUEST');
	close $s;
	settled('an event stream aborted');

	$s = connect_backend();
	print $s FastCGI::request(get_params('/chat/events', 'room=r', HTTP_ACCEPT => 'text/event-stream'), '',
		keep => 1);
	FastCGI::read_records($s, 1);
	close $s;
	settled('an event stream whose peer went away');
}

## Two requests in one write

{
	my $s = connect_backend();
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"one"}', keep => 1)
		. FastCGI::request(FastCGI::chat_params(), '{"message":"two"}', keep => 1);
	is(join(' ', bodies($s, 2)), '{"message":"received one"} {"message":"received two"}',
		'two requests in one write: both answered, in order');
	# A long-poll with a post written behind it: one request at a time
	# (FCGI_MPXS_CONNS 0), so the second FCGI_BEGIN_REQUEST, which comes
	# while the poll is held, is refused and the connection closed.
	print $s FastCGI::request(get_params('/chat/messages', 'room=r&after=2&wait=20'), '', keep => 1)
		. FastCGI::request(FastCGI::chat_params(), '{"message":"three"}', keep => 1);
	my $got = FastCGI::read_records($s, 3);
	my ($end) = grep { $_->[0] == FastCGI::END_REQUEST } @{ $got->{records} };
	is($end && unpack('x4C', $end->[2]), FastCGI::CANT_MPX_CONN,
		'a request written behind a held long-poll: FCGI_CANT_MPX_CONN');
	ok($got->{eof}, '... and the connection is closed');
	close $s;
	settled('two requests in one write');
}

## A stream's room changes while its last part is unread

{
	# The stream's reader reads nothing while room s gets posts: the
	# backend marks the stream and makes its next part from its cursor once
	# the last one is written. Every entry arrives once, in order.
	is(post_room('s', 'x' x 30000), 200, 'a post of 30 KB to room s');
	my $s = connect_backend();
	print $s FastCGI::request(get_params('/chat/events', 'room=s&after=0', HTTP_ACCEPT => 'text/event-stream'),
		'', keep => 1);
	sleep 0.3;
	post_room('s', "more $_") for 1 .. 20;
	my $text = '';
	my $deadline = time + 10;
	while (time < $deadline) {
		my $got = FastCGI::read_records($s, 0.3);
		$text .= join '', map { $_->[2] } grep { $_->[0] == FastCGI::FCGI_STDOUT } @{ $got->{records} };
		last if $text =~ /received more 20/;
	}
	my @ids = $text =~ /^id: (\d+)$/mg;
	is_deeply(\@ids, [1 .. 42], 'a stream that read nothing while 20 posts came: every entry once, in order');
	close $s;
	settled('a stream written to while its room changed');
}

$t->done;
done_testing;
