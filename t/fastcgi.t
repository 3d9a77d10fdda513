#!/usr/bin/perl
# The FastCGI socket itself, without nginx: malformed and hostile records
# written straight to chat-fcgi (t/lib/FastCGI.pm). After each one the
# backend is the same process and serves the next normal request. nginx
# never sends these; anything else that can reach the socket might.

use strict;
use warnings;

use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;

my $t = ChatTest->new(no_nginx => 1, backend_args => ['--threads', '4']);
my $pid = $t->backend_pid;

sub connect_backend {
	my ($tt) = @_;
	return FastCGI::connect_unix(($tt // $t)->socket) // die "connect: $!";
}

# A normal request on a connection of its own, answered within $timeout.
sub served {
	my ($tt, $name, $timeout) = @_;
	my $s = connect_backend($tt);
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"next"}');
	my $r = FastCGI::read_response($s, $timeout // 5);
	close $s;
	return is($r->{body}, '{"message":"received next"}', "$name: the next normal request is served");
}

sub still_serving {
	my ($name) = @_;
	ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0, "$name: the backend is the same running process");
	served($t, $name);
}

# Sends $bytes on a new connection and reads what comes back (until the
# backend closes, or $wait seconds).
sub exchange {
	my ($bytes, %o) = @_;
	my $s = connect_backend();
	print $s $bytes;
	shutdown($s, 1) if $o{half_close};
	my $got = FastCGI::read_records($s, $o{wait} // 3);
	close $s;
	return $got;
}

sub types { join ' ', map { $_->[0] } @{ $_[0]{records} } }

# What a request's stdout says: the status and the JSON body.
sub stdout_of {
	my ($got) = @_;
	my $out = join '', map { $_->[2] } grep { $_->[0] == FastCGI::FCGI_STDOUT } @{ $got->{records} };
	my ($head, $body) = split /\r\n\r\n/, $out, 2;
	my ($status) = ($head // '') =~ /^Status: (\d+)/m;
	return ($status // 0, $body // '', $head // '');
}

my $body = '{"message":"abc"}';
my $good = FastCGI::chat_params(CONTENT_LENGTH => length $body);

## A wrong protocol version

{
	my $begin_v2 = FastCGI::record(FastCGI::BEGIN_REQUEST, 1, pack('nCx5', FastCGI::RESPONDER, 0), version => 2);
	my $got = exchange($begin_v2 . FastCGI::params(1, $good) . FastCGI::stdin(1, $body));
	ok($got->{eof} && !@{ $got->{records} }, 'version 2: the connection is closed, nothing answered');
	still_serving('version 2');

	$got = exchange(FastCGI::record(FastCGI::BEGIN_REQUEST, 1, pack('nCx5', FastCGI::RESPONDER, 0), version => 0));
	ok($got->{eof} && !@{ $got->{records} }, 'version 0: the connection is closed, nothing answered');
	still_serving('version 0');
}

## Unknown record types

{
	# A management record of a type nobody knows gets FCGI_UNKNOWN_TYPE
	# (specification, section 4.2), and the connection goes on.
	my $s = connect_backend();
	print $s FastCGI::record(99, 0, 'xyz');
	my $got = FastCGI::read_records($s, 3, until => sub { @{ $_[0] } >= 1 });
	my ($unknown) = @{ $got->{records} };
	is($unknown && "$unknown->[0] $unknown->[1]", FastCGI::UNKNOWN_TYPE . ' 0',
		'an unknown management record (type 99, id 0): FCGI_UNKNOWN_TYPE');
	is($unknown && unpack('C', $unknown->[2]), 99, '... naming type 99');
	print $s FastCGI::request($good, $body);
	my $r = FastCGI::read_response($s, 5);
	close $s;
	is($r->{body}, '{"message":"received abc"}', '... and a request on the same connection is served');
	still_serving('unknown management record');

	$got = exchange(FastCGI::record(99, 1, 'xyz') . FastCGI::request($good, $body));
	ok($got->{eof}, 'an unknown record type before the request: the connection is closed');
	still_serving('unknown type before a request');

	$got = exchange(FastCGI::begin_request(1) . FastCGI::params(1, $good) . FastCGI::record(99, 1, 'abc')
			. FastCGI::stdin(1, $body));
	ok($got->{eof}, 'an unknown record type mid-request: the connection is closed');
	is(scalar @{ $got->{records} }, 0, '... with nothing answered');
	still_serving('unknown type mid-request');
}

## Parameter lengths near 2^31 (the CVE-2025-23016 class)

for my $case (['name 0x7fffffff', 0x7fffffff, 1], ['value 0x7fffffff', 1, 0x7fffffff],
	['name 0x7fffffff, value 0x7fffffff', 0x7fffffff, 0x7fffffff],
	['name 0x7ffffff0', 0x7ffffff0, 0], ['name 256 MiB', 0x10000000, 0])
{
	my ($name, $nl, $vl) = @$case;
	my $params = FastCGI::record(FastCGI::PARAMS, 1, FastCGI::name_value_lengths($nl, $vl, 'AB'))
		. FastCGI::record(FastCGI::PARAMS, 1, '');
	my $got = exchange(FastCGI::begin_request(1) . $params . FastCGI::stdin(1, ''), half_close => 1);
	ok($got->{eof}, "param length $name in a 10-byte record: the connection is closed");
	my ($status) = stdout_of($got);
	is($status, 0, "... and no request is served from it");
	still_serving("param length $name");
}

## FCGI_ABORT_REQUEST

for my $case (['before the body', ''], ['mid-body', FastCGI::stdin(1, '{"mes', 0)]) {
	my ($when, $part) = @$case;
	my $got = exchange(FastCGI::begin_request(1) . FastCGI::params(1, $good) . $part
			. FastCGI::record(FastCGI::ABORT_REQUEST, 1, ''));
	like(types($got), qr/\b${\ FastCGI::END_REQUEST}$/, "FCGI_ABORT_REQUEST $when: the request is ended");
	is((stdout_of($got))[0], 0, '... with no answer');
	still_serving("FCGI_ABORT_REQUEST $when");
}

## Params without stdin

{
	my $s = connect_backend();
	print $s FastCGI::begin_request(1) . FastCGI::params(1, $good);
	my $got = FastCGI::read_records($s, 0.5);
	ok(!$got->{eof} && !@{ $got->{records} }, 'params without stdin: the request waits for its body');
	served($t, 'while it waits');
	shutdown($s, 1);
	$got = FastCGI::read_records($s, 3);
	close $s;
	ok($got->{eof} && !@{ $got->{records} },
		'... and when the client stops sending, the connection is closed unanswered');
	still_serving('params without stdin');
}

## Bodies that disagree with CONTENT_LENGTH

for my $case (['larger than announced', 10, '{"message":"longer than ten"}'],
	['smaller than announced', 100, '{"message":"x"}'])
{
	my ($name, $cl, $data) = @$case;
	my $got = exchange(FastCGI::request(FastCGI::chat_params(CONTENT_LENGTH => $cl), $data));
	my ($status, $json, $head) = stdout_of($got);
	is($status, 400, "a stdin $name: 400");
	like($head, qr{^Content-Type: application/json}m, '... as JSON');
	like($json, qr/^\{"error":"[A-Z][^"]*\."\}$/, '... with an error sentence') or diag($json);
	still_serving("stdin $name");
}

## A connection closed mid-record

for my $case (['mid-header', substr(FastCGI::begin_request(1), 0, 4)],
	['mid-content', substr(FastCGI::begin_request(1) . FastCGI::params(1, $good), 0, 30)],
	['mid-body', FastCGI::begin_request(1) . FastCGI::params(1, $good) . substr(FastCGI::stdin(1, $body), 0, 12)])
{
	my ($where, $bytes) = @$case;
	my $s = connect_backend();
	print $s $bytes;
	sleep 0.1;
	close $s;
	still_serving("closed $where");
}

## Two requests at once on one connection (one at a time, FCGI_MPXS_CONNS 0)

{
	my $got = exchange(FastCGI::begin_request(1) . FastCGI::begin_request(2) . FastCGI::params(1, $good)
			. FastCGI::stdin(1, $body));
	my ($refused) = grep { $_->[0] == FastCGI::END_REQUEST && $_->[1] == 2 } @{ $got->{records} };
	ok($refused, 'a second FCGI_BEGIN_REQUEST on a busy connection is refused');
	is($refused && unpack('x4C', $refused->[2]), FastCGI::CANT_MPX_CONN, '... with FCGI_CANT_MPX_CONN');
	ok($got->{eof}, '... and the connection is closed, since that request\'s records would follow');
	still_serving('two requests on one connection');
}

## A request that arrives in pieces

{
	# The server takes what has come in one recv and walks its records
	# (src/server/records.c): parameters and a body not yet whole are kept
	# with the connection until they are, and libfcgi then reads the
	# parameters from memory (src/server/params.c). Each piece is sent
	# 50 ms after the one before.
	my $s = connect_backend();
	my $pieces = sub {
		my ($bytes, @cuts) = @_;
		my $at = 0;
		for my $cut (@cuts, length $bytes) {
			print $s substr($bytes, $at, $cut - $at);
			$at = $cut;
			sleep 0.05;
		}
		return FastCGI::read_response($s, 5);
	};
	my $req = sub { FastCGI::request(FastCGI::chat_params(@_[1 .. $#_]), qq({"message":"$_[0]"}), keep => 1) };
	my $small = $req->('in pieces');
	my $r = $pieces->($small, 1, 5, 8, 9, 30, length($small) - 30, length($small) - 3);
	is($r->{body}, '{"message":"received in pieces"}', 'a request sent in seven pieces is answered');
	$r = $pieces->($req->('whole'));
	is($r->{body}, '{"message":"received whole"}', '... and the next one on the same connection');
	# Parameters past one take (8 KiB): all at once, then cut inside them.
	my $big = $req->('big head', HTTP_X_PAD => 'p' x 20000);
	$r = $pieces->($big);
	is($r->{body}, '{"message":"received big head"}', '20 KB of parameters at once');
	$r = $pieces->($big, 8192, 12000, 20100);
	is($r->{body}, '{"message":"received big head"}', '... and in four pieces');
	# The parameters whole, the body not yet: libfcgi reads the rest itself.
	my $head_end = index($small, pack('CCn', 1, FastCGI::FCGI_STDIN, 1));
	$r = $pieces->($small, $head_end + 12);
	is($r->{body}, '{"message":"received in pieces"}', 'a body that comes after its parameters');
	$r = $pieces->($req->('still in step'));
	is($r->{body}, '{"message":"received still in step"}', '... and the connection stays in step');
	close $s;
	still_serving('requests in pieces');
}

$t->stop;
like($t->backend_log, qr/exiting after \d+ requests/, 'the backend exited cleanly at the end');
$t->done;

## A request that arrives while its connection is still busy

{
	# Connections are watched edge-triggered (src/server/conn.c): the edge for
	# the second request comes while a thread still owns the connection,
	# its first request waiting for a store that another process holds
	# locked. It is answered only if the owner looks again on letting the
	# connection go; nothing more is ever sent on it to wake it.
	my $u = ChatTest->new(no_nginx => 1);
	my $lock = $u->lock_store;
	my $s = connect_backend($u);
	my $post = '{"message":"first","room":"busy"}';
	print $s FastCGI::request(FastCGI::chat_params(CONTENT_LENGTH => length $post), $post, keep => 1);
	sleep 0.3;
	print $s FastCGI::request($good, $body, keep => 1);
	sleep 0.3;
	close $lock;
	my (@answers, $stdout);
	$stdout = '';
	my $deadline = time + 10;
	while (@answers < 2 && time < $deadline) {
		my $got = FastCGI::read_records($s, 0.5);
		for my $r (@{ $got->{records} }) {
			$stdout .= $r->[2] if $r->[0] == FastCGI::FCGI_STDOUT;
			if ($r->[0] == FastCGI::END_REQUEST) {
				push @answers, $stdout;
				$stdout = '';
			}
		}
		last if $got->{eof};
	}
	close $s;
	is(scalar @answers, 2, 'a request sent while the last one waited for the store: both answered');
	like($answers[0] // '', qr/^Status: 200.*"received first"/s, '... the stored post first, once the lock is gone');
	like($answers[1] // '', qr/\r\n\r\n\{"message":"received abc"\}$/, '... then the one that came meanwhile');
	$u->done;
}

## Connections that hold a thread

{
	# Connections that never send anything wait in epoll, not in a thread.
	my $n = 2;
	my $u = ChatTest->new(no_nginx => 1, backend_args => ['--threads', $n]);
	my @idle = map { connect_backend($u) } 1 .. $n + 1;
	sleep 0.2;
	served($u, sprintf('%d silent connections, --threads %d', $n + 1, $n), 5);
	close $_ for @idle;

	# Connections that send one byte of a record header and stop: the
	# byte is kept with the connection, and no thread waits for the rest.
	my @stalled = map { my $s = connect_backend($u); print $s "\x01"; $s } 1 .. $n + 1;
	sleep 0.2;
	served($u, sprintf('%d connections stalled mid-header, --threads %d', $n + 1, $n), 3);
	close $_ for @stalled;
	served($u, 'once the stalled clients close');
	ok(kill(0, $u->backend_pid), '... by the same process');
	$u->done;
}

## Parameter lengths whose sum overflows an int

{
	# libfcgi's ReadParams allocates nameLen + valueLen + 2 as an int: with
	# 0x40000000 each that is negative, malloc fails, and libfcgi's Malloc
	# asserts, which aborts the whole process. A 16-byte record would do it;
	# the server checks the lengths before libfcgi sees them.
	my $v = ChatTest->new(no_nginx => 1);
	my $vpid = $v->backend_pid;
	my $s = connect_backend($v);
	print $s FastCGI::begin_request(1)
		. FastCGI::record(FastCGI::PARAMS, 1, FastCGI::name_value_lengths(0x40000000, 0x40000000, 'AB'))
		. FastCGI::record(FastCGI::PARAMS, 1, '');
	shutdown($s, 1);
	FastCGI::read_records($s, 1);
	close $s;
	ok(kill(0, $vpid) && waitpid($vpid, WNOHANG) == 0,
		'param lengths 0x40000000 + 0x40000000: the backend is still running');
	if (kill(0, $vpid) && waitpid($vpid, WNOHANG) == 0) {
		served($v, 'after the overflowing lengths');
		$v->done;
	} else {
		note('chat-fcgi died: ' . ($v->backend_log =~ /(fcgiapp\.c.*)/ ? $1 : 'no message'));
		delete $v->{backend};
		$v->stop;
	}
}

done_testing;
