#!/usr/bin/perl
# GET /chat/health and GET /chat/metrics through nginx, the loopback-only
# rule for metrics, and nginx's request id in the backend's log lines.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use ChatTest;
use FastCGI;

my $t = ChatTest->new(backend_args => ['--verbose']);

my $r = $t->request(method => 'GET', path => '/chat/health');
is($r->{status}, 200, 'GET /chat/health: 200');
like($r->{headers}{'content-type'}, qr{^application/json}, '... JSON');
is($r->{body}, '{"status":"ok"}', '... {"status":"ok"}');
is($t->request(method => 'HEAD', path => '/chat/health')->{status}, 200, 'HEAD /chat/health: 200');
$r = $t->request(method => 'POST', path => '/chat/health', body => '{}',
	headers => ['Content-Type' => 'application/json']);
is($r->{status}, 405, 'POST /chat/health: 405');
is($r->{headers}{allow}, 'GET, HEAD', '... Allow: GET, HEAD');
is($t->json($r)->{error}, 'Only GET and HEAD are allowed here.', '... with a JSON error');

# Some traffic to count.
my @ids;
for my $m (qw(one two three)) {
	$r = $t->post(qq({"message":"$m"}));
	is($r->{status}, 200, "POST $m: 200");
}
is($t->post('{"message":1}')->{status}, 400, 'a bad POST: 400');

$r = $t->request(method => 'GET', path => '/chat/metrics');
is($r->{status}, 200, 'GET /chat/metrics from 127.0.0.1: 200');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, '... in the Prometheus text format');
my $m = $r->{body};
like($m, qr/^chat_fcgi_requests_total\{route="chat",status="200"\} 3$/m, '... 3 chat posts answered 200');
like($m, qr/^chat_fcgi_requests_total\{route="chat",status="400"\} 1$/m, '... 1 answered 400');
like($m, qr/^chat_fcgi_requests_total\{route="health",status="405"\} 1$/m, '... health 405 counted');
like($m, qr/^chat_fcgi_request_duration_seconds_count\{route="chat"\} 4$/m, '... a latency histogram');
like($m, qr/^chat_fcgi_request_duration_seconds_bucket\{route="chat",le="\+Inf"\} 4$/m, '... with +Inf');
like($m, qr/^chat_fcgi_requests_in_flight 1$/m, '... the metrics request itself in flight');
like($m, qr/^chat_fcgi_held_waits 0$/m, '... no waits held');
like($m, qr/^chat_fcgi_streams 0$/m, '... no streams');
like($m, qr/^chat_fcgi_store_errors_total 0$/m, '... no store errors');
like($m, qr/^chat_fcgi_connections \d+$/m, '... open connections');
like($m, qr/^chat_fcgi_build_info\{version="\d+\.\d+\.\d+",json_c="[\d.]+"\} 1$/m, '... build info');
for my $line (grep { !/^#/ } split /\n/, $m) {
	like($line, qr/^[a-z_]+(\{[a-z_]+="[^"\\\n]*"(,[a-z_]+="[^"\\\n]*")*\})? [0-9.e+-]+$/,
		"a well-formed sample: $line") or last;
}

# The same request from an address that is not loopback's 127.0.0.1: 403.
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
		LocalAddr => '127.0.0.2', Proto => 'tcp', Timeout => 5);
	ok($s, 'connected from 127.0.0.2') or BAIL_OUT("connect: $!");
	print $s "GET /chat/metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
	local $/;
	my $raw = <$s>;
	my $other = ChatTest::parse_response($raw);
	is($other->{status}, 403, 'GET /chat/metrics from another address: 403');
	like($other->{headers}{'content-type'}, qr{^application/json}, '... as JSON');
	unlike($other->{body}, qr/chat_fcgi_/, '... and no metrics in it');
	$s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
		LocalAddr => '127.0.0.2', Proto => 'tcp', Timeout => 5) or die "connect: $!";
	print $s "GET /chat/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
	$raw = <$s>;
	is(ChatTest::parse_response($raw)->{status}, 200, '... while /chat/health is open to all');
}

# The backend answers metrics only to a request that nginx's metrics
# location marked: straight on the socket, without the mark, there is
# nothing there.
{
	my $s = FastCGI::connect_unix($t->socket) or die "connect: $!";
	print $s FastCGI::request({REQUEST_METHOD => 'GET', REQUEST_URI => '/chat/metrics'}, '');
	my $r = FastCGI::read_response($s, 5);
	close $s;
	is($r->{status}, 404, 'GET /chat/metrics on the socket without nginx\'s mark: 404');
	unlike($r->{body}, qr/chat_fcgi_/, '... with no metrics in it');
	$s = FastCGI::connect_unix($t->socket) or die "connect: $!";
	print $s FastCGI::metrics_request();
	$r = FastCGI::read_response($s, 5);
	close $s;
	like($r->{body}, qr/^chat_fcgi_requests_in_flight /m, '... and with it, the metrics');
}

# Behind a proxy on the same host, every client is 127.0.0.1 unless nginx
# takes the client's address from the proxy (real_ip, as README shows):
# then only the machine itself gets the metrics.
{
	my $p = ChatTest->new(server_extra => "set_real_ip_from 127.0.0.1;\nreal_ip_header X-Forwarded-For;\n");
	my $r = $p->request(path => '/chat/metrics', headers => ['X-Forwarded-For' => '203.0.113.9']);
	is($r->{status}, 403, 'behind a local proxy with real_ip, a client of 203.0.113.9: 403 for the metrics');
	unlike($r->{body}, qr/chat_fcgi_/, '... with no metrics in it');
	$r = $p->request(path => '/chat/metrics', headers => ['X-Forwarded-For' => '127.0.0.1']);
	is($r->{status}, 200, '... and the machine itself: 200');
	$p->done;
}

# The store failing: here, a database whose schema another program changed.
{
	my $sqlite3 = ChatTest::which('sqlite3', '/usr/bin') or BAIL_OUT('sqlite3 is not installed');
	my $db = $t->store_path;
	chomp(my $version = `$sqlite3 '$db' 'PRAGMA user_version;'`);
	like($version, qr/^\d+$/, "the store's schema version is $version");
	system($sqlite3, $db, 'PRAGMA user_version = 99;') == 0 or die "sqlite3: $?";
	$r = $t->request(method => 'GET', path => '/chat/health');
	is($r->{status}, 503, 'GET /chat/health with a broken store: 503');
	is($t->json($r)->{status}, 'error', '... status "error"');
	like($t->json($r)->{error} // '', qr/schema version changed to 99/, '... with the reason');
	like($t->request(method => 'GET', path => '/chat/metrics')->{body},
		qr/^chat_fcgi_requests_total\{route="health",status="503"\} 1$/m, '... counted in the metrics');
	system($sqlite3, $db, "PRAGMA user_version = $version;") == 0 or die "sqlite3: $?";
	is($t->request(method => 'GET', path => '/chat/health')->{status}, 200,
		'... and 200 again once the store is whole');
}

# nginx's $request_id reaches the backend's log line of the same request.
$r = $t->post('{"message":"follow me"}');
is($r->{status}, 200, 'one more post');
$t->stop;
my ($id) = $t->access_log =~ /^HTTP POST \/chat\/ 200 .* ([0-9a-f]{32})$/m;
ok($id, 'the access log has a request id');
my @lines = grep { /id=\Q$id\E/ } split /\n/, $t->backend_log;
is(scalar @lines, 1, '... and exactly one backend log line carries it') or diag($t->backend_log);
like($lines[0] // '', qr{^chat-fcgi: 200 POST /chat/ [\d.]+ ms id=\Q$id\E$}, '... the line of that request');
$t->done;
done_testing;
