#!/usr/bin/perl
# The POST contract over nginx: {"message": "<string>"} in, {"message":
# "received <string>"} out, for JSON and form bodies, any content type
# spelling, chunked bodies, the 64 KiB limit at its edge, many requests in a
# row and many at once.

use strict;
use warnings;
use utf8;

use Encode qw(encode_utf8 decode_utf8);
use JSON::PP;
use POSIX qw(_exit);
use Test::More;

use ChatTest;
use FastCGI;

$| = 1;
binmode(Test::More->builder->$_, ':encoding(UTF-8)') for qw(output failure_output todo_output);

# Hundreds of posts in a row: the rate limit (tested in rate_limit.t) is off.
my $t = ChatTest->new(rate_limit => 'off');
my $pid = $t->backend_pid;
my $json = JSON::PP->new->utf8->canonical;

# A 200 with the reply's exact type and {"message": $want} (Perl characters).
sub is_reply {
	my ($r, $want, $name) = @_;
	is($r->{status}, 200, "$name: status 200") or diag($r->{raw});
	is($r->{headers}{'content-type'}, 'application/json; charset=utf-8',
		"$name: Content-Type: application/json; charset=utf-8");
	my $j = $t->json($r);
	ok(ref $j eq 'HASH' && keys(%$j) == 1, "$name: body is a JSON object with one key")
		or diag($r->{body});
	my $got = $j ? $j->{message} : undef;
	ok(defined $got && $got eq $want, "$name: message is the echo")
		or diag(sprintf("got %s (%d chars), want %s (%d chars)",
			map { defined $_ ? (length > 60 ? substr($_, 0, 60) . '...' : $_, length) : ('undef', 0) }
				$got, $want));
}

# --- the tutorial's exchange ----------------------------------------------------

{
	my $r = $t->post('{"message": "django"}');
	is($r->{status}, 200, 'POST {"message": "django"}: 200');
	is($r->{headers}{'content-type'}, 'application/json; charset=utf-8',
		'POST django: Content-Type is exactly application/json; charset=utf-8');
	is($r->{body}, '{"message":"received django"}',
		'POST django: body is exactly {"message":"received django"}');
	is($r->{headers}{'content-length'}, length('{"message":"received django"}'),
		'POST django: Content-Length matches the body');
	like($r->{headers}{'cache-control'} // '', qr/no-store/,
		'POST django: the reply is not cached (Cache-Control: no-store)');
}

# --- content type spellings -------------------------------------------------------

for my $type ('application/json; charset=utf-8', 'Application/JSON', 'APPLICATION/JSON; CHARSET=UTF-8',
	'application/json;charset=utf-8', 'application/json; charset="utf-8"',
	'application/json ; charset=UTF-8', 'application/json; charset=utf8')
{
	is_reply($t->post('{"message":"typed"}', type => $type), 'received typed', "Content-Type: $type");
}

# --- round trips ------------------------------------------------------------------------

my @round = (
	[Korean              => "안녕하세요, 세계"],
	[emoji               => "😀 👍🏽 👨‍👩‍👧 🇰🇷"],
	[quotes              => q{she said "hi" and 'bye'}],
	[backslashes         => q{C:\path\to\file \\ \n is not a newline}],
	['control characters' => join('', map { chr } 1 .. 31, 127) . "\t\r\n"],
	['\u0000'            => "a\x{0}b\x{0}"],
	['only \u0000'       => "\x{0}"],
	[slash               => '</script> a/b //c'],
	['HTML injection'    => '<img src=x onerror=alert(1)>'],
	['empty string'      => ''],
	['spaces only'       => '   '],
	['U+2028 and U+2029' => "line\x{2028}para\x{2029}"],
	['noncharacter and max' => "\x{FFFD}\x{FFFF}\x{10FFFF}"],
	['mixed scripts'     => "Zoë, Ελλάδα, русский, 中文, عربى, हिन्दी"],
);
for my $case (@round) {
	my ($name, $text) = @$case;
	my $r = $t->post($json->encode({message => $text}));
	is_reply($r, "received $text", "round trip: $name");
}

# The same text written with escapes, as other clients may send it.
for my $case (
	['\u escapes'        => '"\u00e9\u00c9 \uD55C\uAE00"', "é\x{C9} 한글"],
	['surrogate pair'    => '"\ud83d\ude00"',              "\x{1F600}"],
	['escaped slash'     => '"a\/b"',                      'a/b'],
	['short escapes'     => '"\"\\\\\b\f\n\r\t"',          "\"\\\b\f\n\r\t"],
	['escaped \u0000'    => '"x\u0000y"',                  "x\x{0}y"],
	['escaped \u001f'    => '"\u001f"',                    "\x{1f}"],
	['raw UTF-8 and DEL' => encode_utf8(qq{"ü\x{7f}"}),    "ü\x{7f}"],
	)
{
	my ($name, $literal, $text) = @$case;
	is_reply($t->post(qq({"message":$literal})), "received $text", "escaped input: $name");
}

# --- what the object may hold ----------------------------------------------------

is_reply($t->post('{}'), 'received ', 'missing message: {} gives "received "');
is($t->post('{}')->{body}, '{"message":"received "}', 'missing message: body is exactly {"message":"received "}');
is_reply($t->post('{"text":"hello","user":"ann"}'), 'received ', 'missing message among other keys: "received "');
is_reply($t->post('{"user":"ann","message":"hi","n":[1,2.5e3,{"a":null}],"ok":true,"no":false}'),
	'received hi', 'other keys of any type are ignored');
is_reply($t->post('{"message":"hi","message_id":7,"Message":"no"}'), 'received hi',
	'keys near "message" are not taken for it');
is_reply($t->post(" \t\r\n{ \"message\" : \"spaced\" } \r\n\t "), 'received spaced',
	'JSON whitespace around and inside the object is allowed');
is_reply($t->post('{"message":"-1.5e-3 is not a number here"}'), 'received -1.5e-3 is not a number here',
	'numbers inside the string stay text');
is_reply($t->post('{"nested":{"a":{"b":{"c":[[["deep enough"]]]}}},"message":"ok"}'), 'received ok',
	'a few levels of nesting in other keys are fine');

# --- form posts (what an HTML form or htmx sends) ---------------------------------

my $form = 'application/x-www-form-urlencoded';
is_reply($t->post('message=hello+world%21', type => $form), 'received hello world!',
	'form: message=hello+world%21');
is_reply($t->post('message=%EC%95%88%EB%85%95%ED%95%98%EC%84%B8%EC%9A%94', type => $form),
	'received 안녕하세요', 'form: Korean, percent-encoded');
is_reply($t->post(encode_utf8('message=안녕'), type => $form), 'received 안녕',
	'form: Korean as raw UTF-8');
is_reply($t->post('message=%F0%9F%98%80%20%2B%26%3D%25', type => $form), "received \x{1F600} +&=%",
	'form: emoji and the reserved characters + & = %, encoded');
is_reply($t->post('user=ann&message=a%2Bb&x=1', type => $form), 'received a+b',
	'form: message among other fields');
is_reply($t->post('message=', type => $form), 'received ', 'form: an empty message');
is_reply($t->post('message=x%00y', type => $form), "received x\x{0}y", 'form: %00 survives');
is_reply($t->post('message=%22%5C%3Cb%3E', type => $form), 'received "\<b>',
	'form: quotes, backslash and markup are escaped in the JSON reply');
is_reply($t->post('message=hi', type => "$form; charset=UTF-8"), 'received hi',
	'form: with charset=UTF-8');
is_reply($t->post('message=hi', type => 'Application/X-WWW-Form-URLEncoded'), 'received hi',
	'form: the type matches case-insensitively');

# --- a chunked body: nginx buffers it and passes CONTENT_LENGTH ---------------------

sub chunked {
	my (@parts) = @_;
	return join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } @parts) . "0\r\n\r\n";
}
{
	my $r = $t->request(method => 'POST', path => '/chat/',
		headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked'],
		body => chunked('{"mess', 'age":"chun', encode_utf8('ked 한'), '"}'));
	is_reply($r, 'received chunked 한', 'chunked JSON body in four chunks');

	$r = $t->request(method => 'POST', path => '/chat/',
		headers => ['Content-Type' => $form, 'Transfer-Encoding' => 'chunked'],
		body => chunked('message=chunked+', 'form'));
	is_reply($r, 'received chunked form', 'chunked form body');

	my $big = 'c' x 40000;
	$r = $t->request(method => 'POST', path => '/chat/',
		headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked'],
		body => chunked('{"message":"', substr($big, 0, 20000), substr($big, 20000), '"}'));
	is_reply($r, "received $big", 'chunked body of 40 KB');
}

# --- the 64 KiB limit at its edge -----------------------------------------------------

{
	my $frame = length('{"message":""}');
	my $fill = 'x' x (65536 - $frame);
	my $body = qq({"message":"$fill"});
	is(length $body, 65536, 'the edge body is 65536 bytes');
	is_reply($t->post($body), "received $fill", '64 KiB exactly (65536 bytes): accepted');

	my $korean = '한' x int((65536 - $frame) / 3);
	my $kbody = encode_utf8(qq({"message":"$korean"}));
	cmp_ok(length $kbody, '<=', 65536, 'a body of multibyte text just under 64 KiB');
	is_reply($t->post($kbody), "received $korean", 'multibyte text just under 64 KiB: accepted');

	my $r = $t->post(qq({"message":"${fill}y"}));
	$t->is_json_error($r, 413, '65537 bytes (Content-Length)');
	like($t->error_log, qr/client intended to send too large body: 65537 bytes/,
		'65537 bytes: refused by nginx itself (its error log says so)');

	$r = $t->request(method => 'POST', path => '/chat/',
		headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked'],
		body => chunked('{"message":"', $fill, 'y"}'));
	$t->is_json_error($r, 413, '65537 bytes chunked');

	$r = $t->post('{"message":"after"}');
	is_reply($r, 'received after', 'a normal post after the 413s');
}

# --- many requests in a row ----------------------------------------------------------

{
	# Long and short, JSON and form, alternate: a short reply after a long
	# one must not carry its leftovers.
	my @bad;
	for my $i (1 .. 200) {
		my $text = $i % 3 == 0 ? "長い" x ($i * 10) : $i % 3 == 1 ? "s$i" : "form $i & 한";
		my $r = $i % 3 == 2
			? $t->post('message=' . join('', map { sprintf '%%%02X', ord } split //, encode_utf8($text)),
				type => $form)
			: $t->post($json->encode({message => $text}));
		my $j = $r->{status} == 200 ? $t->json($r) : undef;
		push @bad, "$i: $r->{status} " . substr($r->{body}, 0, 80)
			unless $j && $j->{message} eq "received $text";
	}
	is_deeply(\@bad, [], '200 requests in a row, alternating long and short, JSON and form: all echoed exactly');
}

{
	# Several requests on one kept-alive client connection (nginx still
	# talks to the backend once per request).
	my $raw = '';
	for my $i (1 .. 5) {
		my $b = qq({"message":"keep $i"});
		$raw .= "POST /chat/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
			. 'Content-Length: ' . length($b) . "\r\n" . ($i == 5 ? "Connection: close\r\n" : '')
			. "\r\n$b";
	}
	my $out = $t->http($raw);
	my @got = $out =~ m{\{"message":"received (keep \d)"\}}g;
	is_deeply(\@got, [map { "keep $_" } 1 .. 5], 'five pipelined posts on one connection: five replies in order');
	my @status = $out =~ m{HTTP/1\.1 (\d{3}) }g;
	is_deeply(\@status, [(200) x 5], 'five pipelined posts: all 200');
}

# --- many at once -------------------------------------------------------------------

{
	my ($children, $each) = (8, 50);
	my %kid;
	for my $c (1 .. $children) {
		pipe(my $rd, my $wr) or die "pipe: $!";
		my $p = fork() // die "fork: $!";
		if ($p == 0) {
			close $rd;
			Test::More->builder->no_ending(1);
			my ($ok, @bad) = (0);
			for my $i (1 .. $each) {
				# Each child's text is its own, and its length varies.
				my $text = "child $c req $i " . ('한' x ($c * $i % 37)) . ('z' x ($i * 13 % 500));
				my $r = $i % 5
					? $t->post($json->encode({message => $text}))
					: $t->request(method => 'POST', path => '/chat/',
						headers => ['Content-Type' => 'application/json', 'Transfer-Encoding' => 'chunked'],
						body => chunked('{"message":', substr($json->encode($text), 0, 5),
							substr($json->encode($text), 5), '}'));
				my $j = $r->{status} == 200 ? $t->json($r) : undef;
				if ($j && $j->{message} eq "received $text"
					&& ($r->{headers}{'content-type'} // '') eq 'application/json; charset=utf-8')
				{
					$ok++;
				} else {
					push @bad, "child $c req $i: $r->{status} " . substr($r->{body}, 0, 80);
				}
			}
			print $wr join("\n", "ok $ok", @bad), "\n";
			close $wr;
			_exit(0);
		}
		close $wr;
		$kid{$p} = $rd;
	}
	my ($total, @bad) = (0);
	for my $p (sort keys %kid) {
		my $fh = $kid{$p};
		my @lines = <$fh>;
		close $fh;
		waitpid($p, 0);
		push @bad, "child $p exited with $?" if $?;
		chomp @lines;
		my $head = shift(@lines) // '';
		$total += $1 if $head =~ /^ok (\d+)$/;
		push @bad, @lines;
	}
	is($total, $children * $each, "$children clients x $each concurrent posts: every one got its own echo")
		or diag(join("\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]));
	is_deeply(\@bad, [], 'concurrent posts: no wrong status, type or echo');
	my @codes = $t->access_log =~ m{^HTTP POST /chat/ (\d+) }mg;
	is(scalar(grep { $_ != 200 && $_ != 413 } @codes), 0, 'the access log has only 200 (and the deliberate 413) for POST /chat/');
}

is($t->backend_pid, $pid, 'the same backend served every request');
ok(kill(0, $pid) && waitpid($pid, POSIX::WNOHANG()) == 0, 'the backend is still running');
is_reply($t->post('{"message":"last"}'), 'received last', 'the backend still answers after the load');

$t->stop;
my @failed = $t->backend_log =~ /^(chat-fcgi: [45]\d\d .*)$/mg;
is_deeply(\@failed, [], 'the backend logged no failed request (the 413s were nginx\'s)');
like($t->backend_log, qr/exiting after \d+ requests/, 'the backend exited cleanly');
$t->done;

# --- the shipped config never pins the backend's threads ---------------------------------------

{
	# libfcgi gives each open connection a thread, even an idle one. With a
	# single thread, one idle connection kept by nginx would starve everybody
	# else; the snippet's fastcgi_keep_conn off must leave none behind.
	my $one = ChatTest->new(backend_args => ['--threads', '1']);
	for my $i (1 .. 5) {
		is($one->json($one->post(qq({"message":"through nginx $i"})))->{message},
			"received through nginx $i", "--threads 1: post $i through nginx");
	}
	my $s = FastCGI::connect_unix($one->socket);
	print $s FastCGI::request(FastCGI::chat_params(), '{"message":"direct"}');
	my $r = FastCGI::read_response($s, 2);
	close $s;
	is($r->{body}, '{"message":"received direct"}',
		'after them the only thread is free: nginx kept no idle connection');
	$one->done;
}

done_testing;
