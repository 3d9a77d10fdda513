#!/usr/bin/perl
# Every FastCGI record of a connection, as the server itself parses them,
# straight to its socket (t/lib/FastCGI.pm). Management records (request
# id 0) are answered, whatever their size and wherever they come, even in
# the middle of a body, and the connection stays usable: FCGI_GET_VALUES
# gets one FCGI_GET_VALUES_RESULT naming each known variable once, any
# other type FCGI_UNKNOWN_TYPE. Records that break the protocol (another
# request id, a second FCGI_BEGIN_REQUEST, an unknown application type, a
# type only an application sends, a version other than 1) close the
# connection: the process lives on, serves the next connection, counts the
# close in chat_fcgi_connections_closed_total{reason="protocol"} and logs
# it. t/fastcgi.t has the older cases (lengths near 2^31, aborts, bodies
# that lie, connections cut mid-record).

use strict;
use warnings;

use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;
$SIG{PIPE} = 'IGNORE';    # a write to a connection the backend closed fails, no more

my $t = ChatTest->new(no_nginx => 1, backend_args => ['--threads', '4']);
my $pid = $t->backend_pid;
my $deaths = 0;
my $slack = ChatTest::slack();

sub connect_backend {
	return FastCGI::connect_unix($t->socket) // die "connect: $!";
}

sub alive { kill(0, $pid) && waitpid($pid, WNOHANG) == 0 }

# A normal request on the connection given, read to its END_REQUEST.
sub served_on {
	my ($s, $name) = @_;
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"next"}', keep => 1);
	my $r = FastCGI::read_response($s, 5 * $slack);
	return is($r->{body}, '{"message":"received next"}', $name);
}

# The backend is the process it was at the start and serves a new
# connection. A backend that died is started again (and the death noted),
# so that the cases after it still test what they say.
sub still_serving {
	my ($name) = @_;
	if (!ok(alive(), "$name: the backend is the same running process")) {
		my ($why) = $t->backend_log =~ /(\*\*\*[^\n]*\*\*\*|[^\n]*(?:abort|Assertion|signal)[^\n]*)/i;
		diag("chat-fcgi died: " . ($why // 'no message in its log'));
		$deaths++;
		delete $t->{backend};
		$pid = $t->start_backend;
	}
	my $s = connect_backend();
	served_on($s, "$name: a new connection is served");
	close $s;
}

# A metric of GET /chat/metrics, labels and all, asked of the backend
# itself (no nginx here); undef when it is not there.
sub metric {
	my ($name) = @_;
	my $s = FastCGI::connect_unix($t->socket) or return;
	print $s FastCGI::metrics_request();
	my $r = FastCGI::read_response($s, 5 * $slack);
	close $s;
	return $r->{body} =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

use constant PROTOCOL_CLOSES => 'chat_fcgi_connections_closed_total{reason="protocol"}';
my $protocol_cases = 0;    # connections closed for breaking the protocol, so far

# The case's close is counted: the metric goes up by one (polled: the
# count may land just after the close itself).
sub counted {
	my ($before, $name) = @_;
	$protocol_cases++;
	my $deadline = time + 2 * $slack;
	my $now = metric(PROTOCOL_CLOSES);
	while (time < $deadline && defined $now && defined $before && $now < $before + 1) {
		sleep 0.05;
		$now = metric(PROTOCOL_CLOSES);
	}
	ok(defined $before && defined $now && $now == $before + 1,
		"$name: counted in " . PROTOCOL_CLOSES)
		or diag(defined $now ? "before: " . ($before // 'none') . ", now: $now"
			: 'the metric is not in GET /chat/metrics');
}

sub of_type {
	my ($got, $type) = @_;
	return grep { $_->[0] == $type } @{ $got->{records} };
}

# Records until one of $type comes (or EOF, or the deadline).
sub read_until_type {
	my ($s, $type, $timeout) = @_;
	return FastCGI::read_records($s, $timeout * $slack, until => sub { grep { $_->[0] == $type } @_ });
}

my $body = '{"message":"abc"}';
my $good = FastCGI::chat_params(CONTENT_LENGTH => length $body);

## A GET_VALUES of 65,000 bytes naming one variable over and over

{
	# libfcgi writes its answer into a 64-byte buffer on its stack, one
	# entry per name it knows, without a bound: this record overflowed it
	# (docs: "GET_VALUES overflows libfcgi's stack"). The server answers it
	# itself, each known name once.
	my $copies = 4095;    # 16 bytes each: as many as one record holds
	my $record = FastCGI::get_values(('FCGI_MAX_CONNS') x $copies);
	note(sprintf('a GET_VALUES record of %d bytes, FCGI_MAX_CONNS %d times', length $record, $copies));
	my $s = connect_backend();
	print $s $record;
	my $got = read_until_type($s, FastCGI::GET_VALUES_RESULT, 3);
	my @results = of_type($got, FastCGI::GET_VALUES_RESULT);
	is(scalar @results, 1, 'a GET_VALUES of 65,528 bytes naming FCGI_MAX_CONNS 4,095 times: one GET_VALUES_RESULT')
		or diag('records: ' . join(' ', map { "$_->[0]/$_->[1]" } @{ $got->{records} })
			. ($got->{eof} ? ', then closed' : ''));
	is($results[0] && $results[0][1], 0, '... with request id 0');
	my $pairs = $results[0] && FastCGI::name_values($results[0][2]) || [];
	is_deeply([map { $_->[0] } @$pairs], ['FCGI_MAX_CONNS'], '... naming FCGI_MAX_CONNS once');
	like($pairs->[0] ? $pairs->[0][1] : '', qr/^[1-9][0-9]*$/, '... its value a positive number');
	served_on($s, '... then a request on the same connection is served');
	close $s;
	still_serving('a 65,000-byte GET_VALUES');
}

## GET_VALUES for the three variables and one nobody knows

{
	my $s = connect_backend();
	print $s FastCGI::get_values('FCGI_MAX_CONNS', 'FCGI_MAX_REQS', 'FCGI_MPXS_CONNS', 'FCGI_NO_SUCH_VALUE');
	my $got = read_until_type($s, FastCGI::GET_VALUES_RESULT, 3);
	my @results = of_type($got, FastCGI::GET_VALUES_RESULT);
	is(scalar @results, 1, 'GET_VALUES for the three variables and an unknown name: one GET_VALUES_RESULT');
	my %v = map { @$_ } @{ $results[0] && FastCGI::name_values($results[0][2]) || [] };
	is_deeply([sort keys %v], [qw(FCGI_MAX_CONNS FCGI_MAX_REQS FCGI_MPXS_CONNS)],
		'... naming the three, the unknown one left out');
	like($v{FCGI_MAX_CONNS} // '', qr/^[1-9][0-9]*$/, '... FCGI_MAX_CONNS a positive number');
	like($v{FCGI_MAX_REQS} // '', qr/^[1-9][0-9]*$/, '... FCGI_MAX_REQS a positive number');
	is($v{FCGI_MPXS_CONNS}, '0', '... FCGI_MPXS_CONNS 0: one request at a time per connection');
	served_on($s, '... then a request on the same connection is served');
	close $s;
	still_serving('GET_VALUES for the three');
}

## A management record of a type nobody knows

{
	my $s = connect_backend();
	print $s FastCGI::record(99, 0, 'xyz');
	my $got = read_until_type($s, FastCGI::UNKNOWN_TYPE, 3);
	my @unknown = of_type($got, FastCGI::UNKNOWN_TYPE);
	is(scalar @unknown, 1, 'a management record of type 99: one UNKNOWN_TYPE')
		or diag($got->{eof} ? 'the connection was closed' : 'nothing came');
	is($unknown[0] && $unknown[0][1], 0, '... with request id 0');
	is($unknown[0] && unpack('H*', $unknown[0][2]), unpack('H*', pack('Cx7', 99)),
		'... naming type 99, then 7 zero bytes');
	served_on($s, '... then a request on the same connection is served');
	close $s;
	still_serving('an unknown management type');
}

## A GET_VALUES in the middle of a body

{
	my $long = '{"message":"' . ('m' x 3000) . '"}';
	my $s = connect_backend();
	print $s FastCGI::begin_request(1, FastCGI::KEEP_CONN)
		. FastCGI::params(1, FastCGI::chat_params(CONTENT_LENGTH => length $long))
		. FastCGI::stdin(1, substr($long, 0, 1000), 0);
	sleep 0.1;    # the server is reading the body now
	print $s FastCGI::get_values('FCGI_MPXS_CONNS');
	sleep 0.1;
	print $s FastCGI::stdin(1, substr($long, 1000));
	my $got = read_until_type($s, FastCGI::END_REQUEST, 5);
	close $s;
	my @results = of_type($got, FastCGI::GET_VALUES_RESULT);
	is(scalar @results, 1, 'a GET_VALUES between two STDIN records: answered');
	my %v = map { @$_ } @{ $results[0] && FastCGI::name_values($results[0][2]) || [] };
	is($v{FCGI_MPXS_CONNS}, '0', '... FCGI_MPXS_CONNS 0');
	my $stdout = join '', map { $_->[2] } of_type($got, FastCGI::FCGI_STDOUT);
	like($stdout, qr/^Status: 200\b.*\r\n\r\n\{"message":"received m{3000}"\}$/s,
		'... and the request goes on: its answer is the whole message');
	my @ids = map { $_->[1] } of_type($got, FastCGI::FCGI_STDOUT), of_type($got, FastCGI::END_REQUEST);
	is_deeply([grep { $_ != 1 } @ids], [], '... on request id 1');
	still_serving('GET_VALUES mid-body');
}

## Records that break the protocol: the connection is closed

# Sends $bytes (a list: written 50 ms apart) on a new connection and reads
# until the backend closes it or the deadline.
sub broken {
	my ($name, @writes) = @_;
	my $before = metric(PROTOCOL_CLOSES);
	my $s = connect_backend();
	for my $w (@writes) {
		print $s $w;
		sleep 0.05;
	}
	my $got = FastCGI::read_records($s, 3 * $slack);
	close $s;
	ok($got->{eof}, "$name: the connection is closed")
		or diag('records: ' . join(' ', map { "$_->[0]/$_->[1]" } @{ $got->{records} }));
	is_deeply([of_type($got, FastCGI::FCGI_STDOUT)], [], "$name: nothing is served on it");
	counted($before, $name);
	still_serving($name);
	return $got;
}

# A request under way on the connection: its head, the first half of its
# body. It asks to keep the connection, so a close is the backend's doing.
my $under_way = FastCGI::begin_request(1, FastCGI::KEEP_CONN) . FastCGI::params(1, $good)
	. FastCGI::stdin(1, substr($body, 0, 8), 0);
my $rest = FastCGI::stdin(1, substr($body, 8));

{
	my $got = broken('a STDIN record for request id 2 while request 1 is under way',
		$under_way, FastCGI::stdin(2, 'xyz', 0), $rest);
	is_deeply([grep { $_->[1] == 2 } @{ $got->{records} }], [], '... and nothing answers request id 2');

	$got = broken('a second BEGIN_REQUEST while request 1 is under way',
		FastCGI::begin_request(1, FastCGI::KEEP_CONN) . FastCGI::params(1, $good),
		FastCGI::begin_request(2), FastCGI::stdin(1, $body));
	my @ends = of_type($got, FastCGI::END_REQUEST);
	is(scalar @ends, 1, '... after one END_REQUEST');
	is($ends[0] && $ends[0][1], 2, '... for request id 2');
	is($ends[0] && unpack('x4C', $ends[0][2]), FastCGI::CANT_MPX_CONN, '... with FCGI_CANT_MPX_CONN');

	broken('an application record of unknown type 99 for request 1, mid-body',
		$under_way, FastCGI::record(99, 1, 'abc'), $rest);
	broken('a record of version 2 mid-body', $under_way,
		FastCGI::record(FastCGI::FCGI_STDIN, 1, substr($body, 8), version => 2));
}

# Types only an application sends: before any request, and mid-body.
for my $case (['END_REQUEST', FastCGI::END_REQUEST, 1, pack('NCx3', 0, 0)],
	['STDOUT', FastCGI::FCGI_STDOUT, 1, "Status: 200 OK\r\n\r\nfrom the peer"],
	['STDERR', FastCGI::FCGI_STDERR, 1, 'from the peer'],
	['GET_VALUES_RESULT', FastCGI::GET_VALUES_RESULT, 0, FastCGI::name_value('FCGI_MAX_CONNS', '1')],
	['UNKNOWN_TYPE', FastCGI::UNKNOWN_TYPE, 0, pack('Cx7', 99)])
{
	my ($what, $type, $id, $content) = @$case;
	my $record = FastCGI::record($type, $id, $content);
	broken("$what (id $id) sent by the peer before a request", $record,
		FastCGI::request($good, $body, keep => 1));
	broken("$what (id $id) sent by the peer mid-body", $under_way, $record, $rest);
}

## The count and the log, at the end

{
	is(metric(PROTOCOL_CLOSES), $protocol_cases,
		"$protocol_cases protocol closes in all, each counted once");
	my @lines = grep { /closed/ && /protocol/ } split /\n/, $t->backend_log;
	is(scalar @lines, $protocol_cases, '... and each logged with "closed" and "protocol"')
		or diag($t->backend_log);
	is($deaths, 0, 'the backend never died: one process served the whole file');
}

$t->done;
done_testing;
