# The store's unit tests (t/unit/store_test) again, on PostgreSQL: a private
# server from PgTest, the very same binary and cases as on SQLite.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use PgTest;

my $builddir = $ENV{CHAT_BUILDDIR} // '.';
my $bin = "$builddir/t/unit/store_test";
BAIL_OUT("no $bin: run make check (it builds the unit tests)") unless -x $bin;

my $pg = PgTest->new(fsync_off => 1);
local $ENV{CHAT_TEST_PG_HOST} = $pg->dir;
local $ENV{CHAT_TEST_PG_PORT} = $pg->port;
open(my $fh, '-|', $bin) or die "$bin: $!";
my ($planned, $seen) = (undef, 0);
while (my $line = <$fh>) {
	chomp $line;
	if ($line =~ /^(not )?ok \d+(?: - )?(.*)$/) {
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
close $fh;
is($?, 0, 'store_test exits 0 on PostgreSQL');
ok(defined $planned && $planned == $seen && $seen > 40,
	"it ran its whole plan ($seen of " . ($planned // '?') . ')');
done_testing;
