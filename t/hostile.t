#!/usr/bin/perl
# Hostile clients over the real nginx + backend. Every case expects one
# exact status and a JSON body (a JSON error for every refusal), and at the
# end the backend is still the process it was at the start.
#
# What t/errors.t and t/chat.t already cover is not repeated: the common
# invalid JSON (comments, quotes, NaN, leading zeros, bad escapes, trailing
# bytes), the first invalid UTF-8 of each class, nesting to 100,000 deep,
# the 64 KiB edge, chunked bodies, five pipelined good posts, 8 x 50
# concurrent posts. Here: the rest of RFC 8259's edges, the remaining
# invalid UTF-8 (and the valid boundaries next to it), bodies that disagree
# with Content-Length, odd and oversized headers, pipelined good and bad
# requests, 1,000 connections at once, and slow clients, which run in the
# background (with the shipped timeouts) while everything else is served.

use strict;
use warnings;
use utf8;

use Encode qw(encode_utf8);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG _exit);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;

$| = 1;
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

my $t = ChatTest->new;
my $pid = $t->backend_pid;
my $form = 'application/x-www-form-urlencoded';

# One exact status, a JSON type, and a body that parses as JSON with an
# "error" string (or, for 200, the echo).
sub is_json {
	my ($r, $status, $name, $want_message) = @_;
	is($r->{status}, $status, "$name: $status") or diag(substr($r->{raw}, 0, 400));
	like($r->{headers}{'content-type'} // '', qr{^application/json; charset=utf-8$},
		"$name: Content-Type is JSON");
	my $j = $t->json($r);
	if ($status == 200) {
		ok(ref $j eq 'HASH' && defined $want_message && ($j->{message} // "\0") eq $want_message,
			"$name: the echo") or diag($r->{body});
	} else {
		ok(ref $j eq 'HASH' && defined $j->{error} && !ref $j->{error} && $j->{error} =~ /\w/,
			"$name: {\"error\": \"...\"}") or diag($r->{body});
	}
}

# --- Slow clients, in the background -----------------------------------------

# Each child reports: seconds until nginx closed the connection, and what it
# had sent back by then.
sub slow_client {
	my ($name, $head, $trickle) = @_;
	pipe(my $rd, my $wr) or die "pipe: $!";
	my $p = fork() // die "fork: $!";
	if ($p == 0) {
		close $rd;
		Test::More->builder->no_ending(1);
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port) or _exit(1);
		$s->autoflush(1);
		my $t0 = time;
		print $s $head;
		for my $byte (split //, $trickle // '') {
			sleep 1;
			print $s $byte;
		}
		my $got = '';
		my $sel = IO::Select->new($s);
		while (time - $t0 < 40) {
			next unless $sel->can_read(0.5);
			last unless sysread($s, my $buf, 4096);
			$got .= $buf;
		}
		printf $wr "%.3f %s", time - $t0, $got;
		close $wr;
		_exit(0);
	}
	close $wr;
	return {name => $name, pid => $p, fh => $rd};
}

my $slow_started = time;
my @slow = (
	slow_client('a header never finished', "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Ty"),
	slow_client('a body that stops halfway',
		"POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
			. "Content-Length: 40\r\nConnection: close\r\n\r\n{\"message\":\"and th"),
	slow_client('a body trickled a byte a second',
		"POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: $form\r\nContent-Length: 12\r\n"
			. "Connection: close\r\n\r\nmess", 'age=slow'),
);
my @quick;    # seconds each normal request took while the slow ones ran

sub timed_post {
	my $t0 = time;
	my $r = $t->post('{"message":"quick"}');
	push @quick, [time - $t0, $r->{status}];
	return $r;
}
timed_post() for 1 .. 3;

# --- RFC 8259: numbers, escapes, literals ------------------------------------

my @json = (
	# Valid JSON in the other keys: accepted.
	[200, 'number -0',                   '{"message":"x","n":-0}'],
	[200, 'number 0e0 and 1E+2',         '{"message":"x","n":[0e0,1E+2,1e-2,-1.5E3]}'],
	[200, 'number 1e999 (out of range)', '{"message":"x","n":1e999}'],
	[200, 'number -1e999',               '{"message":"x","n":-1e999}'],
	[200, 'integer 2^64 + 1',            '{"message":"x","n":18446744073709551617}'],
	[200, 'integer of 1,000 digits',     '{"message":"x","n":' . ('9' x 1000) . '}'],
	[200, 'fraction of 1,000 digits',    '{"message":"x","n":0.' . ('1' x 1000) . '}'],
	[200, 'literals true false null',    '{"message":"x","l":[true,false,null]}'],
	[200, 'escapes in another key',      '{"message":"x","e":"\"\\\\\/\b\f\n\r\t\u00e9\uD834\uDD1E"}'],
	[200, 'an escaped key "message"',    '{"\u006dessage":"x"}'],
	[200, 'duplicate "message": last wins', '{"message":"y","message":"x"}'],
	[200, 'uppercase \u hex digits',     '{"message":"\u0078"}'],
	# Invalid: each one 400.
	[400, 'number -',                    '{"message":"x","n":-}'],
	[400, 'number --1',                  '{"message":"x","n":--1}'],
	[400, 'number 00',                   '{"message":"x","n":00}'],
	[400, 'number -01',                  '{"message":"x","n":-01}'],
	[400, 'number 1.e5',                 '{"message":"x","n":1.e5}'],
	[400, 'number 1e+',                  '{"message":"x","n":1e+}'],
	[400, 'number 1e5.5',                '{"message":"x","n":1e5.5}'],
	[400, 'number 1_000',                '{"message":"x","n":1_000}'],
	[400, 'number 1,5 in an object',     '{"message":"x","n":1,5}'],
	[400, 'literal tru',                 '{"message":"x","l":tru}'],
	[400, 'literal nul',                 '{"message":"x","l":nul}'],
	[400, 'literal truex',               '{"message":"x","l":truex}'],
	[400, 'literal NULL',                '{"message":"x","l":NULL}'],
	[400, 'literal FALSE',               '{"message":"x","l":FALSE}'],
	[400, 'escape \U0041',               '{"message":"\U0041"}'],
	[400, 'escape \u with no digits',    '{"message":"\u"}'],
	[400, 'escape \0',                   '{"message":"\0"}'],
	[400, 'escape \a',                   '{"message":"\a"}'],
	[400, 'escape \v',                   '{"message":"\v"}'],
	[400, 'escape \x00',                 '{"message":"\x00"}'],
	[400, 'backslash at the end',        '{"message":"x\\'],
	[400, 'backslash before the quote',  '{"message":"x\"}'],
	[400, 'raw DEL is fine, raw 0x1F is not', "{\"message\":\"\x7f\x1f\"}"],
	[400, 'raw 0x1F in a key',           "{\"a\x1fb\":1,\"message\":\"x\"}"],
	[400, 'raw CR in a string',          "{\"message\":\"a\rb\"}"],
	[400, 'raw form feed in a string',   "{\"message\":\"a\fb\"}"],
	[400, 'raw ESC in a string',         "{\"message\":\"a\x1bb\"}"],
	[400, '\u0000 in a key',             '{"a\u0000b":1,"message":"x"}'],
	[400, 'a vertical tab as whitespace', "{\"message\":\"x\"\x0b}"],
	[400, 'a NBSP as whitespace',        "{\"message\":\"x\"\xc2\xa0}"],
	[400, 'a BOM before the object',     "\xef\xbb\xbf{\"message\":\"x\"}"],
	[400, 'an object then ]',            '{"message":"x"}]'],
	[400, 'a key that is not a string',  '{1:"x"}'],
	[400, 'an empty key and no colon',   '{"":}'],
);
for my $case (@json) {
	my ($status, $name, $body) = @$case;
	is_json($t->post($body), $status, "RFC 8259: $name", 'received x');
}

# \u0000 and raw control characters in the message itself come back
# escaped (the round trip is t/chat.t's); as the whole message:
is_json($t->post('{"message":"\u0000"}'), 200, 'the message is one \u0000', "received \0");
is($t->post('{"message":"\u0000\u001f"}')->{body}, '{"message":"received \u0000\u001f"}',
	'\u0000 and \u001f come back as escapes');

# --- Strings at and over the size limit ------------------------------------------

{
	my $frame = length('{"message":""}');
	# 64 KiB of escapes: a message a sixth as long, every character of which
	# is escaped again in the reply.
	my $n = int((65536 - $frame) / 6);
	my $body = '{"message":"' . ('\u0001' x $n) . '"}';
	is_json($t->post($body), 200, "$n escaped control characters (a body of " . length($body) . ' bytes)',
		'received ' . ("\x01" x $n));
	# 4-byte characters up to the edge, and one byte over it in the middle
	# of a character.
	my $emoji = int((65536 - $frame) / 4);
	$body = encode_utf8('{"message":"' . ("\x{1F600}" x $emoji) . '"}');
	cmp_ok(length $body, '<=', 65536, 'a body of emoji just under 64 KiB');
	is_json($t->post($body), 200, "$emoji emoji", 'received ' . ("\x{1F600}" x $emoji));
	my $over = encode_utf8('{"message":"' . ('a' x (65536 - $frame - 2)) . "\x{1F600}" . '"}');
	is(length $over, 65538, 'a body that crosses 64 KiB inside a 4-byte character');
	is_json($t->post($over), 413, 'a string over the size limit by 2 bytes');
	is_json($t->post('message=' . ('%01' x int((65536 - 8) / 3)), type => $form), 200,
		'a form body of 64 KiB of %01 (its reply is twice as long)', 'received ' . ("\x01" x int((65536 - 8) / 3)));
}

# --- Invalid UTF-8, every class ----------------------------------------------------

my @utf8 = (
	# The edges of the valid ranges: accepted.
	[200, 'U+007F',                "\x7f"],
	[200, 'U+0080 (C2 80)',        "\xc2\x80"],
	[200, 'U+07FF (DF BF)',        "\xdf\xbf"],
	[200, 'U+0800 (E0 A0 80)',     "\xe0\xa0\x80"],
	[200, 'U+D7FF (ED 9F BF)',     "\xed\x9f\xbf"],
	[200, 'U+E000 (EE 80 80)',     "\xee\x80\x80"],
	[200, 'U+FFFD (EF BF BD)',     "\xef\xbf\xbd"],
	[200, 'U+10000 (F0 90 80 80)', "\xf0\x90\x80\x80"],
	[200, 'U+10FFFF (F4 8F BF BF)', "\xf4\x8f\xbf\xbf"],
	# Overlong forms, at both ends of each length.
	[400, 'overlong NUL (C0 80)',           "\xc0\x80"],
	[400, 'overlong 2-byte C1 BF',          "\xc1\xbf"],
	[400, 'overlong 3-byte E0 80 80',       "\xe0\x80\x80"],
	[400, 'overlong 3-byte E0 9F BF',       "\xe0\x9f\xbf"],
	[400, 'overlong 4-byte F0 80 80 80',    "\xf0\x80\x80\x80"],
	[400, 'overlong 4-byte F0 8F BF BF',    "\xf0\x8f\xbf\xbf"],
	# Surrogates, ED A0..BF.
	[400, 'surrogate U+DBFF (ED AF BF)',    "\xed\xaf\xbf"],
	[400, 'surrogate U+DC00 (ED B0 80)',    "\xed\xb0\x80"],
	[400, 'surrogate U+DFFF (ED BF BF)',    "\xed\xbf\xbf"],
	# Above U+10FFFF.
	[400, 'above U+10FFFF (F4 BF BF BF)', "\xf4\xbf\xbf\xbf"],
	[400, 'lead F5',                        "\xf5\x80\x80\x80"],
	[400, 'lead F7 (old 4-byte to U+1FFFFF)', "\xf7\xbf\xbf\xbf"],
	[400, 'lead F8 (old 5-byte form)',      "\xf8\x88\x80\x80\x80"],
	[400, 'lead FC (old 6-byte form)',      "\xfc\x84\x80\x80\x80\x80"],
	[400, 'lead FD',                        "\xfd"],
	# Lone continuation bytes.
	[400, 'lone continuation BF',           "\xbf"],
	[400, 'three continuation bytes',       "\x80\x80\x80"],
	[400, 'a continuation after ASCII',     "a\xa9"],
	[400, 'an extra continuation after a whole character', "\xc3\xa9\xa9"],
	# Truncated sequences, before the closing quote and mid-string.
	[400, 'C3 then the closing quote',      "\xc3", 'end'],
	[400, 'E2 82 then the closing quote',   "\xe2\x82", 'end'],
	[400, 'F0 9F 98 then the closing quote', "\xf0\x9f\x98", 'end'],
	[400, 'F0 9F 98 then ASCII',            "\xf0\x9f\x98a"],
	[400, 'F0 9F then a new lead',          "\xf0\x9f\xc3\xa9"],
	[400, 'E2 then ASCII',                  "\xe2a"],
);
for my $case (@utf8) {
	my ($status, $name, $bytes, $at) = @$case;
	my $text = defined $at ? "x$bytes" : "x${bytes}y";
	my $want = $status == 200 ? 'received ' . Encode::decode('utf8', $text) : undef;
	is_json($t->post(qq({"message":"$text"})), $status, "UTF-8: $name", $want);
}
for my $case (['a key', qq({"k\xed\xbf\xbf":1,"message":"x"})], ['the end of the body', qq({"message":"x"}\xf0\x9f\x98)],
	['a form body, truncated', 'message=%F0%9F%98'], ['a form body, F8 lead', 'message=%F8%88%80%80%80'])
{
	my ($where, $body) = @$case;
	is_json($t->post($body, type => $body =~ /^message=/ ? $form : 'application/json'), 400, "UTF-8: invalid in $where");
}

# --- Bodies that disagree with Content-Length -----------------------------------

{
	# Longer: nginx reads Content-Length bytes; the rest is the next
	# request on the connection, and garbage there is a 400 of its own.
	my $out = $t->http("POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
			. "Content-Length: 15\r\n\r\n{\"message\":\"x\"}GARBAGE AFTER THE BODY\r\n\r\n");
	my @r = map { ChatTest::parse_response("HTTP/1.1 $_") } grep { length } split m{(?:^|(?<=\n)|(?<=\}))HTTP/1\.1 }, $out;
	is(scalar @r, 2, 'a body longer than Content-Length: two answers');
	is_json($r[0] // {}, 200, 'the request, cut at Content-Length', 'received x');
	is_json($r[1] // {}, 400, 'the bytes after it, read as a request');
	# Longer, as a form: the message is what Content-Length covers.
	is_json($t->request(method => 'POST', path => '/chat/', body => 'message=abcdef',
			headers => ['Content-Type' => $form, 'Content-Length' => 10]), 200,
		'a form body cut at Content-Length', 'received ab');

	# Shorter, and the client says it is done (half-close): nginx drops the
	# request without an answer and logs it as a 400.
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port) or die;
	print $s "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
		. "Content-Length: 100\r\n\r\n{\"message\":\"short\"}";
	shutdown($s, 1);
	my $got = '';
	IO::Select->new($s)->can_read(5) and sysread($s, $got, 4096);
	close $s;
	is($got, '', 'a body shorter than Content-Length, then end of input: closed without an answer');
	# Shorter, with the connection left open: the slow clients above.
}

# --- An empty body, chunked bodies -------------------------------------------------

is_json($t->request(method => 'POST', path => '/chat/', headers => ['Content-Type' => 'application/json']),
	400, 'POST with no body and no Content-Length');
is_json($t->request(method => 'POST', path => '/chat/', body => '', headers => ['Content-Type' => $form]),
	200, 'an empty form body: no message field', 'received ');
for my $case (['a chunk size that is not hex', "zz\r\n{}\r\n0\r\n\r\n"],
	['a chunk longer than its size', "2\r\n{\"message\":\"x\"}\r\n0\r\n\r\n"],
	['a negative chunk size', "-1\r\n{}\r\n0\r\n\r\n"],
	['a chunk size of 2^64', "10000000000000000\r\n{}\r\n0\r\n\r\n"])
{
	my ($name, $chunked) = @$case;
	is_json($t->request(method => 'POST', path => '/chat/', body => $chunked,
			headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked']),
		400, "chunked: $name");
}
is_json($t->request(method => 'POST', path => '/chat/', body => "f\r\n{\"message\":\"x\"}\r\n0\r\n\r\n",
		headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked',
		'Content-Length' => 15]), 400, 'both Transfer-Encoding and Content-Length');
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'gzip']),
	501, 'Transfer-Encoding: gzip');

# --- Odd headers ---------------------------------------------------------------------

# nginx passes the first Content-Type on and ignores the others.
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json', 'Content-Type' => 'text/plain']),
	200, 'two Content-Types, JSON first: the first counts', 'received x');
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'text/plain', 'Content-Type' => 'application/json']),
	415, 'two Content-Types, text/plain first: the first counts');
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json, text/plain']), 415, 'Content-Type: application/json, text/plain');
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json; charset=utf-8; charset=latin1']),
	415, 'two charsets, the second one latin1');

for my $cl ('-1', 'abc', '1.5', '+15', '0x0f', '15, 15', '99999999999999999999', '') {
	is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
			headers => ['Content-Type' => 'application/json', 'Content-Length' => $cl]),
		400, "Content-Length: '$cl'");
}
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json', 'Content-Length' => 15, 'Content-Length' => 15]),
	400, 'Content-Length twice');
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json', 'Content-Length' => '9999999']),
	413, 'Content-Length: 9999999 (over the limit, body never sent)');

# Header lines over large_client_header_buffers (8 KiB) are refused before
# nginx chooses a location: the snippet's server-level error pages answer.
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json', 'X-Long' => 'a' x 10000]),
	400, 'a 10 KB header line');
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json', map { ("X-H$_" => 'b' x 4000) } 1 .. 10]),
	400, 'forty KB of headers in 4 KB lines');
is_json($t->request(method => 'POST', path => '/chat/?' . ('q' x 10000), body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json']), 414, 'a 10 KB request line');
is_json($t->request(method => 'POST', path => '/chat/', body => '{"message":"x"}',
		headers => ['Content-Type' => 'application/json', 'Bad Header' => 'x']), 400, 'a header name with a space');
is_json(ChatTest::parse_response($t->http("POST /chat/ HTTP/1.1\r\nContent-Type: application/json\r\n"
			. "Content-Length: 15\r\nConnection: close\r\n\r\n{\"message\":\"x\"}")), 400, 'HTTP/1.1 without Host');
is_json(ChatTest::parse_response($t->http("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")), 400,
	'a TLS hello on the plain-HTTP port');
like($t->http("POST /chat/\r\n\r\n"), qr/^\{"error":"[^"]+"\}\n$/, 'an HTTP/0.9 request line: the JSON error alone (0.9 has no headers)');

timed_post() for 1 .. 3;

# --- Pipelined requests: each answered, in order --------------------------------

{
	my @sent = (
		[200, '{"message":"one"}', 'application/json'],
		[400, '{"message":1}',     'application/json'],
		[415, '{"message":"x"}',   'text/plain'],
		[200, 'message=four',      $form],
		[400, "{\"message\":\"\xff\"}", 'application/json'],
		[413, 'x' x 70000,         'application/json'],
	);
	my $raw = '';
	for my $req (@sent) {
		my ($status, $body, $type) = @$req;
		$raw .= "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: $type\r\n"
			. 'Content-Length: ' . length($body) . "\r\n\r\n$body";
	}
	$raw .= "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
		. "Content-Length: 18\r\nConnection: close\r\n\r\n{\"message\":\"last\"}";
	my $out = $t->http($raw);
	my @status = $out =~ m{HTTP/1\.1 (\d{3}) }g;
	# nginx closes the connection after a 413 whose body it did not read.
	is_deeply(\@status, [200, 400, 415, 200, 400, 413], 'pipelined good and bad posts in one write: each status in order');
	my @bodies = $out =~ m{\r\n\r\n(\{[^\n]*?\})(?=HTTP/|\n|$)}g;
	is(scalar @bodies, 6, '... each with a JSON body');
	like($bodies[0] // '', qr/"received one"/, '... the first reply is the first echo');
	like($bodies[3] // '', qr/"received four"/, '... and the fourth the fourth');
	my $again = "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n";
	my $last = $again =~ s/\r\n\r\n$/\r\nConnection: close\r\n\r\n/r;
	$out = $t->http(join('', map { $again . qq({"message":"$_"}) } 'a' .. 'y') . $last . '{"message":"z"}');
	my @got = $out =~ m{"received (\w)"}g;
	is(join('', @got), join('', 'a' .. 'z'), '26 pipelined posts in one write: 26 replies in order');
}

# --- The slow clients: ended by nginx's timeouts; nobody else slowed -------------

{
	# Keep posting until the slow clients are done.
	my $sel = IO::Select->new(map { $_->{fh} } @slow);
	my %done;
	while (keys %done < @slow && time - $slow_started < 40) {
		timed_post();
		for my $fh ($sel->can_read(0.2)) {
			my ($c) = grep { $_->{fh} == $fh } @slow;
			local $/;
			my $line = <$fh> // '';
			$sel->remove($fh);
			my ($secs, $got) = $line =~ /^([\d.]+) (.*)$/s;
			$done{ $c->{name} } = [$secs // 0, $got // ''];
			waitpid($c->{pid}, 0);
		}
	}
	my ($header, $stops, $trickle) = map { $done{ $_->{name} } // [0, ''] } @slow;
	ok($header->[0] >= 9 && $header->[0] < 20,
		sprintf('a header never finished: closed by client_header_timeout (10 s) after %.1f s', $header->[0]));
	is($header->[1], '', '... without an answer (nginx sends nothing on a timeout)');
	ok($stops->[0] >= 9 && $stops->[0] < 20,
		sprintf('a body that stops halfway: closed by client_body_timeout (10 s) after %.1f s', $stops->[0]));
	is($stops->[1], '', '... without an answer');
	# No gap reaches client_body_timeout, so nginx waits for the whole body;
	# it buffers the body first, so the backend never waits for it.
	my $r = ChatTest::parse_response($trickle->[1]);
	is_json($r, 200, sprintf('a body trickled a byte a second (%.1f s): served when whole', $trickle->[0]), 'received slow');
	my @codes = $t->access_log =~ m{^HTTP \S+ \S+ (\d+) }mg;
	is(scalar(grep { $_ == 408 } @codes), 2, 'nginx logged the two timeouts as 408');
	my @slowest = sort { $b->[0] <=> $a->[0] } @quick;
	is_deeply([grep { $_->[1] != 200 } @quick], [], scalar(@quick) . ' posts made meanwhile: all 200');
	cmp_ok($slowest[0][0], '<', 1, sprintf('... none slowed by the slow clients (slowest %.0f ms)', $slowest[0][0] * 1000));
}

# --- The same backend throughout --------------------------------------------------

is($t->backend_pid, $pid, 'the backend is the process it was at the start');
ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0, '... still running');
is_json($t->post('{"message":"end"}'), 200, 'and still answering', 'received end');
$t->done;

# --- 1,000 connections at once --------------------------------------------------------

{
	# Each request holds two of nginx's connections (the client's and the
	# backend's): conf/nginx.conf.in allows enough for this. The backend's
	# listen backlog (1024) queues what its threads have not taken yet, so
	# every request must get its reply.
	my $c = ChatTest->new;
	my $cpid = $c->backend_pid;
	my ($groups, $each) = (4, 250);
	my (@kids, @go);
	for my $g (1 .. $groups) {
		pipe(my $rd, my $wr) or die;
		pipe(my $go_rd, my $go_wr) or die;
		my $p = fork() // die;
		if ($p == 0) {
			close $rd;
			close $go_wr;
			Test::More->builder->no_ending(1);
			my @socks = map {
				IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $c->port) // do { print $wr "connect failed: $!\n"; _exit(1) }
			} 1 .. $each;
			print $wr "connected\n";
			$wr->flush;
			sysread($go_rd, my $x, 1);
			my %text;
			for my $i (0 .. $#socks) {
				my $b = qq({"message":"g$g-$i"});
				$text{ fileno $socks[$i] } = "g$g-$i";
				syswrite($socks[$i], "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
					. 'Content-Length: ' . length($b) . "\r\nConnection: close\r\n\r\n$b");
			}
			my $sel = IO::Select->new(@socks);
			my %buf;
			my $t0 = time;
			while ($sel->count && time - $t0 < 60) {
				for my $s ($sel->can_read(1)) {
					my $n = sysread($s, my $chunk, 65536);
					if ($n) { $buf{ fileno $s } .= $chunk; next }
					$sel->remove($s);
				}
			}
			my %tally;
			for my $s (@socks) {
				my $r = ChatTest::parse_response($buf{ fileno $s } // '');
				my $j = eval { JSON::PP->new->utf8->decode($r->{body}) };
				my $ok = $r->{status} == 200 && ref $j eq 'HASH' && ($j->{message} // '') eq "received $text{ fileno $s }";
				$tally{ $ok ? 'ok' : "$r->{status}" . (ref $j eq 'HASH' && $j->{error} ? ' json' : '') }++;
			}
			printf $wr "%s\n", join ' ', map { "$_=$tally{$_}" } sort keys %tally;
			printf $wr "took %.2f\n", time - $t0;
			close $wr;
			_exit(0);
		}
		close $wr;
		close $go_rd;
		push @kids, [$p, $rd];
		push @go, $go_wr;
	}
	my $connected = 0;
	for my $k (@kids) { my $fh = $k->[1]; my $l = <$fh> // ''; $connected++ if $l eq "connected\n" }
	is($connected, $groups, "$groups x $each connections open at once");
	syswrite($_, 'g') for @go;
	my (%tally, $took);
	for my $k (@kids) {
		my $fh = $k->[1];
		my @lines = <$fh>;
		waitpid($k->[0], 0);
		for my $pair (split ' ', $lines[0] // '') { my ($k2, $v) = split /=/, $pair; $tally{$k2} += $v }
		$took = $1 if ($lines[1] // '') =~ /^took ([\d.]+)/ && (!$took || $1 > $took);
	}
	is_deeply(\%tally, {ok => $groups * $each},
		sprintf('%d posts at once, each on its own connection: every one got its own reply (in %.1f s)',
			$groups * $each, $took // 0)) or diag(join ' ', map { "$_: $tally{$_}" } sort keys %tally);
	is($c->backend_pid, $cpid, '... from the same backend');
	ok(kill(0, $cpid) && waitpid($cpid, WNOHANG) == 0, '... still running');
	$c->done;
}

done_testing;
