#!/usr/bin/perl
# The errors nginx makes itself on /chat/ have JSON bodies like the
# backend's: 504 from a backend that stopped answering. (405, 413 and 502
# are in page.t, chat.t and errors.t, 429 in rate_limit.t.)

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use ChatTest;

$| = 1;

sub is_json_error {
	my ($t, $r, $status, $name) = @_;
	is($r->{status}, $status, "$name: $status");
	like($r->{headers}{'content-type'} // '', qr{^application/json; charset=utf-8$},
		"$name: JSON content type");
	my $j = $t->json($r);
	ok($j && defined $j->{error} && length $j->{error}, "$name: {\"error\": sentence}")
		or diag($r->{raw});
}

{
	# A backend that stops answering (SIGSTOP) gets nginx's 504 after
	# fastcgi_read_timeout, which the snippet sets to 10 s on purpose.
	my $t = ChatTest->new;
	kill 'STOP', $t->backend_pid;
	my $t0 = time;
	my $r = $t->post('{"message":"anyone?"}', timeout => 20);
	my $took = time - $t0;
	kill 'CONT', $t->backend_pid;
	is_json_error($t, $r, 504, 'stopped backend');
	cmp_ok($took, '>=', 9, "504 comes after the 10 s read timeout (took ${\ sprintf '%.1f', $took} s)");
	cmp_ok($took, '<', 20, '... and not much later');
	is($t->json($t->post('{"message":"back"}'))->{message}, 'received back',
		'once continued, the backend answers again');
	$t->done;
}

done_testing;
