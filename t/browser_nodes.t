#!/usr/bin/perl

# Two Chromium windows served by different nodes: two chat-fcgi backends,
# each behind its own nginx, sharing one PostgreSQL (t/lib/PgTest.pm). Each
# window listens to its own node's event stream; what one says reaches the
# other through the database's notifications, and a streamed reply grows in
# the window that asked. Three nodes behind one upstream: t/scale_out.t.

use strict;
use warnings;

use utf8;
use Test::More;
use Time::HiRes qw(sleep time);

use lib 't/lib';
use WebDriver;

BEGIN {
	if (my $why = WebDriver->available) { plan skip_all => $why }
}

use ChatTest;
use PgTest;
use ChatPage;

binmode Test::More->builder->$_, ':encoding(UTF-8)' for qw(output failure_output todo_output);


my $pg  = PgTest->new(fsync_off => 1);
my $uri = $pg->uri($pg->createdb('browser_nodes'));
my @node = map { ChatTest->new(backend_args => ['--store', $uri, '--stream-pace', 100]) } 1 .. 2;

my $wa = WebDriver->new(dir => $node[0]->dir);
my $wb = WebDriver->new(dir => $node[1]->dir);

my $room = 'nodes-' . int(rand(1e9));
$wa->get($node[0]->url("/chat/?room=$room"));
$wb->get($node[1]->url("/chat/?room=$room"));
ok($wa->wait_for(sub { (data_attr($wa, 'chatReceiving') // '') eq 'events' }, $WAIT)
	&& $wb->wait_for(sub { (data_attr($wb, 'chatReceiving') // '') eq 'events' }, $WAIT),
	'each window listens to the event stream of its own node');

my $t0 = time;
say_in($wa, 'hello from node 1');
ok(wait_stored_log_ends_with($wb, [other => 'hello from node 1'], [bot => 'received hello from node 1']),
	'B, on node 2, sees what A said on node 1');
note(sprintf 'node 1 to node 2: %.2f s after it was typed', time - $t0);

$t0 = time;
say_in($wb, '안녕 from node 2, with a reply that grows');
my $reply = 'received 안녕 from node 2, with a reply that grows';
ok(wait_stored_log_ends_with($wa, [other => '안녕 from node 2, with a reply that grows'], [bot => $reply]),
	'A, on node 1, sees what B said on node 2');
note(sprintf 'node 2 to node 1: %.2f s after it was typed', time - $t0);
ok(wait_stored_log_ends_with($wb, [user => '안녕 from node 2, with a reply that grows'], [bot => $reply]),
	'B has its whole reply');

$wb->execute(<<'JS');
	window.grown = [];
	new MutationObserver(function () {
		var t = document.querySelector('#log .msg.bot.streaming .text');
		if (t && window.grown[window.grown.length - 1] !== t.textContent) window.grown.push(t.textContent);
	}).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
JS
say_in($wb, 'one more, watched as it grows');
ok(wait_stored_log_ends_with($wb, [user => 'one more, watched as it grows'], [bot => 'received one more, watched as it grows']),
	'B asks again and gets the whole reply');
my @partial = grep { length($_) && index('received one more, watched as it grows', $_) == 0
	&& length($_) < length('received one more, watched as it grows') } @{ $wb->execute('return window.grown') };
cmp_ok(scalar @partial, '>=', 2, 'which grew in B as it was streamed by node 2');
ok(wait_stored_log_ends_with($wa, [other => 'one more, watched as it grows'], [bot => 'received one more, watched as it grows']),
	'and A gets it');

my $a_log = messages($wa);
my $b_log = messages($wb);
is_deeply([map { $_->{seq} } @$a_log], [map { $_->{seq} } @$b_log], 'both windows show the same entries in the same order');
my %seen;
is_deeply([grep { $seen{$_}++ } map { $_->{seq} } @$a_log], [], 'none twice');

for ([A => $wa], [B => $wb]) {
	my ($name, $wd) = @$_;
	is(data_attr($wd, 'chatErrors'), '[]', "$name: no CSP violation or script error");
	is_deeply([map { $_->{message} } grep { $_->{level} eq 'SEVERE' } $wd->browser_log], [],
		"$name: no errors in the browser console");
}

$wa->quit;
$wb->quit;
$_->done for @node;
$pg->stop;

done_testing();
