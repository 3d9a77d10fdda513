#!/usr/bin/perl
# The instructions chat_respond() spends per request, counted by callgrind,
# stay within bench/budget: a count, not a time, so it holds on a busy
# machine. bench/budget says how to update it.

use strict;
use warnings;

use Test::More;
use ChatTest;

my $src = ChatTest::srcdir();
my $build = $ENV{CHAT_BUILDDIR} // $src;
my $driver = "$build/bench/request_cost";
use lib (ChatTest::srcdir() . '/bench');
use RequestCost;

plan(skip_all => 'valgrind not installed') unless RequestCost::valgrind();
BAIL_OUT("no $driver: run make first") unless -x $driver;
# Budgets are for an optimised build; a -O0 or sanitizer build (never CI's)
# would fail them for no fault of the code.
chomp(my $optimized = `"$driver" optimized`);
plan(skip_all => 'bench/request_cost is not an optimised build') unless $optimized eq 'yes';

my @cases = RequestCost::read_budget("$src/bench/budget");
ok(@cases >= 2, 'bench/budget has the small and the 64 KiB case');
for my $c (@cases) {
	my $ir = RequestCost::per_request($driver, $c->{body});
	my $bytes = RequestCost::body_bytes($c->{body});
	cmp_ok($ir, '<=', $c->{max},
		sprintf('%s (%d-byte body): %.0f instructions per request, budget %d',
			$c->{name}, $bytes, $ir, $c->{max}));
	# A budget far above the count no longer guards anything.
	diag(sprintf('%s costs %.0f, under half its budget %d: lower it (bench/run --cost)',
		$c->{name}, $ir, $c->{max}))
		if $ir < $c->{max} / 2;
}

# What is counted is the real answer, not an error path.
is(`"$driver" reply hello`, '{"message":"received hello"}', 'the driver answers the small request');
done_testing;
