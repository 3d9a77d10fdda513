#!/usr/bin/perl
# The man page chat-fcgi(8): it formats without a warning, man and lexgrog
# read it, it has the sections an administrator looks for, and it documents
# every option --help prints (and none that --help does not), so an option
# added without its man page entry fails here.

use strict;
use warnings;

use Test::More;

use ChatTest;

my $build = $ENV{CHAT_BUILDDIR} // ChatTest::srcdir();
my $page = "$build/man/chat-fcgi.8";
my $bin = $ENV{CHAT_FCGI} // "$build/src/chat-fcgi";
BAIL_OUT("no $page: run make first") unless -f $page;
BAIL_OUT("no chat-fcgi at $bin") unless -x $bin;
my $groff = ChatTest::which('groff');
plan(skip_all => 'groff not installed') unless $groff;

my $roff = ChatTest::read_file($page);
unlike($roff, qr/@[A-Z_]+@/, 'make filled every placeholder');

my $warnings = `"$groff" -ww -z -man "$page" 2>&1`;
is($?, 0, 'groff -ww formats it');
is($warnings, '', '... without a warning');

SKIP: {
	my $man = ChatTest::which('man');
	skip 'man not installed', 2 unless $man;
	my $out = `MANWIDTH=80 "$man" --warnings -l "$page" 2>&1 >/dev/null`;
	is($?, 0, 'man --warnings -l reads it');
	is($out, '', '... without a warning');
}

SKIP: {
	my $lexgrog = ChatTest::which('lexgrog');
	skip 'lexgrog not installed', 1 unless $lexgrog;
	my $out = `"$lexgrog" "$page" 2>&1`;
	like($out, qr/: "chat-fcgi - \S/, 'lexgrog finds its NAME line (for apropos and whatis)')
		or diag($out);
}

# The page as a reader sees it: plain text, hyphens as hyphens.
my $text = `"$groff" -man -rHY=0 -Tutf8 -P-cbou "$page" 2>/dev/null`;
$text =~ s/\x{e2}\x{80}\x{90}/-/g;    # U+2010 HYPHEN
for my $section ('NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'SIGNALS', 'EXIT STATUS',
	'ENVIRONMENT', 'FILES', 'EXAMPLES', 'SEE ALSO')
{
	like($text, qr/^\Q$section\E$/m, "it has the section $section");
}
my ($options) = $text =~ /^OPTIONS\n(.*?)^\S/ms;
$options //= '';

# What --help prints: "-x, --name" per option.
my $help = `"$bin" --help`;
is($?, 0, 'chat-fcgi --help runs');
my @help = $help =~ /^\s+(-\w, --[\w-]+)/mg;
ok(@help >= 8, 'found the options in --help') or diag($help);
for my $opt (@help) {
	like($options, qr/^\s+\Q$opt\E\b/m, "the man page's OPTIONS has $opt");
}
my %in_help = map { $_ => 1 } @help;
my @documented = $options =~ /^ {7}(-\w, --[\w-]+)/mg;
for my $opt (@documented) {
	ok($in_help{$opt}, "$opt in the man page is an option --help knows");
}
for my $word ('SIGTERM', 'LISTEN_FDS', 'LISTEN_PID', 'spawn-fcgi', 'systemctl', 'include ',
	'/chat/health', '/chat/metrics')
{
	like($text, qr/\Q$word\E/, "it mentions $word");
}
for my $code (0, 1, 2) {
	like($text, qr/^EXIT STATUS\n.*^ {7}$code\s/ms, "EXIT STATUS explains $code");
}

done_testing;
