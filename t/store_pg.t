# The store's unit tests (t/unit/store_test) again, on PostgreSQL: a private
# server from PgTest, the very same binary and cases as on SQLite. Then its
# reads while the server is down: store_test asks for PostgreSQL to be
# stopped and started again, and this does it.
use strict;
use warnings;
use lib 't/lib';
use IPC::Open2 qw(open2);
use Test::More;
use PgTest;

my $builddir = $ENV{CHAT_BUILDDIR} // '.';
my $bin = "$builddir/t/unit/store_test";
BAIL_OUT("no $bin: run make check (it builds the unit tests)") unless -x $bin;

my $pg = PgTest->new(fsync_off => 1);
local $ENV{CHAT_TEST_PG_HOST} = $pg->dir;
local $ENV{CHAT_TEST_PG_PORT} = $pg->port;

# Runs store_test with @args, its TAP passed on as tests of this file; on
# "# please stop PostgreSQL" (or start), does so and answers on its stdin.
# Returns how many tests it planned and ran.
sub run_store_test {
	my (@args) = @_;
	my $pid = open2(my $out, my $in, $bin, @args);
	my ($planned, $seen) = (undef, 0);
	while (my $line = <$out>) {
		chomp $line;
		if ($line =~ /^# please (stop|start) PostgreSQL$/) {
			$1 eq 'stop' ? $pg->stop('fast') : $pg->start;
			print $in "$1\n";
			$in->flush;
		} elsif ($line =~ /^(not )?ok \d+(?: - )?(.*)$/) {
			$seen++;
			ok(!$1, "PostgreSQL: $2");
		} elsif ($line =~ /^1\.\.(\d+)/) {
			$planned = $1;
		} elsif ($line =~ /^#/) {
			note($line);
		} else {
			diag($line);
		}
	}
	close $in;
	waitpid($pid, 0);
	is($?, 0, join(' ', 'store_test', @args, 'exits 0 on PostgreSQL'));
	return ($planned, $seen);
}

my ($planned, $seen) = run_store_test();
ok(defined $planned && $planned == $seen && $seen > 40,
	"it ran its whole plan ($seen of " . ($planned // '?') . ')');

($planned, $seen) = run_store_test('reads-while-down');
ok(defined $planned && $planned == $seen && $seen > 5,
	"reads-while-down ran its whole plan ($seen of " . ($planned // '?') . ')');
done_testing;
