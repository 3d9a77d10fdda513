#!/usr/bin/perl
# A large message costs a few system calls, not one per 8 KiB: its body
# comes off the socket in a read or two (src/server/intake.c takes up to
# 72 KiB at once), the answer and the end of the request go out in one
# writev (src/server/output.c), and the memory a request
# used is kept for the next rather than given back to the kernel after each
# one (a brk or madvise, a TLB flush, then page faults). Counted by strace
# on the backend's side of the connection; bench/run measures the time.

use strict;
use warnings;

use Test::More;

plan(skip_all => "LeakSanitizer cannot run under strace (ptrace); the plain and distcheck passes run this") if $ENV{CHAT_SANITIZED};

use ChatTest;
use FastCGI;

my $strace = ChatTest::which('strace', '/usr/bin');
plan(skip_all => 'strace not installed (./dev check installs it)') unless $strace;
system("\"$strace\" -qq -o /dev/null true >/dev/null 2>&1") == 0
	or plan(skip_all => 'strace cannot trace here (ptrace not permitted)');

my $t = ChatTest->new(no_nginx => 1, strace => $strace, backend_args => ['--threads', '4']);

my $text = join('', map { chr(97 + $_ % 26) } 1 .. 65_536 - length('{"message":""}'));
my $body = qq({"message":"$text"});
is(length $body, 65_536, 'a body of 65,536 bytes');
my $request = FastCGI::request(FastCGI::chat_params(), $body, keep => 1);

# $n rounds of a request on each of @s at once (each written by one write,
# as nginx does, then the answers read); whether all were answered with
# the message.
sub exchange {
	my ($n, $what, @s) = @_;
	my $good = 0;
	for (1 .. $n) {
		syswrite($_, $request) == length $request or last for @s;
		for (@s) {
			my $r = FastCGI::read_response($_, 20);
			$good++ if ($r->{status} // 0) == 200 && $r->{body} eq qq({"message":"received $text"});
		}
	}
	is($good, $n * @s, "$what: all answered with the message");
}

sub connections {
	return map { FastCGI::connect_unix($t->socket) or die "connect: $!" } 1 .. $_[0];
}

# Four at once, as under load: the threads' buffers are freed together.
my @warm = connections(4);
exchange(3, 'warming up', @warm);
my @counted = connections(4);
exchange(5, 'counted', @counted);
# Another connection's accept ends the counted part of the trace.
my @last = connections(1);
exchange(1, 'after', @last);
close $_ for @warm, @counted, @last;
$t->stop_backend;
my $deadline = time + 10;
sleep 1 until ChatTest::read_file($t->trace_log) =~ /\+\+\+ exited with/ || time > $deadline;

# The lines from the first counted connection's accept to the last
# connection's (the socket's probe at start may come before); a call cut by
# another thread's is counted on its first line ("<unfinished ...>").
my @lines = split /\n/, ChatTest::read_file($t->trace_log);
my @accepts = grep { $lines[$_] =~ /\baccept4(?:\(| resumed>).*\)\s+= \d+$/ } 0 .. $#lines;
ok(@accepts >= 9, 'strace saw the nine connections accepted')
	or diag(ChatTest::read_file($t->trace_log));
my %fd = @accepts >= 9 ? map { ($lines[$_] =~ /= (\d+)$/)[0] => 1 } @accepts[-5 .. -2] : ();
# Given back: a madvise or munmap, or a brk below the one before (a brk
# above it only grows the heap).
my (%n, @given, $break);
for my $i (0 .. ($accepts[-1] // -1)) {
	my $l = $lines[$i];
	my $in = @accepts >= 9 && $i > $accepts[-5];
	if ($l =~ /^\d+\s+brk\((0x[0-9a-f]+)/) {
		my $to = do { no warnings "portable"; hex $1 };
		push @given, $l if $in && defined $break && $to < $break;
		$break = $to;
	}
	next unless $in;
	$n{$1}++ if $l =~ /^\d+\s+(read|recvfrom|write|writev)\((\d+),/ && $fd{$2};
	push @given, $l if $l =~ /^\d+\s+(madvise|munmap)\(/;
}
my $reads = ($n{read} // 0) + ($n{recvfrom} // 0);
my $writes = ($n{write} // 0) + ($n{writev} // 0);
ok($reads >= 20 && $reads <= 60,
	"20 bodies of 65,536 bytes: $reads reads (at most 3 a request; libfcgi alone makes 9)");
ok($writes >= 20 && $writes <= 40, "20 answers: $writes writes (at most 2 a request)");
is(scalar @given, 0, 'no memory given back to the kernel between requests (brk, madvise, munmap)')
	or diag(join("\n", @given));

$t->done;
done_testing;
