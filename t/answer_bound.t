#!/usr/bin/perl
# No request makes the backend build a huge answer. The largest entry is a
# message of control characters sent as a form (%01 is three bytes of body,
# and escapes to six in JSON: about 131 KiB from a 64 KiB body); 30 posts
# make 60 entries, the user's and the reply's. A page of
# history stops taking entries at ROOMS_PAGE_MAX (256 KiB; src/rooms.h) and
# always holds one, so the largest answer of GET /chat/messages is under
# 256 KiB and one such entry: 400 KiB, the bound README documents, however
# large limit is. "next" says where the rest begins, and following it
# reads every entry once.

use strict;
use warnings;

use JSON::PP;
use Test::More;

use ChatTest;

$| = 1;

my $BOUND = 400 * 1024;
my $t = ChatTest->new(rate_limit => 'off');
my $worst = 'message=' . ('%01' x 21_800) . '&room=big';
cmp_ok(length $worst, '<=', 65536, 'the worst form body fits the default --max-body');
for my $i (1 .. 30) {
	my $r = $t->post($worst, type => 'application/x-www-form-urlencoded');
	$r->{status} == 200 or BAIL_OUT("post $i: $r->{status}");
}
my $entry = length($t->request(path => '/chat/messages?room=big&limit=1')->{body});
cmp_ok($entry, '>', 120 * 1024, sprintf('a page of one such entry is over 120 KiB of JSON (%d bytes)', $entry));

my $r = $t->request(path => '/chat/messages?room=big&limit=500');
is($r->{status}, 200, 'GET /chat/messages?limit=500 on a room of 60 such entries: 200');
cmp_ok(length $r->{body}, '<=', $BOUND, sprintf('... under %d KiB (%d bytes)', $BOUND / 1024, length $r->{body}));
my $page = $t->json($r);
my @seqs = map { $_->{seq} } @{ $page->{entries} };
ok(@seqs >= 1 && @seqs < 60, sprintf('... a page of %d entries, not all 60', scalar @seqs));
is($page->{next}, $seqs[-1], '... and next is its last entry');

my $after = $page->{next};
for (1 .. 60) {
	last if $after >= 60;
	my $more = $t->request(path => "/chat/messages?room=big&after=$after&limit=500");
	cmp_ok(length $more->{body}, '<=', $BOUND, "after=$after: under the bound too") or last;
	my $p = $t->json($more) or last;
	push @seqs, map { $_->{seq} } @{ $p->{entries} };
	last if $p->{next} == $after;
	$after = $p->{next};
}
is_deeply(\@seqs, [$seqs[0] .. 60], 'following next reads every entry once, in order, to the last');
$t->done;
done_testing;
