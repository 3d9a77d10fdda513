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


{
	# A backend that stops answering (SIGSTOP) gets nginx's 504 after
	# fastcgi_read_timeout, which the snippet sets to 10 s on purpose.
	my $t = ChatTest->new;
	kill 'STOP', $t->backend_pid;
	my $t0 = time;
	my $r = $t->post('{"message":"anyone?"}', timeout => 20);
	my $took = time - $t0;
	kill 'CONT', $t->backend_pid;
	$t->is_json_error($r, 504, 'stopped backend');
	cmp_ok($took, '>=', 9, "504 comes after the 10 s read timeout (took ${\ sprintf '%.1f', $took} s)");
	cmp_ok($took, '<', 20, '... and not much later');
	is($t->json($t->post('{"message":"back"}'))->{message}, 'received back',
		'once continued, the backend answers again');
	$t->done;
}

done_testing;
