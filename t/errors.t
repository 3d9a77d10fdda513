#!/usr/bin/perl
# Every error status over nginx, each with its JSON body {"error":
# "<sentence>"}: 400 for bad JSON, bad UTF-8, deep nesting and bad forms;
# 415 for other content types; 404 for other paths; 413 from the backend's
# own --max-body; 502 when the backend is down. After each bad request the
# backend is the same process and still answers, and its log has one line
# per failed request with the status and the reason.

use strict;
use warnings;
use utf8;

use Encode qw(encode_utf8);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(time);

use ChatTest;
use FastCGI;

$| = 1;
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

# Hundreds of posts in a row: the rate limit (tested in rate_limit.t) is off.
my $t = ChatTest->new(rate_limit => 'off');
my $pid = $t->backend_pid;
my @expect_log;    # [status, path, name] of every failure the backend answered

# Status, JSON type and {"error": "<sentence>"} with nothing else in it.
sub is_error {
	my ($tt, $r, $status, $name) = @_;
	is($r->{status}, $status, "$name: status $status") or diag(substr($r->{raw}, 0, 600));
	like($r->{headers}{'content-type'} // '', qr{^application/json(;\s*charset=utf-8)?$}i,
		"$name: Content-Type is application/json");
	my $j = $tt->json($r);
	ok(ref $j eq 'HASH' && keys(%$j) == 1 && defined $j->{error} && !ref $j->{error},
		"$name: body is {\"error\": ...} and nothing else")
		or diag(substr($r->{body}, 0, 300));
	my $e = ref $j eq 'HASH' ? $j->{error} // '' : '';
	like($e, qr/^\p{Lu}.*\w.*[.!?]$/s, "$name: the error is a sentence")
		or diag("error: $e");
	return $e;
}

# The backend did not crash or restart, and still serves a good request.
sub still_serving {
	my ($tt, $want_pid, $name) = @_;
	ok($tt->backend_pid == $want_pid && kill(0, $want_pid) && waitpid($want_pid, WNOHANG) == 0,
		"$name: the backend is still the same running process");
	my $r = $tt->post('{"message":"still here"}');
	my $j = $r->{status} == 200 ? $tt->json($r) : undef;
	ok($j && $j->{message} eq 'received still here', "$name: the backend still answers a good request")
		or diag($r->{raw});
}

# A bad request to the backend: the error, then the backend is fine.
sub bad {
	my ($status, $name, $body, %o) = @_;
	my $t0 = time;
	my $r = $o{request} ? $t->request(%{ $o{request} }) : $t->post($body, %o);
	my $took = time - $t0;
	my $e = is_error($t, $r, $status, $name);
	cmp_ok($took, '<', 1, "$name: answered within 1 s") if $o{quick};
	push @expect_log, [$status, $o{path} // ($o{request} && $o{request}{path}) // '/chat/', $name];
	still_serving($t, $pid, $name);
	return $e;
}

# --- 400: JSON that RFC 8259 does not allow ---------------------------------------

my %json_400 = (
	'trailing bytes'                  => '{"message":"x"} x',
	'a second value after the object' => '{"message":"x"}{}',
	'a NUL byte after the object'     => "{\"message\":\"x\"}\0",
	'raw control character U+0001'    => "{\"message\":\"a\x01b\"}",
	'raw tab in a string'             => "{\"message\":\"a\tb\"}",
	'raw newline in a string'         => "{\"message\":\"a\nb\"}",
	'raw NUL in a string'             => "{\"message\":\"a\0b\"}",
	'single-quoted string'            => q({"message":'x'}),
	'single-quoted key'               => q({'message':"x"}),
	'unquoted key'                    => '{message:"x"}',
	'line comment'                    => qq({"message":"x"} // comment\n),
	'block comment'                   => '{/* c */"message":"x"}',
	'hash comment'                    => qq(# c\n{"message":"x"}),
	'NaN'                             => '{"message":"x","n":NaN}',
	'Infinity'                        => '{"message":"x","n":Infinity}',
	'-Infinity'                       => '{"message":"x","n":-Infinity}',
	'trailing comma in the object'    => '{"message":"x",}',
	'trailing comma in an array'      => '{"a":[1,2,],"message":"x"}',
	'leading zero 01'                 => '{"message":"x","n":01}',
	'number 1.'                       => '{"message":"x","n":1.}',
	'number .5'                       => '{"message":"x","n":.5}',
	'number +1'                       => '{"message":"x","n":+1}',
	'number 1e'                       => '{"message":"x","n":1e}',
	'hex number 0x10'                 => '{"message":"x","n":0x10}',
	'bad escape \x'                   => '{"message":"\x41"}',
	'bad escape \''                   => q({"message":"\'"}),
	'short \u escape'                 => '{"message":"\u12"}',
	'\u escape with a non-hex digit'  => '{"message":"\u12G4"}',
	'unterminated string'             => '{"message":"x}',
	'unterminated object'             => '{"message":"x"',
	'missing colon'                   => '{"message" "x"}',
	'missing value'                   => '{"message":}',
	'two commas'                      => '{"message":"x",,"a":1}',
	'True instead of true'            => '{"message":"x","a":True}',
	'undefined'                       => '{"message":"x","a":undefined}',
	'whitespace only'                 => " \r\n\t ",
);
for my $name (sort keys %json_400) {
	bad(400, "invalid JSON: $name", $json_400{$name});
}

# --- 400: not an object, or no body --------------------------------------------------

my %shape_400 = (
	'array []'           => '[]',
	'array of an object' => '[{"message":"x"}]',
	'string "x"'         => '"x"',
	'number 1'           => '1',
	'true'               => 'true',
	'null'               => 'null',
);
for my $name (sort keys %shape_400) {
	bad(400, "not an object: $name", $shape_400{$name});
}
bad(400, 'empty JSON body (Content-Length: 0)', '');
bad(400, 'empty JSON body, chunked', undef, request => {
	method  => 'POST', path => '/chat/', body => "0\r\n\r\n",
	headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked'],
});

# --- 400: message is not a string -------------------------------------------------------

for my $v ('1', '1.5', 'true', 'false', 'null', '[]', '["x"]', '{}', '{"message":"x"}') {
	bad(400, "message is not a string: $v", qq({"message":$v}));
}

# --- 400: not UTF-8 -------------------------------------------------------------------

my %utf8_400 = (
	'overlong C0 AF'                 => "\xC0\xAF",
	'overlong E0 80 AF'              => "\xE0\x80\xAF",
	'overlong F0 80 80 AF'           => "\xF0\x80\x80\xAF",
	'encoded surrogate ED A0 80'     => "\xED\xA0\x80",
	'encoded surrogate pair'         => "\xED\xA0\xBD\xED\xB8\x80",
	'FF byte'                        => "\xFF",
	'FE byte'                        => "\xFE",
	'lone continuation byte 80'      => "\x80",
	'truncated sequence E2 82'       => "\xE2\x82",
	'above U+10FFFF (F4 90 80 80)'   => "\xF4\x90\x80\x80",
	'F5 lead byte'                   => "\xF5\x80\x80\x80",
	'Latin-1 é (E9) as one byte'     => "caf\xE9",
);
for my $name (sort keys %utf8_400) {
	bad(400, "invalid UTF-8 in the message: $name", qq({"message":"a$utf8_400{$name}b"}));
}
bad(400, 'invalid UTF-8 in another key', qq({"message":"ok","k\xC0\xAF":1}));
bad(400, 'invalid UTF-8 in another value', qq({"message":"ok","v":"\xED\xA0\x80"}));
bad(400, 'invalid UTF-8 outside strings', qq({"message":"ok"}\xFF));

for my $esc ('\ud800', '\udc00', '\udfff', '\ud800\u0041', '\ud800x', '\udc00\ud800', '\ud800\ud800',
	'\uDBFF')
{
	bad(400, "unpaired surrogate escape $esc", qq({"message":"a${esc}b"}));
}

# --- 400: nesting --------------------------------------------------------------------

{
	my $deep = sub { my ($n) = @_; '{"message":"x","n":' . ('[' x $n) . (']' x $n) . '}' };
	bad(400, 'nesting 100 deep', $deep->(100), quick => 1);
	# The deepest nesting nginx lets through its 64 KiB limit.
	my $n = int((65536 - length($deep->(0))) / 2);
	my $body = $deep->($n);
	cmp_ok(length $body, '<=', 65536, "a $n-deep body fits in 64 KiB");
	bad(400, "nesting $n deep (as deep as 64 KiB allows)", $body, quick => 1);
	bad(400, 'nesting 65536 deep, never closed (a 64 KiB body of [)', '[' x 65536, quick => 1);
	bad(400, 'nesting 10,000 deep in objects', '{"message":"x","n":' . ('{"a":' x 10000) . '1' . ('}' x 10001),
		quick => 1);
}
{
	# 100,000 deep cannot pass nginx's 64 KiB limit: it goes straight to a
	# backend that allows a bigger body, over FastCGI.
	my $big = ChatTest->new(backend_args => ['--max-body', '1M'], no_nginx => 1);
	for my $case (['closed', '{"message":"x","n":' . ('[' x 100_000) . (']' x 100_000) . '}'],
		['never closed', '[' x 100_000])
	{
		my ($what, $body) = @$case;
		my $s = FastCGI::connect_unix($big->socket);
		ok($s, "FastCGI: connected to a backend with --max-body 1M");
		my $t0 = time;
		print $s FastCGI::request(FastCGI::chat_params(), $body) if $s;
		my $r = $s ? FastCGI::read_response($s, 5) : {status => 0, body => ''};
		my $took = time - $t0;
		is($r->{status}, 400, "nesting 100,000 deep ($what), over FastCGI: 400");
		cmp_ok($took, '<', 1, "nesting 100,000 deep ($what): answered within 1 s");
		my $j = $big->json($r);
		ok($j && defined $j->{error} && $j->{error} =~ /\w/,
			"nesting 100,000 deep ($what): JSON error body") or diag($r->{raw});
		like($r->{headers}{'content-type'} // '', qr{^application/json}, "nesting 100,000 deep ($what): JSON type");
	}
	my $bp = $big->backend_pid;
	ok(kill(0, $bp) && waitpid($bp, WNOHANG) == 0, 'the backend survived 100,000-deep nesting');
	my $s = FastCGI::connect_unix($big->socket);
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"after deep"}') if $s;
	my $r = $s ? FastCGI::read_response($s, 5) : {body => ''};
	like($r->{body}, qr/^\{"message":"received after deep"\}/, '... and still answers');
	$big->stop;
	unlike($big->backend_log, qr/AddressSanitizer|runtime error/, 'no sanitizer report from deep nesting');
}

# --- 400: bad form encoding -------------------------------------------------------------

my $form = 'application/x-www-form-urlencoded';
for my $case (['%zz' => 'message=%zz'], ['%4 at the end' => 'message=%4'], ['% at the end' => 'message=%'],
	['%g1' => 'message=a%g1b'], ['%zz in another field' => 'x=%zz&message=ok'],
	['overlong UTF-8 %C0%AF' => 'message=%C0%AF'], ['encoded surrogate %ED%A0%80' => 'message=%ED%A0%80'],
	['%FF' => 'message=%FF'], ['raw FF byte' => "message=\xFF"])
{
	my ($name, $body) = @$case;
	bad(400, "bad form body: $name", $body, type => $form);
}

# --- 415: other content types -------------------------------------------------------

for my $type ('text/plain', 'application/json; charset=latin1', 'application/json; charset=iso-8859-1',
	'application/jsonx', 'application/json-patch+json', 'text/json', 'multipart/form-data; boundary=x',
	'application/x-www-form-urlencoded; charset=latin1', 'application/xml')
{
	bad(415, "Content-Type: $type", '{"message":"x"}', type => $type);
}
bad(415, 'no Content-Type', undef, request => {
	method => 'POST', path => '/chat/', body => '{"message":"x"}',
});
bad(415, 'an empty Content-Type', undef, request => {
	method => 'POST', path => '/chat/', body => '{"message":"x"}', headers => ['Content-Type' => ''],
});

# --- 404: paths the backend does not serve ---------------------------------------------

bad(404, 'POST /chat/nothing', '{"message":"x"}', path => '/chat/nothing');
bad(404, 'POST /chat/chat.js', '{"message":"x"}', path => '/chat/chat.js');
bad(404, 'POST /chat/index.html', '{"message":"x"}', path => '/chat/index.html');

# --- the log: one line per failed request --------------------------------------------

{
	# Lines are written just after the answer; give the last one a moment.
	my $want = @expect_log;
	my $lines;
	for (1 .. 50) {
		$lines = () = $t->backend_log =~ /^chat-fcgi: [45]\d\d /mg;
		last if $lines >= $want;
		Time::HiRes::sleep(0.02);
	}
	my $log = $t->backend_log;
	my @lines = $log =~ /^chat-fcgi: ([45]\d\d) (\S+) (\S+) (.*)$/mg;
	my @got;
	while (my ($st, $m, $path, $rest) = splice(@lines, 0, 4)) { push @got, "$st $m $path" }
	is_deeply(\@got, [map { "$_->[0] POST $_->[1]" } @expect_log],
		'the backend logged one line per failed request, in order, with status, method and path');
	my @reasons = $log =~ /^chat-fcgi: [45]\d\d \S+ \S+ .*?:\s*(.*)$/mg;
	is(scalar(grep { /\w/ } @reasons), $want, 'every failure line gives a reason');
	like($log, qr/^chat-fcgi: 400 POST \/chat\/ .*JSON/m, 'the log gives the JSON error as a 400 reason');
	like($log, qr/^chat-fcgi: 400 POST \/chat\/ .*(UTF-8|surrogate)/mi, 'the log gives a UTF-8 reason for a 400');
	like($log, qr/^chat-fcgi: 400 POST \/chat\/ .*(nested|deep|depth)/mi, 'the log gives nesting as a 400 reason');
	like($log, qr/^chat-fcgi: 400 POST \/chat\/ .*empty/mi, 'the log gives the empty body as a 400 reason');
	like($log, qr/^chat-fcgi: 415 POST \/chat\/ .*(Content-Type|charset)/mi, 'the log gives the type as a 415 reason');
	like($log, qr/^chat-fcgi: 404 POST \/chat\/nothing /m, 'the log names the unknown path of a 404');
	unlike($log, qr/^chat-fcgi: 200 /m, 'good requests are not logged at the default level');
}

$t->done;

# --- 502: the backend is down --------------------------------------------------------------

{
	my $d = ChatTest->new;
	my $down = sub {
		my ($how) = @_;
		for my $i (1 .. 3) {
			my $t0 = time;
			my $r = $d->post('{"message":"anyone?"}');
			my $took = time - $t0;
			is_error($d, $r, 502, "$how, post $i");
			cmp_ok($took, '<', 1, "$how, post $i: the 502 comes within 1 s");
		}
		my $r = $d->post('message=anyone', type => $form);
		is_error($d, $r, 502, "$how, a form post");
		$r = $d->request(method => 'GET', path => '/chat/');
		is($r->{status}, 200, "$how: the page itself is still served");
	};

	# Stopped as it should be (SIGTERM): the socket is gone.
	$d->stop_backend;
	ok(!$d->backend_pid && !-e $d->socket, 'backend stopped with SIGTERM: its socket is removed');
	$down->('backend stopped');

	$d->start_backend;
	my $r = $d->post('{"message":"back"}');
	ok($r->{status} == 200 && $d->json($r) && $d->json($r)->{message} eq 'received back',
		'backend restarted: posts work again');

	# Killed (SIGKILL): a stale socket file stays, and nobody listens on it.
	$d->signal_backend('KILL');
	ok(-S $d->socket, 'backend killed with SIGKILL: a stale socket file is left');
	$down->('backend killed');

	$d->start_backend;
	$r = $d->post('{"message":"back again"}');
	ok($r->{status} == 200 && $d->json($r) && $d->json($r)->{message} eq 'received back again',
		'backend restarted over the stale socket: posts work again');

	like($d->error_log, qr/connect\(\) to unix:\S+ failed/, 'nginx logged why it could not reach the backend');
	$d->done(backend_was_down => 1);
}

# --- 413 from the backend itself -------------------------------------------------------------

{
	my $s = ChatTest->new(backend_args => ['--max-body', '1000']);
	my $spid = $s->backend_pid;
	my $frame = length('{"message":""}');

	my $r = $s->post('{"message":"' . ('a' x (1000 - $frame)) . '"}');
	is($r->{status}, 200, '--max-body 1000: a body of exactly 1000 bytes is accepted');

	$r = $s->post('{"message":"' . ('a' x (5000 - $frame)) . '"}');
	is_error($s, $r, 413, '--max-body 1000, a 5000-byte body');
	still_serving($s, $spid, '--max-body 1000, after 413');

	$r = $s->post('{"message":"' . ('a' x (1001 - $frame)) . '"}');
	is_error($s, $r, 413, '--max-body 1000, a 1001-byte body');

	$r = $s->request(method => 'POST', path => '/chat/',
		headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked'],
		body => join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } '{"message":"', 'b' x 5000, '"}')
			. "0\r\n\r\n");
	is_error($s, $r, 413, '--max-body 1000, a 5000-byte chunked body');

	$r = $s->post('message=' . ('c' x 4000), type => $form);
	is_error($s, $r, 413, '--max-body 1000, a 4008-byte form body');
	still_serving($s, $spid, '--max-body 1000, after all the 413s');

	$s->stop;
	my @lines = $s->backend_log =~ /^chat-fcgi: (413 POST \/chat\/) /mg;
	is(scalar @lines, 4, 'the backend logged its four 413s (nginx passed them: its limit is 64 KiB)');
	unlike($s->error_log, qr/client intended to send too large body/, 'nginx did not refuse them itself');
	$s->done;
}

done_testing;
