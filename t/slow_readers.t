#!/usr/bin/perl
# More event-stream readers than --threads, each reading a trickle from a
# room of large messages: other users' posts and reads keep answering
# within 1 s, and the backend's memory stays under a documented bound.
#
# An event stream is sent in parts of at most 256 KiB plus one entry, and a
# stream's next part is made only once the last one is written: a reader
# slower than the backlog just falls behind, holding no thread and at most
# about one part of memory. The bound here is 64 MiB of resident memory for
# the whole backend: 24 streams of one part each (under 400 KiB with these
# entries) come to about 9 MiB, and the rest is the process itself (SQLite's
# cache, the 300 posts' bodies freed but kept by malloc). A stream that
# made its whole backlog at once would hold 72 MB on its own, and one of
# 500 entries (a batch of the store) 60 MB.

use strict;
use warnings;

use IO::Select;
use POSIX qw(WNOHANG _exit);
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF inet_aton pack_sockaddr_in);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;

my $readers = 24;
my $read_secs = 15;
my $rss_bound_mib = 64;

my $t = ChatTest->new(rate_limit => 'off', backend_args => ['--threads', '2']);
my $pid = $t->backend_pid;

sub rss_kib {
	my ($kib) = ChatTest::read_file("/proc/$pid/status") =~ /^VmRSS:\s+(\d+) kB/m;
	return $kib // 0;
}

## A room of 300 large posts

# Each message is 60 KB of text that JSON escapes to twice its size ('"' as
# \", U+0001 as \u0001), so each of the room's 600 entries (the post and its
# reply) is about 120 KB in the stream. The posts go as forms, straight to
# the backend's socket, 20 at a time, their answers read side by side (each
# is 120 KB: read one by one, a backend writing to another could keep it
# waiting). A form carries the text as it is,
# where a JSON body would have to escape it too and could carry only half
# as much under --max-body (64 KiB).
my $unit = "\"\x01abcd";    # 6 bytes, 12 escaped
my $text = $unit x 10000;
{
	my @status;
	for my $batch (0 .. 14) {
		my @s;
		for my $i ($batch * 20 + 1 .. $batch * 20 + 20) {
			my $s = FastCGI::connect_unix($t->socket) // die "connect: $!";
			print $s FastCGI::request(FastCGI::chat_params(CONTENT_TYPE => 'application/x-www-form-urlencoded'),
				"room=big&client_id=big-$i&message=big+$i+$text");
			push @s, $s;
		}
		push @status, map { $_->{status} || 'none' } FastCGI::read_responses(\@s, 30);
		close $_ for @s;
	}
	is_deeply([grep { $_ ne '200' } @status], [], sprintf('300 posts of %d KB to room big: all 200', length($text) / 1000));
	my (undef, $j) = $t->messages('room=big&limit=1');
	is($j->{next}, 600, '... all stored: the room\'s last entry is 600');
	note(sprintf('the backend holds %.1f MiB before the readers', rss_kib() / 1024));
}

## Readers that trickle, and another user meanwhile

# Children, each reaped at the end: one samples the backend's VmRSS every
# 200 ms; one runs the readers in a select loop. Both stop when the parent
# closes its end of their pipe (or after 60 s) and print what they found.
sub child {
	my ($body) = @_;
	pipe(my $stop_rd, my $stop_wr) or die "pipe: $!";
	pipe(my $out_rd, my $out_wr) or die "pipe: $!";
	my $p = fork() // die "fork: $!";
	if ($p == 0) {
		close $stop_wr;
		close $out_rd;
		Test::More->builder->no_ending(1);
		$out_wr->autoflush(1);
		$body->($stop_rd, $out_wr);
		close $out_wr;
		_exit(0);
	}
	close $stop_rd;
	close $out_wr;
	return {pid => $p, stop => $stop_wr, out => $out_rd};
}

sub stopped { IO::Select->new($_[0])->can_read($_[1] // 0) }

my $sampler = child(sub {
	my ($stop, $out) = @_;
	my ($peak, $n) = (0, 0);
	my $t0 = time;
	until (stopped($stop, 0.2) || time - $t0 > 60) {
		my $kib = rss_kib();
		$peak = $kib if $kib > $peak;
		$n++;
	}
	print $out "$peak $n\n";
});

# Each reader: its own TCP connection to nginx with a 4 KiB receive buffer
# (set before connect, so the window is small from the start), reading at
# most 1 KiB a second. Prints "open" once all are connected and have sent
# their request, then at the end a line per reader: its status, the bytes
# it read, and whether the stream began with entry 1.
my $reading = child(sub {
	my ($stop, $out) = @_;
	my (@s, @got, @head, @t0);
	for my $i (0 .. $readers - 1) {
		socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
		setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096) or die "SO_RCVBUF: $!";
		connect($s, pack_sockaddr_in($t->port, inet_aton('127.0.0.1'))) or die "connect: $!";
		binmode $s;
		syswrite($s, "GET /chat/events?room=big&after=0 HTTP/1.1\r\nHost: localhost\r\n"
			. "Accept: text/event-stream\r\nConnection: close\r\n\r\n");
		($s[$i], $got[$i], $head[$i], $t0[$i]) = ($s, 0, '', time);
	}
	print $out "open\n";
	my %index = map { fileno($s[$_]) => $_ } 0 .. $#s;
	my %gone;
	my $t0 = time;
	until (stopped($stop) || time - $t0 > 60) {
		# A reader may read what its pace allows so far, a few hundred
		# bytes at least, at most 1 KiB at a time.
		my @due = grep { !$gone{$_} && 1024 * (time - $t0[$_]) - $got[$_] >= 256 } 0 .. $#s;
		my @ready = @due ? IO::Select->new(map { $s[$_] } @due)->can_read(0.05) : ();
		sleep 0.05 unless @due;
		for my $fh (@ready) {
			my $i = $index{ fileno $fh };
			my $may = int(1024 * (time - $t0[$i]) - $got[$i]);
			my $n = sysread($fh, my $buf, $may > 1024 ? 1024 : $may);
			if (!$n) { $gone{$i} = 1; next }
			$got[$i] += $n;
			$head[$i] .= $buf if length $head[$i] < 2048;
		}
	}
	for my $i (0 .. $#s) {
		my ($status) = $head[$i] =~ m{^HTTP/1\.1 (\d{3})};
		my $first = index($head[$i], qq(id: 1\nevent: message\ndata: {"seq":1,)) >= 0 ? 1 : 0;
		printf $out "%s %d %d %d\n", $status // 0, $got[$i], $first, $gone{$i} ? 1 : 0;
	}
	close $_ for @s;
});

my $out = $reading->{out};
is(scalar(<$out>) // '', "open\n", "$readers readers opened /chat/events?room=big&after=0 through nginx");

# Every 200 ms, for as long as the readers read: a stateless post, a post
# to another room and a read of that room, and a post to the readers' own
# room, which wakes their streams without writing to them (they make their
# next part once the last is written), each timed.
my (@took, @bad);
my $start = time;
my $tick = $start;
my $n = 0;
while (time - $start < $read_secs) {
	$n++;
	for my $req (['a stateless post', sub { $t->post(qq({"message":"meanwhile $n"}), timeout => 3) }],
		['a post to room other', sub { $t->post_room('other', "meanwhile $n", "other-$n", timeout => 3) }],
		['GET /chat/messages?room=other', sub { $t->request(path => '/chat/messages?room=other', timeout => 3) }],
		['a post to room big', sub { $t->post_room('big', "to the readers $n", "big-$n", timeout => 3) }])
	{
		my ($what, $send) = @$req;
		my $t0 = time;
		my $r = $send->();
		my $secs = time - $t0;
		push @took, $secs;
		push @bad, sprintf('%s at %.1f s: %s after %.1f s', $what, $t0 - $start, $r->{status} || 'no answer',
			$secs) if $r->{status} != 200;
	}
	$tick += 0.2;
	sleep($tick - time) if $tick > time;
}
close $_->{stop} for $reading, $sampler;
my @report = map { [split ' '] } readline($reading->{out});
my ($peak_kib, $samples) = split ' ', readline($sampler->{out}) // '0 0';
close $_->{out} for $reading, $sampler;
waitpid($_->{pid}, 0) for $reading, $sampler;

my ($slowest) = sort { $b <=> $a } @took;
is_deeply(\@bad, [], scalar(@took) . " requests by another user while the readers read: all 200");
cmp_ok($slowest, '<', 1 * ChatTest::slack(), sprintf('... each within 1 s (slowest %.0f ms)', $slowest * 1000));

is(scalar @report, $readers, 'each reader reported');
my @r = map { {n => $_ + 1, status => $report[$_][0], bytes => $report[$_][1], first => $report[$_][2],
	gone => $report[$_][3]} } 0 .. $#report;
note("bytes each reader read in $read_secs s: " . join ' ', map { $_->{bytes} } @r);
is_deeply([map { "reader $_->{n}: status $_->{status}" } grep { $_->{status} != 200 } @r], [],
	'... each stream answered 200');
is_deeply([map { "reader $_->{n}: $_->{bytes} bytes" } grep { $_->{bytes} < 5 * 1024 } @r], [],
	'... each read at least 5 KiB (a third of what its pace allows): the streams progress');
is_deeply([map { "reader $_->{n}" } grep { !$_->{first} } @r], [], '... each stream began with entry 1');
is_deeply([map { "reader $_->{n}" } grep { $_->{gone} } @r], [], '... and none was closed under it');

SKIP: {
	skip('a sanitized or valgrind backend\'s memory is no measure of its own', 1)
		if $ENV{CHAT_SANITIZED} || $ENV{CHAT_VALGRIND};
	note(sprintf('peak VmRSS of the backend: %.1f MiB (%d samples)', $peak_kib / 1024, $samples));
	cmp_ok($peak_kib / 1024, '<', $rss_bound_mib,
		sprintf('the backend\'s peak resident memory stays under %d MiB (%.1f MiB)', $rss_bound_mib, $peak_kib / 1024));
}

is($t->backend_pid, $pid, 'the backend is the process it was at the start');
ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0, '... still running');
$t->done;

done_testing;
