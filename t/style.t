#!/usr/bin/perl
# The C sources follow the repo's .clang-format.

use strict;
use warnings;

use Test::More;
use ChatTest;

my $src = ChatTest::srcdir();
my $clang_format = ChatTest::which('clang-format');
plan(skip_all => 'clang-format not installed') unless $clang_format;

my @files = (glob("$src/src/*.[ch]"), glob("$src/src/server/*.[ch]"), glob("$src/t/unit/*.[ch]"),
	glob("$src/fuzz/*.[ch]"), glob("$src/bench/*.[ch]"));
ok(@files > 10, 'found the C sources');
for my $f (@files) {
	my $out = `"$clang_format" --style=file --dry-run -Werror "$f" 2>&1`;
	(my $name = $f) =~ s{^\Q$src\E/}{};
	is($?, 0, "$name is formatted") or diag($out);
}
done_testing;
