#!/usr/bin/perl
# Server-sent events over nginx: GET /chat/events streams a room's entries
# (history, then live posts, from this process and from another one sharing
# the database), resumes with Last-Event-ID or ?after= with no gap and no
# repeat, sends a heartbeat comment, answers 503 at once when --max-streams
# is reached, ends cleanly at shutdown; and POST /chat/ with Accept:
# text/event-stream streams its reply (delta events, then done), whole or
# cut, paced with --stream-pace, never leaving half a reply stored.

use strict;
use warnings;
use utf8;

use Encode qw(encode_utf8);
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;
use EventStream;

$| = 1;
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

my $json = JSON::PP->new->utf8->canonical;

sub entries {
	my ($t, $room) = @_;
	my $r = $t->request(path => "/chat/messages?room=$room&after=0&limit=500");
	return $t->json($r)->{entries};
}

# The entries an event list carries, and their ids.
sub ev_seqs { [map { $_->{id} } @_] }
sub ev_data { [map { $json->decode($_->{data}) } @_] }

sub streams_open { $_[0]->metric('chat_fcgi_streams') }

sub wait_until {
	my ($cond, $secs) = @_;
	my $deadline = time + $secs * ChatTest::slack();
	while (time < $deadline) {
		return 1 if $cond->();
		sleep 0.05;
	}
	return $cond->();
}

## History, then live entries

my $t = ChatTest->new(rate_limit => 'off');
$t->post_room('ev', "m$_", "c$_") for 1 .. 3;
my $stored = entries($t, 'ev');

{
	my $es = EventStream->open($t, '/chat/events?room=ev');
	is($es->status, 200, 'GET /chat/events: 200');
	like($es->header('content-type'), qr{^text/event-stream; charset=utf-8$},
		'... text/event-stream');
	is($es->header('cache-control'), 'no-store', '... not cached');
	ok(!defined $es->header('content-length'), '... open-ended: no Content-Length');
	ok(!defined $es->header('x-accel-buffering'), '... nginx consumed X-Accel-Buffering');
	my @ev = map { $es->next(5) } 1 .. 6;
	is($es->retry, 2000, '... retry: 2000 comes first');
	is_deeply(ev_seqs(@ev), [1 .. 6], '... the room\'s entries, ids 1..6 in order');
	is_deeply([map { $_->{event} } @ev], [('message') x 6], '... each an event: message');
	is_deeply(ev_data(@ev), $stored, '... each data: the entry as /chat/messages has it');

	my $t0 = time;
	$t->post_room('ev', 'live one');
	my @live = ($es->next(5), $es->next(5));
	my $took = time - $t0;
	is_deeply(ev_seqs(@live), [7, 8], 'a post reaches the open stream: ids 7, 8');
	is_deeply([map { $_->{text} } @{ ev_data(@live) }], ['live one', 'received live one'],
		'... with the message and its reply');
	ok($took < 1 * ChatTest::slack(), sprintf('... at once (%.0f ms)', $took * 1000));
	$t->post_room('other', 'elsewhere');
	ok(!defined $es->next(0.5), 'a post to another room does not reach it');
	is(streams_open($t), 1, 'the metrics count one open stream');
	$es->close;
	ok(wait_until(sub { (streams_open($t) // -1) == 0 }, 5),
		'a browser that goes away frees its stream');
}

## Many streams on one room: each gets its own continuation

{
	$t->post_room('fan', "f$_") for 1 .. 2;    # entries 1..4
	# 20 at the newest entry, and 5 further back: answers computed once for
	# a cursor are shared by the streams at that cursor only.
	my @new = map { EventStream->open($t, '/chat/events?room=fan&after=4') } 1 .. 20;
	my @old = map { EventStream->open($t, "/chat/events?room=fan&after=$_") } 0 .. 4;
	$_->drain(0.3) for @new;
	my @old_first = map { [map { $_->{id} } $_->drain(0.3)] } @old;
	is_deeply(\@old_first, [[1 .. 4], [2 .. 4], [3, 4], [4], []],
		'5 streams opened at cursors 0..4 get what follows each');
	$t->post_room('fan', 'to all');
	my @got = map { [map { $_->{id} } ($_->next(5), $_->next(5))] } @new, @old;
	is_deeply(\@got, [([5, 6]) x 25], 'a post reaches all 25 streams, once each: ids 5, 6');
	$t->post_room('fan', 'and again');
	@got = map { [map { $_->{id} } ($_->next(5), $_->next(5))] } @new, @old;
	is_deeply(\@got, [([7, 8]) x 25], '... and the next one too');
	$_->close for @new, @old;
}

## Resuming: Last-Event-ID and ?after=, no gap, no repeat

{
	my $es = EventStream->open($t, '/chat/events?room=ev', ['Last-Event-ID' => 4]);
	is_deeply(ev_seqs($es->drain(1)), [5 .. 8], 'Last-Event-ID: 4 resumes with 5..8');
	$es->close;
	$es = EventStream->open($t, '/chat/events?room=ev&after=6');
	is_deeply(ev_seqs($es->drain(1)), [7, 8], '?after=6 gives 7, 8');
	$es->close;
	$es = EventStream->open($t, '/chat/events?room=ev&after=6', ['Last-Event-ID' => 2]);
	is_deeply(ev_seqs($es->drain(1)), [3 .. 8],
		'Last-Event-ID (what a reconnecting browser sends) wins over after');
	$es->close;
	$es = EventStream->open($t, '/chat/events?room=ev&after=8');
	is_deeply(ev_seqs($es->drain(0.5)), [], 'after the newest: nothing yet');
	$t->post_room('ev', 'next');
	is_deeply(ev_seqs($es->drain(1)), [9, 10], '... then only the new entries');
	$es->close;
	$es = EventStream->open($t, '/chat/events?room=nobody-here');
	is($es->status, 200, 'an unknown room: 200, an empty stream');
	is_deeply(ev_seqs($es->drain(0.5)), [], '... with no event');
	$es->close;
}

## A backlog longer than one batch comes whole, in order

{
	$t->post_room('big', "b$_") for 1 .. 300;
	my $es = EventStream->open($t, '/chat/events?room=big&after=0');
	my @ev = $es->drain(3);
	is_deeply(ev_seqs(@ev), [1 .. 600], '600 entries after=0: all of them, in order');
	$es->close;
	$es = EventStream->open($t, '/chat/events?room=big');
	@ev = $es->drain(2);
	is_deeply(ev_seqs(@ev), [501 .. 600], 'without a cursor: the newest 100, as /chat/messages');
	$es->close;
}

## Bad requests: JSON errors, not streams

{
	my %bad = (
		'/chat/events'                => 'no room',
		'/chat/events?room=a%20b'     => 'a bad room name',
		'/chat/events?room=a&after=x' => 'a bad after',
	);
	for my $path (sort keys %bad) {
		my $r = $t->request(path => $path);
		is($r->{status}, 400, "$bad{$path}: 400");
		ok(exists $t->json($r)->{error}, '... with a JSON error');
	}
	my $r = $t->request(path => '/chat/events?room=ev', headers => ['Last-Event-ID' => 'abc']);
	is($r->{status}, 400, 'a bad Last-Event-ID: 400');
	like($t->json($r)->{error}, qr/Last-Event-ID/, '... saying so');
	$r = $t->request(method => 'POST', path => '/chat/events?room=ev', body => 'x',
		headers => ['Content-Type' => 'text/plain']);
	is($r->{status}, 405, 'POST /chat/events: 405');
	is($r->{headers}{allow}, 'GET, HEAD', '... Allow: GET, HEAD');
	$r = $t->request(method => 'HEAD', path => '/chat/events?room=ev', timeout => 3);
	is($r->{status}, 200, 'HEAD /chat/events: 200');
	like($r->{headers}{'content-type'}, qr{^text/event-stream}, '... with the stream\'s type');
}

## Streamed replies

{
	my $stateless = $t->post(encode_utf8('{"message":"héllo wörld, stream me"}'));
	my $es = EventStream->open($t, '/chat/', ['Content-Type' => 'application/json'],
		method => 'POST', body => encode_utf8('{"message":"héllo wörld, stream me"}'));
	is($es->status, 200, 'POST with Accept: text/event-stream: 200');
	like($es->header('content-type'), qr{^text/event-stream}, '... a stream');
	my @ev = $es->drain(3);
	my @delta = grep { $_->{event} eq 'delta' } @ev;
	ok(@delta > 1, scalar(@delta) . ' delta events');
	is(join('', map { $json->decode($_->{data})->{text} } @delta),
		'received héllo wörld, stream me',
		'... which spell out the reply');
	is($ev[-1]{event}, 'done', 'the last event is done');
	is($ev[-1]{data}, $stateless->{body}, '... carrying exactly the non-streamed answer');
	ok($es->ended || $es->eof, 'the response then ends');
	$es->close;

	my $long = join(' ', map { "wörd$_" } 1 .. 3000) . ' ' . ('€' x 5000);
	$es = EventStream->open($t, '/chat/', ['Content-Type' => 'application/json'],
		method => 'POST', body => $json->encode({message => $long}));
	@ev = $es->drain(5);
	@delta = grep { $_->{event} eq 'delta' } @ev;
	is(join('', map { $json->decode($_->{data})->{text} } @delta), "received $long",
		'a 40 KiB reply with multibyte text: the deltas spell it exactly');
	ok(!(grep { length(encode_utf8($json->decode($_->{data})->{text})) > 48 } @delta),
		'... in pieces of at most 48 bytes');
	$es->close;

	my $r = $t->post('{"message":1}', headers => [Accept => 'text/event-stream']);
	is($r->{status}, 400, 'a bad post asking for a stream: still a JSON 400');
	like($r->{headers}{'content-type'}, qr{^application/json}, '... as JSON');

	# With a room: the entries are stored before the first delta.
	$es = EventStream->open($t, '/chat/', ['Content-Type' => 'application/json'],
		method => 'POST', body => $json->encode({message => 'streamed', room => 'sr',
			client_id => 'sr-1'}));
	@ev = $es->drain(3);
	my $done = $json->decode($ev[-1]{data});
	is_deeply([map { $_->{text} } @{ $done->{entries} }], ['streamed', 'received streamed'],
		'a streamed post with a room: done carries both stored entries');
	is_deeply(entries($t, 'sr'), $done->{entries}, '... which the room holds');
	$es->close;
}

$t->done;

## Paced replies, and a stream cut half-way

{
	my $p = ChatTest->new(backend_args => ['--stream-pace', '150']);
	my $es = EventStream->open($p, '/chat/', ['Content-Type' => 'application/json'],
		method => 'POST',
		body => $json->encode({message => 'one two three four', room => 'cut',
			client_id => 'cut-1'}));
	my $t0 = time;
	my $first = $es->next(5);
	my $first_at = time - $t0;
	is($first->{event}, 'delta', '--stream-pace: the first delta comes at once');
	my $second = $es->next(5);
	my $gap = time - $t0 - $first_at;
	ok($gap >= 0.1, sprintf('... the next one %.0f ms later', $gap * 1000));
	$es->close;    # cut half-way
	is_deeply([map { $_->{text} } @{ entries($p, 'cut') }],
		['one two three four', 'received one two three four'],
		'a stream cut half-way: both entries are stored whole');
	ok(wait_until(sub { (streams_open($p) // -1) == 0 }, 5), '... and nothing is left open');

	$es = EventStream->open($p, '/chat/', ['Content-Type' => 'application/json'],
		method => 'POST',
		body => $json->encode({message => 'one two three four', room => 'cut',
			client_id => 'cut-1'}));
	my @ev = $es->drain(5);
	my @delta = grep { $_->{event} eq 'delta' } @ev;
	is(join('', map { $json->decode($_->{data})->{text} } @delta),
		'received one two three four', 'the retry with the same client id streams the whole reply');
	is_deeply([map { $_->{seq} } @{ $json->decode($ev[-1]{data})->{entries} }], [1, 2],
		'... of the entries stored the first time');
	is(scalar @{ entries($p, 'cut') }, 2, '... and stores nothing new');
	$p->done;
}

## Heartbeat

{
	my $h = ChatTest->new;
	my $es = EventStream->open($h, '/chat/events?room=quiet');
	my $t0 = time;
	$es->next(0.5) until @{ $es->comments } || time - $t0 > 20;
	my $took = time - $t0;
	is_deeply($es->comments, ['keep-alive'], sprintf('a quiet stream gets a comment (after %.1f s)',
		$took));
	ok($took > 13 && $took < 18, '... every 15 s');
	$h->post_room('quiet', 'after the heartbeat');
	is($es->next(5)->{id}, 1, '... and still delivers');
	$es->close;
	$h->done;
}

## Capacity: past --max-streams, a 503 at once

{
	my $c = ChatTest->new(backend_args => ['--max-streams', '2']);
	my @open = map { EventStream->open($c, '/chat/events?room=cap') } 1 .. 2;
	is_deeply([map { $_->status } @open], [200, 200], '--max-streams 2: two streams open');
	my $t0 = time;
	my $r = $c->request(path => '/chat/events?room=cap', headers => [Accept => 'text/event-stream'],
		timeout => 5);
	my $took = time - $t0;
	is($r->{status}, 503, 'the third: 503');
	like($c->json($r)->{error}, qr{poll /chat/messages}, '... a JSON error saying to poll');
	is($r->{headers}{'retry-after'}, '1', '... with Retry-After: 1');
	ok($took < 1 * ChatTest::slack(), sprintf('... at once (%.0f ms)', $took * 1000));
	my ($m) = $c->request(path => '/chat/messages?room=cap&wait=1&after=0');
	is($m->{status}, 200, 'long-polling still works meanwhile');
	$_->close for @open;
	ok(wait_until(sub { (streams_open($c) // -1) == 0 }, 5), 'closed streams are counted off');
	my $es = EventStream->open($c, '/chat/events?room=cap');
	is($es->status, 200, '... and a new stream opens again');
	$es->close;
	$c->done;
}

## Shutdown ends streams cleanly

{
	my $s = ChatTest->new;
	my @es = map { EventStream->open($s, "/chat/events?room=bye$_") } 1 .. 3;
	$_->drain(0.2) for @es;
	my $t0 = time;
	my ($status) = $s->signal_backend('TERM', 10);
	my $took = time - $t0;
	is($status, 0, 'SIGTERM with 3 open streams: exit 0');
	ok($took < 3 * ChatTest::slack(), sprintf('... at once (%.1f s)', $took));
	$_->drain(2) for @es;
	is_deeply([map { $_->ended } @es], [1, 1, 1],
		'... each stream ended with the last chunk (a clean end; EventSource reconnects)');
	$s->done;
}

## A post through another process sharing the database

{
	my $dir = ChatTest->new(no_backend => 1, no_nginx => 1)->dir;
	my $db = "$dir/shared.db";
	my @side = map { ChatTest->new(backend_args => ['--store', "sqlite:$db"]) } 1 .. 2;
	my $es = EventStream->open($side[0], '/chat/events?room=both&after=0');
	$es->drain(0.3);
	my $t0 = time;
	$side[1]->post_room('both', 'from the other backend');
	my @ev = ($es->next(5), $es->next(5));
	my $took = time - $t0;
	is_deeply(ev_seqs(@ev), [1, 2], 'a post through backend 2 reaches a stream on backend 1');
	ok($took < 0.5 * ChatTest::slack(), sprintf('... within 500 ms (%.0f ms)', $took * 1000));
	$es->close;
	$_->done for @side;
}

## --store none

{
	my $n = ChatTest->new(backend_args => ['--store', 'none']);
	my $r = $n->request(path => '/chat/events?room=x');
	is($r->{status}, 404, '--store none: 404');
	is($r->{body}, '{"error":"History is off on this server."}', '... history is off');
	my $es = EventStream->open($n, '/chat/', ['Content-Type' => 'application/json'],
		method => 'POST', body => '{"message":"still streams"}');
	my @ev = $es->drain(2);
	is($ev[-1]{data}, '{"message":"received still streams"}',
		'... a streamed stateless reply still works');
	$n->done;
}

done_testing;
