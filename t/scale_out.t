#!/usr/bin/perl
# Scale-out: three chat-fcgi nodes on TCP behind one nginx upstream
# (conf/chat-fcgi-nodes.conf.in, rendered by conf/render), sharing one
# PostgreSQL. A post through one node reaches long-pollers and event
# streams held on the others within 500 ms; with a node killed, the others
# keep serving. The shipped snippet passes nginx -t.
# Each cross-node case is a sub in @cases, run with the nodes up.

use strict;
use warnings;

use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;
use EventStream;
use PgTest;

$| = 1;
my $json = JSON::PP->new->utf8->canonical;

sub seqs { return [map { $_->{seq} } @{ $_[0]{entries} // [] }] }

my $pg = PgTest->new(fsync_off => 1);
my $db = $pg->createdb('nodes');
my @ports = map { ChatTest::free_port() } 1 .. 3;
my $t = do {
	local $ENV{CHAT_NODES} = join(' ', map { "127.0.0.1:$_" } @ports);
	ChatTest->new(no_backend => 1, rate_limit => 'off');
};

my $conf = ChatTest::read_file($t->dir . '/chat-fcgi-http.conf');
my @servers = $conf =~ /server 127\.0\.0\.1:\d+/g;
is(scalar @servers, 3, 'the rendered upstream names the three nodes');
my $check = `$t->{nginx} -t -p @{[$t->dir]}/ -c @{[$t->dir]}/nginx.conf -e @{[$t->dir]}/nginx-t.log 2>&1`;
is($?, 0, 'nginx -t accepts conf/chat-fcgi-nodes.conf.in') or diag($check);

# The nodes: chat-fcgi --listen 127.0.0.1:PORT --store postgresql://...
my @nodes;
for my $i (0 .. 2) {
	my $log = $t->dir . "/node$i.log";
	my $pid = $t->spawn_logged($log,
		ChatTest::backend_command($t->dir, $t->bin), '--listen', "127.0.0.1:$ports[$i]",
		'--verbose', '--store', $pg->uri($db, tcp => 1));
	push @nodes, { pid => $pid, log => $log, port => $ports[$i] };
}
for my $i (0 .. 2) {
	my $deadline = time + 10 * ChatTest::slack();
	sleep 0.05 while time < $deadline && ChatTest::read_file($nodes[$i]{log}) !~ / listening on /;
	like(ChatTest::read_file($nodes[$i]{log}), qr/ listening on 127\.0\.0\.1:$ports[$i] .*store postgresql/,
		"node $i serves on its TCP port, on PostgreSQL");
}

# How many long-polls each node has held (from its --verbose log).
sub polls_served {
	my ($node) = @_;
	return scalar(() = ChatTest::read_file($node->{log}) =~ m{/chat/messages\?room=cross}g);
}

my @cases = (
	# Long-polls spread over the nodes by round robin; one post wakes them
	# all, on every node.
	[ 'long-polls on every node are woken by a post through any node' => sub {
		my $room = 'cross';
		my $first = $t->post_room($room, 'start', undef);
		is($first->{status}, 200, 'a post through nginx: 200') or diag($first->{raw});
		my $after = $t->json($first)->{next};
		my @held = map {
			my $s = $t->begin_request(path => "/chat/messages?room=$room&after=$after&wait=20");
			sleep 0.05;
			$s
		} 1 .. 6;
		sleep 0.5;
		my $t0 = time;
		my $r = $t->post_room($room, 'to everyone', undef);
		is($r->{status}, 200, 'the post: 200');
		my @took;
		for my $s (@held) {
			my $w = $t->finish_request($s, 5);
			push @took, time - $t0;
			is_deeply(seqs($t->json($w)), [$after + 1, $after + 2], 'a long-poll gets the new entries')
				or diag($w->{raw});
		}
		my ($worst) = sort { $b <=> $a } @took;
		ok($worst < 0.5, sprintf('... all within 500 ms of the post (slowest %.0f ms)', $worst * 1000));
		my @per = map { polls_served($_) } @nodes;
		ok(!grep({ $_ == 0 } @per), "... and every node held some of them (@per)");
	} ],
	# Event streams, likewise spread by round robin: each gets the post's
	# two entries as events, whichever node holds it.
	[ 'event streams on every node get a post through any node' => sub {
		my $room = 'cross-events';
		my $first = $t->post_room($room, 'start', undef);
		is($first->{status}, 200, 'a post through nginx: 200') or diag($first->{raw});
		my $after = $t->json($first)->{next};
		my @streams = map {
			my $es = EventStream->open($t, "/chat/events?room=$room&after=$after");
			$es
		} 1 .. 6;
		is(scalar(grep { $_->status == 200 } @streams), 6, 'six event streams open: 200');
		sleep 0.5;
		my $t0 = time;
		my $r = $t->post_room($room, 'to every stream', undef);
		is($r->{status}, 200, 'the post: 200');
		my @took;
		for my $es (@streams) {
			my @ev = ($es->next(5), $es->next(5));
			push @took, time - $t0;
			is_deeply([map { $_ && $_->{id} } @ev], [$after + 1, $after + 2],
				'a stream gets the two new entries as events, in order');
			$es->close;
		}
		my ($worst) = sort { $b <=> $a } @took;
		ok($worst < 0.5, sprintf('... all within 500 ms of the post (slowest %.0f ms)', $worst * 1000));
	} ],
);

for my $case (@cases) {
	my ($name, $code) = @$case;
	subtest $name => $code;
}

## One node killed: the others keep serving

{
	kill 'KILL', $nodes[1]{pid};
	waitpid($nodes[1]{pid}, 0);
	my $ok = 0;
	for my $i (1 .. 12) {
		my $r = $t->post_room('after-kill', "m$i", "k-$i");
		$ok++ if $r->{status} == 200;
	}
	is($ok, 12, 'with node 1 killed, every post through nginx is answered 200');
	my $r = $t->request(path => '/chat/messages?room=after-kill&after=0');
	is(scalar @{ $t->json($r)->{entries} // [] }, 24, '... and all are in the room, once');
	my $s = $t->begin_request(path => '/chat/messages?room=after-kill&after=24&wait=20');
	sleep 0.3;
	$t->post_room('after-kill', 'still', undef);
	my $w = $t->finish_request($s, 5);
	is_deeply(seqs($t->json($w)), [25, 26], '... and long-polls are still woken');
}

for my $n (@nodes) {
	next if waitpid($n->{pid}, WNOHANG) != 0;
	kill 'TERM', $n->{pid};
	waitpid($n->{pid}, 0);
}
for my $i (0, 2) {
	ok(!ChatTest::sanitizer_report(ChatTest::read_file($nodes[$i]{log})),
		"no sanitizer report from node $i");
}
$t->done(backend_was_down => 1);
done_testing;
