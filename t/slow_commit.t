#!/usr/bin/perl
# With --threads 2 and the store's commit slowed (a flush that sleeps 6 ms),
# 200 concurrent stored posts all commit, and stateless requests meanwhile
# keep a p99 under 10 ms. A post waits for its commit without a thread, so a
# slow disk delays the posts that need it and nothing else.
#
# The slow disk is a small preload library, built here from the C below:
# its fdatasync and fsync sleep 6 ms, then call the real ones; each call
# also writes a byte to a file, so the test sees that the library is loaded
# and that commits go through it. --store-sync full makes every commit
# flush.

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Select;
use POSIX qw(WNOHANG _exit);
use Test::More;
use Time::HiRes qw(sleep time);

use ChatTest;
use FastCGI;

$| = 1;

my $lib_dir = tempdir('chat-fcgi-slow-sync-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});
my $cc = $ENV{CC} // 'cc';
plan(skip_all => "no C compiler ($cc) to build the preload library") unless ChatTest::which($cc) || -x $cc;

ChatTest::write_file("$lib_dir/slow_sync.c", <<'C');
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Opened before the backend's sandbox is in place; written to after. */
static int count_fd = -1;

__attribute__((constructor)) static void open_count(void)
{
	const char *path = getenv("SLOW_SYNC_COUNT");
	if (path)
		count_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

static void slow(void)
{
	struct timespec left = {0, 6 * 1000 * 1000};
	while (nanosleep(&left, &left) != 0)
		;
	if (count_fd >= 0 && write(count_fd, "s", 1) != 1)
		count_fd = -1;
}

int fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	slow();
	return real(fd);
}

int fsync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	slow();
	return real(fd);
}
C
my $so = "$lib_dir/slow_sync.so";
my $cc_out = `$cc -shared -fPIC -O2 -o '$so' '$lib_dir/slow_sync.c' -ldl 2>&1`;
is($?, 0, 'the preload library builds') or BAIL_OUT("$cc failed:\n$cc_out");

my $count_file = "$lib_dir/syncs";
my %env = (LD_PRELOAD => $so, SLOW_SYNC_COUNT => $count_file);
# AddressSanitizer wants its runtime first in the list of libraries and
# refuses to start otherwise; this library calls nothing it intercepts.
$env{ASAN_OPTIONS} = join ':', grep { length } $ENV{ASAN_OPTIONS} // '', 'verify_asan_link_order=0'
	if $ENV{CHAT_SANITIZED};

my $t = ChatTest->new(rate_limit => 'off', backend_env => \%env,
	backend_args => ['--threads', '2', '--store-sync', 'full']);
my $pid = $t->backend_pid;
my $slack = ChatTest::slack();

sub syncs { length ChatTest::read_file($count_file) }

like(ChatTest::read_file("/proc/$pid/maps"), qr{\Q$so\E}, 'the backend has the slow-flush library loaded');
my $before = syncs();
is($t->post_room('warm', 'first', 'warm-1')->{status}, 200, 'a first stored post');
my $per_post = syncs() - $before;
cmp_ok($per_post, '>=', 1, "... flushes through the library ($per_post calls, 6 ms each)");

# Stateless posts, one after another on one kept connection straight to the
# backend, from a child: it sends "ready" once connected, samples from "go"
# until "stop", then prints one latency (seconds) a line.
pipe(my $from_kid, my $to_parent) or die "pipe: $!";
pipe(my $from_parent, my $to_kid) or die "pipe: $!";
my $kid = fork() // die "fork: $!";
if ($kid == 0) {
	close $from_kid;
	close $to_kid;
	Test::More->builder->no_ending(1);
	$to_parent->autoflush(1);
	my $s = FastCGI::connect_unix($t->socket) or _exit(1);
	my $request = FastCGI::request(FastCGI::chat_params(), '{"message":"stateless"}', keep => 1);
	my $one = sub {
		my $t0 = time;
		print $s $request;
		my $r = FastCGI::read_response($s, 5 * $slack);
		return $r->{body} eq '{"message":"received stateless"}' ? time - $t0 : -1;
	};
	$one->() for 1 .. 20;    # warm: the connection, the thread, the page cache
	print $to_parent "ready\n";
	my $sel = IO::Select->new($from_parent);
	$sel->can_read(30);
	sysread($from_parent, my $go, 3);
	my @took;
	my $started = time;
	# Until "stop", and for 30 s at most.
	while (!$sel->can_read(0) && time - $started < 30) {
		push @took, $one->();
	}
	print $to_parent map { "$_\n" } @took;
	close $to_parent;
	_exit(0);
}
close $to_parent;
close $from_parent;
$to_kid->autoflush(1);
is(scalar(<$from_kid>), "ready\n", 'a client posting stateless messages, one after another, is connected');

# 200 room posts, each on its own connection, all sent at once.
my $n = 200;
my @s = map { FastCGI::connect_unix($t->socket) // die "connect: $!" } 1 .. $n;
my @bodies = map { qq({"message":"c$_","room":"commit","client_id":"cid-$_"}) } 1 .. $n;
my $syncs_before = syncs();
print $to_kid "go\n";
my $t0 = time;
print { $s[$_ - 1] } FastCGI::request(FastCGI::chat_params(), $bodies[$_ - 1]) for 1 .. $n;
my $deadline = $t0 + 30 * $slack;
my @status = map { $_->{status} || 'none' } FastCGI::read_responses(\@s, $deadline - time);
my $took = time - $t0;
print $to_kid "stop\n";
close $_ for @s;
my @latency = map { chomp; $_ } <$from_kid>;
close $from_kid;
waitpid($kid, 0);

is_deeply([grep { $_ ne '200' } @status], [], sprintf('%d room posts at once: all 200 (in %.2f s)', $n, $took));
note(sprintf('%d flushes of 6 ms for them', syncs() - $syncs_before));
my ($r, $j) = $t->messages('room=commit&after=0&limit=500');
my @user = grep { $_->{role} eq 'user' } @{ $j->{entries} // [] };
my %seen;
$seen{ $_->{client_id} // '' }++ for @user;
is(scalar @user, $n, "GET /chat/messages: $n user entries");
is_deeply([sort { $a <=> $b } map { /^cid-(\d+)$/ ? $1 : 0 } keys %seen], [1 .. $n], '... one for each post');
is_deeply([grep { $seen{$_} != 1 } sort keys %seen], [], '... each once');

my @failed = grep { $_ < 0 } @latency;
my @sorted = sort { $a <=> $b } grep { $_ >= 0 } @latency;
is(scalar @failed, 0, 'the stateless posts meanwhile were all answered');
cmp_ok(scalar @sorted, '>=', 50, 'at least 50 stateless posts were timed while the room posts were stored');
my $p = sub { @sorted ? $sorted[int($_[0] * $#sorted + 0.5)] * 1000 : 0 };
note(sprintf('stateless latencies while %d posts committed: %d samples, p50 %.2f ms, p99 %.2f ms, max %.2f ms',
	$n, scalar @sorted, $p->(0.5), $p->(0.99), $p->(1)));
cmp_ok($p->(0.99), '<', 10 * $slack, sprintf('... their p99 is under 10 ms (%.2f ms)', $p->(0.99)));

is($t->backend_pid, $pid, 'the backend is the process it was at the start');
ok(kill(0, $pid) && waitpid($pid, WNOHANG) == 0, '... still running');
$t->done;

done_testing;
