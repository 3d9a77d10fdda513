#!/usr/bin/perl
# A confined backend reconnects to PostgreSQL by a host name with two
# addresses. The store is named chat-db.test, which resolves to both
# 127.0.0.1 and ::1 in an /etc/hosts of the backend's own: it runs under
# unshare --mount with a private file bind-mounted there, so the machine's
# file is never touched. glibc sorts two or more addresses (RFC 6724) and
# asks the kernel for the machine's addresses over a netlink socket to do
# so; libpq resolves the name again at every connect, and the LISTEN thread
# connects again every 200 ms while PostgreSQL is down. PostgreSQL is
# stopped and started again while posts go on: the posts resume, and the
# backend is the very process that started, confined all along, and ends
# with exit 0 on SIGTERM.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use IO::Socket::IP;
use POSIX qw(WNOHANG _exit);
use Test::More;
use Time::HiRes qw(time sleep);

use ChatTest;
use PgTest;

$| = 1;

my $unshare = ChatTest::which('unshare', '/usr/bin', '/bin');
my $mount = ChatTest::which('mount', '/usr/bin', '/bin');
plan(skip_all => 'unshare or mount not installed (Debian package util-linux)')
	unless $unshare && $mount;
plan(skip_all => 'unshare --mount needs root (a mount namespace of its own)')
	unless system("\"$unshare\" --mount true >/dev/null 2>&1") == 0;
plan(skip_all => 'no IPv6 loopback address (::1) to listen on')
	unless IO::Socket::IP->new(LocalHost => '::1', LocalPort => 0, Listen => 1);

# Whether the backend runs under the filter comes from the build: sanitizer
# builds run unconfined (src/sandbox.h).
my $confined = !$ENV{CHAT_SANITIZED};
my $name = 'chat-db.test';

my $hosts_dir = tempdir('chat-hosts-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});
my $hosts = "$hosts_dir/hosts";
ChatTest::write_file($hosts, "127.0.0.1 localhost\n::1 localhost\n"
	. "127.0.0.1 $name\n::1 $name\n");
# unshare(1) runs the command in its own process, and so do sh's exec and
# the backend: the pid the test holds is chat-fcgi's. A mount namespace
# of its own starts with private propagation, so the bind mount stays in it.
my @wrap = ($unshare, '--mount', '--', 'sh', '-c',
	'mount --bind "$0" /etc/hosts && exec "$@"', $hosts);

{
	my $seen = `@{[join ' ', map { "'$_'" } @wrap]} getent ahosts $name 2>&1`;
	like($seen, qr/^127\.0\.0\.1\s/m, "inside the namespace, $name resolves to 127.0.0.1")
		or diag($seen);
	like($seen, qr/^::1\s/m, '... and to ::1');
	unlike(ChatTest::read_file('/etc/hosts'), qr/\Q$name\E/,
		"... and the machine's /etc/hosts does not name it");
}

my $pg = PgTest->new(ipv6 => 1, fsync_off => 1);
my $db = $pg->createdb('reconnect');
my $t = ChatTest->new(wrap => \@wrap, rate_limit => 'off', backend_args => ['--store',
	"postgresql://postgres\@$name:" . $pg->port . "/$db?sslmode=disable"]);
my $pid = $t->backend_pid;

# How the process stands, from /proc: its program and its filter mode.
sub seccomp_mode {
	my ($mode) = ChatTest::read_file("/proc/$pid/status") =~ /^Seccomp:\s+(\d+)/m;
	return $mode // 'none';
}
is(readlink("/proc/$pid/exe"), abs_path($t->bin), 'the pid the test holds is chat-fcgi itself');
is(seccomp_mode(), $confined ? 2 : 0, $confined
	? 'the backend is under its seccomp filter (Seccomp: 2)'
	: 'a sanitizer build runs unconfined (Seccomp: 0)');
is($t->post_room('lobby', 'before', undef)->{status}, 200, 'a post before the restart: 200');
like($pg->psql($db, "SELECT string_agg(DISTINCT client_addr::text, ' ') FROM pg_stat_activity"
	. " WHERE application_name = 'chat-fcgi'") // '', qr/^(::1|127\.0\.0\.1)(\/\d+)?$/,
	"its sessions came over TCP by the name's addresses");

# Posts go on from three clients; each writes the time of every answered
# post, until told to stop.
my $stop = $t->dir . '/stop';
my @kids;
for my $c (1 .. 3) {
	my $kid = fork() // die "fork: $!";
	if ($kid == 0) {
		open(my $fh, '>', $t->dir . "/answered.$c") or _exit(2);
		my $end = time + 60;
		for (my $i = 0; !-e $stop && time < $end; $i++) {
			my $r = $t->post_room('load', "c$c m$i", "c$c-$i", timeout => 10);
			if ($r->{status} == 200) {
				printf $fh "%.3f\n", time;
				$fh->flush;
			} else {
				sleep 0.05;
			}
		}
		close $fh;
		_exit(0);
	}
	push @kids, $kid;
}

sleep 1;
my $down = time;
$pg->stop('fast');
# Long enough for the LISTEN thread to try again several times, each time
# resolving the name.
sleep 1.5;
$pg->start;
my $up = time;
my ($back, $ended);
my $deadline = $up + 15;
while (time < $deadline) {
	last if ($back = $t->post_room('lobby', 'after', undef, timeout => 5)->{status} == 200);
	if (waitpid($pid, WNOHANG) == $pid) {
		$ended = $?;
		last;
	}
	sleep 0.2;
}
sleep 0.5;
ChatTest::write_file($stop, '');
waitpid($_, 0) for @kids;

my @times = map { split /\n/, ChatTest::read_file($t->dir . "/answered.$_") } 1 .. 3;
cmp_ok(scalar(grep { $_ < $down } @times), '>', 0, 'posts were answered before PostgreSQL stopped');
ok($back, 'after PostgreSQL started again, posts are answered again');
cmp_ok(scalar(grep { $_ > $up } @times), '>', 0, '... the clients\' posts too ('
	. scalar(grep { $_ > $up } @times) . ')');

$ended = $? if !defined $ended && waitpid($pid, WNOHANG) == $pid;
ok(!defined $ended, 'the backend is the same process, still running')
	or diag('it ended: ' . (($ended & 127) ? 'killed by signal ' . ($ended & 127)
		. (($ended & 127) == 31 ? ' (SIGSYS: the seccomp filter)' : '')
		: 'exit ' . ($ended >> 8)));
SKIP: {
	skip('the backend is gone', 3) if defined $ended;
	is(seccomp_mode(), $confined ? 2 : 0, '... and as confined as it started');
	# Every session of the restarted server is new: the backend connected
	# again, by the name.
	like($pg->psql($db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chat-fcgi'"
		. " AND client_addr IS NOT NULL") // '', qr/^[1-9]/,
		'... and connected again over TCP');
	my ($status) = $t->signal_backend('TERM');
	is($status, 0, 'SIGTERM ends it with exit 0');
}
delete $t->{backend} if defined $ended;
unlike($t->backend_log, qr/sandbox:/, 'no sandbox error in the log');
$t->done(backend_was_down => defined $ended);
done_testing;
