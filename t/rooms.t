#!/usr/bin/perl
# Rooms over nginx: two clients in one room, history after a reload, an
# idempotent retry, long-polls that are woken, time out or find no room
# left, kill -9 of the backend under a stream of posts, two backend
# processes on one database, --store none, and a store that is missing,
# unwritable, too new or locked.

use strict;
use warnings;
use utf8;

use Encode qw(encode_utf8);
use File::Path qw(make_path);
use JSON::PP;
use POSIX qw(WNOHANG _exit);
use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;

$| = 1;
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

my $json = JSON::PP->new->utf8->canonical;

sub texts { return [map { $_->{text} } @{ $_[0]{entries} // [] }] }
sub seqs  { return [map { $_->{seq} } @{ $_[0]{entries} // [] }] }

# Every entry of a room, oldest first, read 500 at a time.
sub all_entries {
	my ($t, $room) = @_;
	my ($after, @entries) = (0);
	while (1) {
		my (undef, $j) = $t->messages("room=$room&after=$after&limit=500");
		last unless $j && @{ $j->{entries} };
		push @entries, @{ $j->{entries} };
		$after = $j->{next};
	}
	return @entries;
}

# The client ids of @$acked that no user entry of @$entries has.
sub lost_of {
	my ($entries, $acked) = @_;
	my %stored = map { ($_->{client_id} // '') => 1 } grep { $_->{role} eq 'user' } @$entries;
	return grep { !$stored{$_} } @$acked;
}

my $t = ChatTest->new;

# libpq and what it pulls in are some 5 MiB of resident memory: a backend
# on SQLite does not load them.
unlike(ChatTest::read_file('/proc/' . $t->backend_pid . '/maps'), qr/libpq/,
	'a backend on SQLite has not loaded libpq');

## Two clients in one room, and the history after a reload

{
	my $r = $t->post_room('lobby', 'hello from A', 'a-1');
	is($r->{status}, 200, 'A posts in lobby: 200') or diag($r->{raw});
	my $a = $t->json($r);
	is($a->{message}, 'received hello from A', '... "message" is the reply, as without a room');
	is($a->{room}, 'lobby', '... "room" names the room');
	is_deeply(seqs($a), [1, 2], '... its entries are seq 1 and 2');
	is($a->{next}, 2, '... next is 2');
	like($a->{entries}[0]{time} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
		'... time is RFC 3339 UTC with milliseconds');

	my (undef, $b) = $t->messages('room=lobby&after=0');
	is_deeply(texts($b), ['hello from A', 'received hello from A'], 'B reads A\'s message');

	$r = $t->post_room('lobby', 'hi from B', 'b-1');
	is($t->json($r)->{next}, 4, 'B posts: next 4');
	my (undef, $a2) = $t->messages('room=lobby&after=2');
	is_deeply(texts($a2), ['hi from B', 'received hi from B'], 'A reads B\'s message after seq 2');
	is($a2->{next}, 4, '... and is told to ask after 4 next');

	my ($r3, $reload) = $t->messages('room=lobby');
	is($r3->{status}, 200, 'a reload (no after): 200');
	is_deeply(seqs($reload), [1, 2, 3, 4], '... the history, oldest first');
	is($reload->{next}, 4, '... next is the last seq');
	my (undef, $last2) = $t->messages('room=lobby&limit=2');
	is_deeply(seqs($last2), [3, 4], 'limit=2 without after: the newest two');
	my (undef, $none) = $t->messages('room=nobody-here');
	is_deeply($none, { room => 'nobody-here', entries => [], next => 0 },
		'an unknown room: an empty list, not an error');
}

## An idempotent retry

{
	my $first = $t->post_room('lobby', 'only once', 'a-2');
	my $again = $t->post_room('lobby', 'only once', 'a-2');
	is($again->{status}, 200, 'a retry with the same client id: 200');
	is($again->{body}, $first->{body}, '... with the first answer, byte for byte');
	my (undef, $j) = $t->messages('room=lobby&after=4');
	is_deeply(seqs($j), [5, 6], '... and nothing stored twice');
	my $form = $t->post('message=only+once&room=lobby&client_id=a-2',
		type => 'application/x-www-form-urlencoded');
	is($form->{body}, $first->{body}, 'a form retry gets the same answer');
	my $changed = $t->post_room('lobby', 'not the same', 'a-2');
	is($changed->{body}, $first->{body},
		'a retry whose message changed still gets the first answer');
	my $other = $t->post_room('elsewhere', 'only once', 'a-2');
	is_deeply(seqs($t->json($other)), [1, 2], 'the same client id in another room is a new post');

	my $text = "<img src=x onerror=alert(1)> 안녕 😀 \"q\" \\ \n\x{0}";
	$t->post_room('lobby', $text, 'a-3');
	my (undef, $k) = $t->messages('room=lobby&after=6');
	is($k->{entries}[0]{text}, $text, 'any text comes back exactly from the history');
	is($k->{entries}[0]{client_id}, 'a-3', '... with its client id');
	$t->post_room('lobby', 'anonymous');
	(undef, $k) = $t->messages('room=lobby&after=8');
	ok(exists $k->{entries}[0]{client_id} && !defined $k->{entries}[0]{client_id},
		'a post without client id has "client_id": null');
}

## Stateless posts stay stateless

{
	my $r = $t->post('{"message":"django"}');
	is($r->{body}, '{"message":"received django"}', 'a post without room: the stateless answer');
	my (undef, $j) = $t->messages('room=lobby&after=10');
	is_deeply($j->{entries}, [], '... and nothing is stored');
}

## Bad requests

$t->is_json_error($t->request(path => '/chat/messages'), 400, 'GET /chat/messages without a room');
$t->is_json_error($t->request(path => '/chat/messages?room=a%20b'), 400, 'a bad room name');
$t->is_json_error($t->request(path => '/chat/messages?room=a&after=-1'), 400, 'a negative after');
$t->is_json_error($t->request(path => '/chat/messages?room=a&limit=501'), 400, 'limit over 500');
$t->is_json_error($t->request(path => '/chat/messages?room=a&wait=31'), 400, 'wait over 30');
$t->is_json_error($t->request(path => '/chat/messages?room=a&room=b'), 400, 'room given twice');
$t->is_json_error($t->post_room('no spaces', 'x'), 400, 'POST with a bad room');
$t->is_json_error($t->post('{"message":"x","room":7}'), 400, 'POST with a number as room');
$t->is_json_error($t->post_room('lobby', 'x', ''), 400, 'POST with an empty client_id');
{
	my $r = $t->request(method => 'POST', path => '/chat/messages?room=a', body => '{}',
		headers => ['Content-Type' => 'application/json']);
	$t->is_json_error($r, 405, 'POST /chat/messages');
	is($r->{headers}{allow}, 'GET, HEAD', '... Allow: GET, HEAD');
	$t->is_json_error($t->request(method => 'PUT', path => '/chat/messages?room=a', body => 'x'), 405,
		'PUT /chat/messages');
	$r = $t->request(method => 'HEAD', path => '/chat/messages?room=lobby&wait=5');
	is($r->{status}, 200, 'HEAD /chat/messages: 200 at once, even with wait');
	is($r->{body}, '', '... without a body');
	my (undef, $j) = $t->messages('room=lobby&x=1&zzz');
	is($j->{room}, 'lobby', 'unknown parameters are ignored');
}

## Long-polls: woken by a post, or timed out

{
	my (undef, $now) = $t->messages('room=poll');
	my $after = $now->{next};
	my $s = $t->begin_request(path => "/chat/messages?room=poll&after=$after&wait=20");
	ok(!$t->request_ready($s, 0.5), 'a long-poll with nothing newer is held');
	my $t0 = time;
	my $p = $t->post_room('poll', 'wake up');
	is($p->{status}, 200, 'a post in its room: 200 while the poll is held');
	my $r = $t->finish_request($s, 25);
	my $took = time - $t0;
	is($r->{status}, 200, 'the held poll answers 200');
	is_deeply(texts($t->json($r)), ['wake up', 'received wake up'], '... with the new entries');
	ok($took < 5, sprintf('... soon after the post (%.0f ms)', $took * 1000));
	diag(sprintf('long-poll woken %.1f ms after the post was sent', $took * 1000));

	$t0 = time;
	my ($q, $j) = $t->messages('room=poll&after=2&wait=1', timeout => 15);
	my $waited = time - $t0;
	is($q->{status}, 200, 'a long-poll that times out: 200');
	is_deeply($j, { room => 'poll', entries => [], next => 2 }, '... with an empty list');
	ok($waited >= 0.9 && $waited < 10, sprintf('... after its wait (%.2f s)', $waited));
}

$t->done;

## Capacity exhausted: the answer is an immediate empty list, not an error

{
	my $c = ChatTest->new(backend_args => ['--max-waits', '2']);
	my @held = map { $c->begin_request(path => '/chat/messages?room=cap&after=0&wait=25') } 1 .. 2;
	ok(!$c->request_ready($held[0], 0.5) && !$c->request_ready($held[1], 0), 'two polls are held');
	my $t0 = time;
	my ($r, $j) = $c->messages('room=cap&after=0&wait=25');
	my $took = time - $t0;
	is($r->{status}, 200, 'a third poll over --max-waits 2: 200');
	is_deeply($j, { room => 'cap', entries => [], next => 0, busy => JSON::PP::true, retry_after => 1 },
		'... an empty list with busy and retry_after');
	ok($took < 5, sprintf('... at once (%.0f ms)', $took * 1000));
	my $p = $c->post_room('other', 'still flowing');
	is($p->{status}, 200, 'posts are served while the waits are held');
	$c->post_room('cap', 'for the held ones');
	for my $i (0, 1) {
		my $h = $c->finish_request($held[$i], 10);
		is_deeply(texts($c->json($h)), ['for the held ones', 'received for the held ones'],
			"held poll $i is woken with the post");
	}
	unlike($c->access_log, qr/ 50[24] /, 'no 502 or 504 anywhere');
	$c->done;
}

## --store none

{
	my $n = ChatTest->new(backend_args => ['--store', 'none']);
	my $r = $n->post_room('lobby', 'x');
	is($r->{status}, 404, '--store none: POST with a room is 404');
	is($r->{body}, '{"error":"History is off on this server."}', '... saying history is off');
	$r = $n->request(path => '/chat/messages?room=lobby');
	is($r->{status}, 404, '--store none: GET /chat/messages is 404');
	is($n->post('{"message":"x"}')->{body}, '{"message":"received x"}', '... stateless posts work');
	$n->done;
}

## Two backend processes on one database

{
	my $dir = ChatTest->new(no_backend => 1, no_nginx => 1)->dir;
	my $db = "$dir/shared.db";
	# Many posts from one address: without the shipped rate limit.
	my @side = map { ChatTest->new(backend_args => ['--store', "sqlite:$db"], rate_limit => 'off') }
		1 .. 2;

	my $s = $side[0]->begin_request(path => '/chat/messages?room=both&after=0&wait=20');
	ok(!$side[0]->request_ready($s, 0.5), 'a poll is held by backend 1');
	my $t0 = time;
	$side[1]->post_room('both', 'from backend 2');
	my $r = $side[0]->finish_request($s, 25);
	my $took = time - $t0;
	is_deeply(texts($side[0]->json($r)), ['from backend 2', 'received from backend 2'],
		'a post through backend 2 wakes the poll held by backend 1');
	ok($took < 5, sprintf('... soon (%.0f ms)', $took * 1000));
	diag(sprintf('cross-process wake-up: %.1f ms', $took * 1000));

	# Concurrent posts through both: one gapless sequence.
	my @kids;
	for my $k (0 .. 3) {
		my $pid = fork() // die;
		if ($pid == 0) {
			my $bad = 0;
			for my $i (1 .. 25) {
				my $r = $side[$k % 2]->post_room('both', "k$k n$i", "k$k-$i");
				$bad++ unless $r->{status} == 200;
			}
			_exit($bad ? 1 : 0);
		}
		push @kids, $pid;
	}
	my $failed = 0;
	for (@kids) { waitpid($_, 0); $failed++ if $? }
	is($failed, 0, '4 clients posted 25 times each through two backends, all 200');
	my (undef, $j) = $side[0]->messages('room=both&after=0&limit=500');
	is_deeply(seqs($j), [1 .. 202], 'the room holds seq 1..202, no gap, no repeat');
	my %user = map { $_->{text} => 1 } grep { $_->{role} eq 'user' } @{ $j->{entries} };
	is(scalar(keys %user), 101, 'every post is stored once');
	$_->done for @side;
}

## kill -9 during a stream of posts: every acknowledged post is kept

{
	my $k = ChatTest->new(rate_limit => 'off');    # a stream from one address
	my $dir = $k->dir;
	my @kids;
	for my $c (0 .. 3) {
		my $pid = fork() // die;
		if ($pid == 0) {
			open(my $ack, '>', "$dir/ack.$c") or _exit(2);
			$ack->autoflush(1);
			for my $i (1 .. 150) {
				my $r = $k->post_room('crash', "c$c m$i", "c$c-$i", timeout => 5);
				last unless $r->{status} == 200;
				print $ack "c$c-$i\n";
			}
			_exit(0);
		}
		push @kids, $pid;
	}
	# Let a few dozen posts be acknowledged, then kill the backend mid-stream.
	my $deadline = time + 20;
	my $acked = 0;
	while (time < $deadline) {
		$acked = 0;
		$acked += () = ChatTest::read_file("$dir/ack.$_") =~ /\n/g for 0 .. 3;
		last if $acked >= 80;
		sleep 0.02;
	}
	$k->signal_backend('KILL');
	waitpid($_, 0) for @kids;
	my @acked = map { split /\n/, ChatTest::read_file("$dir/ack.$_") } 0 .. 3;
	ok(@acked >= 80, scalar(@acked) . ' posts were acknowledged before and around the kill');

	$k->start_backend;
	my @entries = all_entries($k, 'crash');
	my @lost = lost_of(\@entries, \@acked);
	is_deeply(\@lost, [], 'after kill -9 and a restart, every acknowledged post is there');
	is_deeply([map { $_->{seq} } @entries], [1 .. scalar @entries], '... in one gapless sequence');
	my %count;
	$count{ $_->{client_id} }++ for grep { $_->{role} eq 'user' } @entries;
	is_deeply([grep { $count{$_} > 1 } keys %count], [], '... none twice');
	my $r = $k->post_room('crash', 'after the restart');
	is($k->json($r)->{next}, scalar(@entries) + 2, 'posting goes on from there');
	$k->done(backend_was_down => 1);
}

## SIGTERM during a stream of posts: the posts being stored when the stop
## comes are answered, and every acknowledged one is kept

{
	my $k = ChatTest->new(rate_limit => 'off');
	my $dir = $k->dir;
	my @kids;
	for my $c (0 .. 5) {
		my $pid = fork() // die;
		if ($pid == 0) {
			open(my $ack, '>', "$dir/ack.$c") or _exit(2);
			$ack->autoflush(1);
			for my $i (1 .. 400) {
				my $r = $k->post_room('term', "c$c m$i", "c$c-$i", timeout => 5);
				my $j = eval { decode_json($r->{body}) };
				my $kind = ref $j eq 'HASH' ? (exists $j->{entries} ? 'entries' : 'error') : 'none';
				print $ack "$r->{status} $kind c$c-$i\n";
				last unless $r->{status} == 200;
			}
			_exit(0);
		}
		push @kids, $pid;
	}
	my $deadline = time + 20;
	while (time < $deadline) {
		my $n = 0;
		$n += () = ChatTest::read_file("$dir/ack.$_") =~ /^200 /mg for 0 .. 5;
		last if $n >= 120;
		sleep 0.02;
	}
	my ($st, $took) = $k->stop_backend;
	waitpid($_, 0) for @kids;
	is($st, 0, 'SIGTERM during a stream of posts from 6 clients: exit 0');
	my @answers = map { split /\n/, ChatTest::read_file("$dir/ack.$_") } 0 .. 5;
	my @odd = grep { !/^200 entries / && !/^50[23] error / } @answers;
	is_deeply(\@odd, [], '... every answer a stored post or a JSON 502/503 once it stopped');
	like($k->backend_log, qr/exiting after \d+ requests/, '... having answered what it had taken');
	unlike($k->backend_log, qr/still in flight/, '... with nothing left in flight');
	my @acked = map { /^200 entries (\S+)/ ? $1 : () } @answers;

	$k->start_backend;
	my @entries = all_entries($k, 'term');
	my @lost = lost_of(\@entries, \@acked);
	ok(@acked >= 120, scalar(@acked) . ' posts were acknowledged before the stop');
	is_deeply(\@lost, [], '... and every one of them is stored');
	is_deeply([map { $_->{seq} } @entries], [1 .. scalar @entries], '... in one gapless sequence');
	$k->done(backend_was_down => 1);
}

## The store missing, unwritable, too new, or locked

{
	my $s = ChatTest->new(no_backend => 1, no_nginx => 1);
	my $dir = $s->dir;

	# Runs chat-fcgi until it exits (or 10 s); returns exit code and stderr.
	my $run = sub {
		my (@cmd) = @_;
		my $pid = fork() // die;
		if ($pid == 0) {
			open(STDIN, '<', '/dev/null');
			open(STDOUT, '>', "$dir/run.out");
			open(STDERR, '>', "$dir/run.err");
			exec(@cmd) or _exit(127);
		}
		my $deadline = time + 10;
		while (waitpid($pid, WNOHANG) != $pid) {
			if (time > $deadline) { kill 'KILL', $pid; waitpid($pid, 0); return (-1, 'timeout') }
			sleep 0.02;
		}
		return ($? >> 8, ChatTest::read_file("$dir/run.err"));
	};
	my @listen = ('--listen', "unix:$dir/s.sock");

	my ($code, $err) = $run->($s->bin, @listen, '--store', "sqlite:$dir/missing/chat.db");
	is($code, 1, 'a store in a missing directory: exit 1');
	like($err, qr/directory \S+missing of the store does not exist/, '... saying so') or diag($err);

	ChatTest::write_file("$dir/plain", "x");
	($code, $err) = $run->($s->bin, @listen, '--store', "sqlite:$dir/plain/chat.db");
	is($code, 1, 'a store under a plain file: exit 1');
	like($err, qr/is not a directory/, '... saying so') or diag($err);

	# A read-only directory. root may write anywhere, so as root the
	# backend runs as nobody (when nobody can reach the binary).
	make_path("$dir/ro");
	chmod(0555, "$dir/ro");
	my @as;
	if ($> == 0) {
		my $setpriv = ChatTest::which('setpriv', '/usr/bin', '/bin');
		my @nobody = ($setpriv // 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups');
		@as = @nobody if $setpriv && system(@nobody, 'test', '-x', $s->bin) == 0;
	}
	SKIP: {
		skip 'as root, and nobody cannot run the binary here', 2 if $> == 0 && !@as;
		chmod(0777, $dir);    # nobody needs to reach ro/ (and the socket dir)
		($code, $err) = $run->(@as, $s->bin, '--listen', "unix:$dir/ro.sock", '--store',
			"sqlite:$dir/ro/chat.db");
		is($code, 1, 'a store in a read-only directory: exit 1');
		like($err, qr/is not writable/, '... saying so') or diag($err);
	}

	my $sqlite3 = ChatTest::which('sqlite3', '/usr/bin');
	BAIL_OUT('sqlite3 (the Debian package sqlite3) is needed by this test') unless $sqlite3;
	system($sqlite3, "$dir/future.db", 'PRAGMA user_version = 99;') == 0 or die;
	($code, $err) = $run->($s->bin, @listen, '--store', "sqlite:$dir/future.db");
	is($code, 1, 'a database newer than the binary: exit 1');
	like($err, qr/schema version 99, newer than this chat-fcgi/, '... saying so') or diag($err);
	$s->stop;

	# Locked past the busy timeout while running: 503, a log line, then back.
	my $l = ChatTest->new;
	$l->post_room('locked', 'before');
	my $lock = $l->lock_store;
	my $r = $l->post_room('locked', 'during', undef, timeout => 15);
	$l->is_json_error($r, 503, 'a post while another process holds the write lock');
	is($r->{headers}{'retry-after'}, '1', '... with Retry-After: 1');
	my ($g, $j) = $l->messages('room=locked');
	is($g->{status}, 200, '... reads go on meanwhile');
	like($l->request(path => '/chat/metrics')->{body}, qr/^chat_fcgi_store_errors_total 1$/m,
		'... and /chat/metrics counts the store error');
	close($lock);
	$r = $l->post_room('locked', 'after');
	is($r->{status}, 200, 'once the lock is gone, posts work again');
	is_deeply(texts($l->json($r)), ['after', 'received after'], '... and are stored');
	$l->stop;
	like($l->backend_log, qr/503 POST \/chat\/ .*store: the database stayed locked/,
		'the backend logged the 503 and why');
	$l->done;
}

done_testing;
