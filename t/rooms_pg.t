#!/usr/bin/perl
# Rooms over nginx on PostgreSQL (--store postgresql://...), the backend
# confined as usual: the room API, long-polls woken, PostgreSQL down (JSON
# 503 at once, health 503 with the reason, then service back by itself),
# and a PostgreSQL crash under a stream of posts: every answered post is
# still there afterwards.

use strict;
use warnings;

use JSON::PP;
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;
use PgTest;

$| = 1;
my $json = JSON::PP->new->utf8->canonical;

sub seqs { return [map { $_->{seq} } @{ $_[0]{entries} // [] }] }

my $pg = PgTest->new;
my $db = $pg->createdb('rooms');
my $t = ChatTest->new(backend_args => ['--store', $pg->uri($db)]);
like($t->backend_log, qr/store postgresql, sandbox /,
	'the backend starts on PostgreSQL and does not log the URI');
like(ChatTest::read_file('/proc/' . $t->backend_pid . '/maps'), qr/libpq/,
	'... having loaded libpq for it');

## The room API

{
	my $r = $t->post_room('lobby', 'hello', 'a-1');
	is($r->{status}, 200, 'a post in lobby: 200') or diag($r->{raw});
	is_deeply(seqs($t->json($r)), [1, 2], '... entries seq 1 and 2');
	$r = $t->post_room('lobby', 'hello again', 'a-1');
	is($t->json($r)->{message}, 'received hello', 'a retry with the same client id: the first answer');
	is_deeply(seqs($t->json($r)), [1, 2], '... and the same entries');
	$t->post_room('lobby', 'two', undef);
	my ($m, $j) = $t->messages('room=lobby&after=0');
	is($m->{status}, 200, 'GET /chat/messages: 200');
	is_deeply([map { $_->{text} } @{ $j->{entries} }],
		['hello', 'received hello', 'two', 'received two'], '... the history, once each');
	is($j->{next}, 4, '... next 4');
	is($pg->psql($db, "SELECT count(*) FROM entries WHERE room = 'lobby'"), 4,
		'the entries are in PostgreSQL');

	my $s = $t->begin_request(path => '/chat/messages?room=lobby&after=4&wait=20');
	sleep 0.3;
	$t->post_room('lobby', 'wake up', undef);
	my $w = $t->finish_request($s, 5);
	is_deeply(seqs($t->json($w)), [5, 6], 'a held long-poll is woken by a post');

	# A post made in the database by another node: only NOTIFY says so.
	$s = $t->begin_request(path => '/chat/messages?room=lobby&after=6&wait=20');
	sleep 0.3;
	my $t0 = time;
	$pg->psql($db, "BEGIN; UPDATE rooms SET last_seq = 8 WHERE name = 'lobby';"
		. " INSERT INTO entries VALUES ('lobby', 7, 0, 'elsewhere', 0, NULL),"
		. " ('lobby', 8, 1, 'received elsewhere', 0, NULL);"
		. " SELECT pg_notify('chat_fcgi', 'lobby'); COMMIT;");
	$w = $t->finish_request($s, 5);
	my $took = time - $t0;
	is_deeply(seqs($t->json($w)), [7, 8], 'a post on another node wakes the long-poll (NOTIFY)');
	ok($took < 0.5, sprintf('... within 500 ms (%.0f ms)', $took * 1000));

	my $h = $t->request(path => '/chat/health');
	is($h->{status}, 200, 'health: 200 while PostgreSQL is up');
}

## PostgreSQL down, then back

{
	$pg->stop('fast');
	my $t0 = time;
	my $r = $t->post_room('lobby', 'while down', 'down-1', timeout => 15);
	my $took = time - $t0;
	is($r->{status}, 503, 'a post while PostgreSQL is down: 503') or diag($r->{raw});
	ok(ref $t->json($r) eq 'HASH' && $t->json($r)->{error}, '... a JSON error');
	ok($took < 3, sprintf('... at once (%.2f s)', $took));
	my ($m) = $t->messages('room=lobby&after=0', timeout => 15);
	is($m->{status}, 503, 'a read while down: 503');
	my $h = $t->request(path => '/chat/health', timeout => 15);
	is($h->{status}, 503, 'health while down: 503');
	like($t->json($h)->{error} // '', qr/PostgreSQL/, '... naming PostgreSQL: '
		. ($t->json($h)->{error} // ''));

	$pg->start;
	my $back;
	my $deadline = time + 10;
	while (time < $deadline) {
		$r = $t->post_room('lobby', 'after', 'down-1', timeout => 5);
		last if ($back = $r->{status} == 200);
		sleep 0.2;
	}
	ok($back, 'once PostgreSQL is back, posts work again, without restarting chat-fcgi');
	is($t->request(path => '/chat/health')->{status}, 200, '... and health is 200');
	ok(kill(0, $t->backend_pid), 'the backend never died');
}

## A PostgreSQL crash (immediate stop) and restart under a stream of posts

{
	my $out = $t->dir . '/acked';
	my @kids;
	for my $c (1 .. 3) {
		my $pid = fork() // die "fork: $!";
		if ($pid == 0) {
			open(my $fh, '>', "$out.$c") or _exit(2);
			my $end = time + 4;
			for (my $i = 0; time < $end; $i++) {
				my $r = $t->post_room('load', "c$c m$i", "c$c-$i", timeout => 10);
				if ($r->{status} == 200) {
					print $fh "c$c-$i\n";
					$fh->flush;
				}
				sleep 0.05 if $r->{status} != 200;
			}
			close $fh;
			_exit(0);
		}
		push @kids, $pid;
	}
	sleep 1;
	$pg->restart('immediate');
	waitpid($_, 0) for @kids;
	my @acked = map { my $f = $_; open(my $fh, '<', $f) or die; map { chomp; $_ } <$fh> }
		map { "$out.$_" } 1 .. 3;
	ok(@acked > 20, scale(@acked) . ' posts were answered 200 around the crash');
	my %stored = map { $_ => 1 } split /\n/,
		$pg->psql($db, "SELECT client_id FROM entries WHERE room = 'load' AND role = 0") // '';
	my @missing = grep { !$stored{$_} } @acked;
	is(scalar @missing, 0, 'every answered post is in the database after the crash')
		or diag("missing: @missing");
	my $gaps = $pg->psql($db, "SELECT count(*) FROM (SELECT seq - lag(seq) OVER (ORDER BY seq)"
		. " AS d FROM entries WHERE room = 'load') x WHERE d <> 1");
	is($gaps, 0, '... and the room\'s seq has no gaps');
	my $last = $pg->psql($db, "SELECT last_seq FROM rooms WHERE name = 'load'");
	is($pg->psql($db, "SELECT count(*) FROM entries WHERE room = 'load'"), $last,
		'... nor a reserved number without its entries');
}

## Every statement finds its rows by key

# The statements are planned once per connection, often while the tables
# are new and look tiny to the planner; such a plan trimmed the history by
# reading every entry of the table, on every post (bench/store-compare:
# PostgreSQL carried a third of what it does by key). Here nothing but the
# backend touches a fresh database: posts that trim (a history of 4), a
# retry from an earlier batch (its guess fails, the batch is written again
# the long way), reads. Its tables must never have been scanned whole.
{
	my $db3 = $pg->createdb('keyed');
	my @args = (rate_limit => 'off',
		backend_args => ['--store', $pg->uri($db3), '--room-history', '4']);
	# A session's counts are in the statistics before it is gone from
	# pg_stat_activity (PostgreSQL reports them on its way out).
	my $sessions_end = sub {
		my $deadline = time + 20;
		while (time < $deadline) {
			return 1 if ($pg->psql($db3, "SELECT count(*) FROM pg_stat_activity"
				. " WHERE datname = '$db3' AND application_name = 'chat-fcgi'") // 1) == 0;
			sleep 0.1;
		}
		return 0;
	};
	# The schema's indexes were built by scanning their tables: a first
	# backend migrates, and the counts start after it.
	ChatTest->new(@args)->done;
	ok($sessions_end->(), 'a first backend made the schema, and its sessions ended');
	ok(defined $pg->psql($db3, 'SELECT pg_stat_reset()'), '... the statistics reset');

	my $t3 = ChatTest->new(@args);
	my $posts = 0;
	for my $i (1 .. 10) {
		for my $room (qw(k1 k2 k3)) {
			$posts++ if $t3->post_room($room, "m$i", "$room-$i")->{status} == 200;
		}
	}
	is($posts, 30, '30 posts in three rooms with a history of 4: 200');
	my $r = $t3->post_room('k1', 'again', 'k1-10');
	is($t3->json($r)->{message}, 'received m10', '... a retry of the last: its first answer');
	my ($m, $j) = $t3->messages('room=k2&after=0');
	is(scalar @{ $j->{entries} // [] }, 4, '... a read after 0: the 4 kept');
	($m, $j) = $t3->messages('room=k3&limit=2');
	is(scalar @{ $j->{entries} // [] }, 2, '... the newest 2');
	$t3->done;
	ok($sessions_end->(), "... the backend's sessions ended");
	my ($ins, $scans) = split ' ', $pg->psql($db3,
		"SELECT coalesce(sum(n_tup_ins), 0) || ' ' || coalesce(sum(seq_scan), 0)"
		. " FROM pg_stat_user_tables WHERE relname IN ('entries', 'posts', 'rooms')") // '0 -1';
	ok($ins >= 60, "PostgreSQL counted the posts' inserts ($ins rows)");
	is($scans, 0, '... and no scan of a whole table of the store');
}

## Over TCP, by host name, as the OS user (no user in the URI), confined

# libpq then resolves "localhost" and looks the user up, and reconnects
# after a restart under the seccomp filter: a call the filter lacks would
# kill the backend with SIGSYS.
{
	my $me = getpwuid($<);
	defined $pg->psql('postgres', qq{CREATE ROLE "$me" SUPERUSER LOGIN})
		or $me eq 'postgres' or BAIL_OUT("cannot create the role $me");
	my $db2 = $pg->createdb('rooms_tcp');
	# Under valgrind, by address: glibc's resolver keeps a per-thread
	# buffer that valgrind reports as lost when a worker thread ends.
	my $host = $ENV{CHAT_VALGRIND} ? '127.0.0.1' : 'localhost';
	my $t2 = ChatTest->new(backend_args => ['--store',
		"postgresql://$host:" . $pg->port . "/$db2?sslmode=disable"]);
	like($t2->backend_log, qr/sandbox seccomp|sandbox off \(sanitizer build\)|sandbox off \(--no-sandbox\)/,
		'a second backend, over TCP to localhost');
	is($t2->post_room('tcp', 'over tcp', undef)->{status}, 200, '... posts: 200');
	$pg->restart('fast');
	my $back;
	my $deadline = time + 10;
	while (time < $deadline) {
		last if ($back = $t2->post_room('tcp', 'again', undef, timeout => 5)->{status} == 200);
		sleep 0.2;
	}
	ok($back, '... and again after PostgreSQL restarted (it connected again, confined)');
	ok(kill(0, $t2->backend_pid), '... and it is alive');
	$t2->done;
}

# A post on another node wakes only its room's waiters: the notification
# names the rooms a batch stored in, and the other rooms' long-polls are
# not asked again (each would cost a read of the store).
{
	my $a = $t;
	my $b = ChatTest->new(backend_args => ['--store', $pg->uri($db)], rate_limit => 'off');
	my @rooms = map { "quiet$_" } 1 .. 40;
	is($b->post_room($_, 'start')->{status}, 200, "a post to $_ on node B") for @rooms[0, 39];
	$b->post_room($_, 'start') for @rooms[1 .. 38];
	my %poll = map { $_ => $a->begin_request(path => "/chat/messages?room=$_&after=2&wait=20") } @rooms;
	sleep 0.5;
	ok(!grep({ $a->request_ready($_, 0) } values %poll), '40 long-polls in 40 rooms held on node A');
	my $before = $a->metric("chat_fcgi_store_reads_total");
	is($b->post_room('quiet7', 'only here')->{status}, 200, 'a post to quiet7 on node B');
	my $r = $a->finish_request($poll{quiet7}, 5);
	like($r->{body}, qr/"text":"only here"/, '... wakes quiet7\'s long-poll on node A');
	sleep 0.5;
	my $reads = $a->metric('chat_fcgi_store_reads_total') - $before;
	cmp_ok($reads, '<=', 5, "... with $reads reads of the store on A, not one per room");
	ok(!grep({ $a->request_ready($poll{$_}, 0) } grep { $_ ne 'quiet7' } @rooms),
		'... and the other 39 long-polls are still held');
	close $_ for values %poll;
	$b->done;
}

sub scale { return scalar @_ }

$t->done;
done_testing;
