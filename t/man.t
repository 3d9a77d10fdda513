#!/usr/bin/perl
# The man pages chat-fcgi(8) and chat-fcgi-supervise(8): each formats
# without a warning, man and lexgrog read it, and it has the sections an
# administrator looks for. chat-fcgi(8) documents every option --help
# prints (and none that --help does not), so an option added without its
# man page entry fails here; chat-fcgi-supervise(8) documents every
# environment variable and exit status of the script.

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
my $man = ChatTest::which('man');
my $lexgrog = ChatTest::which('lexgrog');

# Checks what every page must be, and returns it as a reader sees it:
# plain text, hyphens as hyphens.
sub page_text {
	my ($page, $name, @sections) = @_;
	my $roff = ChatTest::read_file($page);
	unlike($roff, qr/@[A-Z_]+@/, "$name: make filled every placeholder");

	my $warnings = `"$groff" -ww -z -man "$page" 2>&1`;
	is($?, 0, "$name: groff -ww formats it");
	is($warnings, '', '... without a warning');

	SKIP: {
		skip 'man not installed', 2 unless $man;
		my $out = `MANWIDTH=80 "$man" --warnings -l "$page" 2>&1 >/dev/null`;
		is($?, 0, "$name: man --warnings -l reads it");
		is($out, '', '... without a warning');
	}

	SKIP: {
		skip 'lexgrog not installed', 1 unless $lexgrog;
		my $out = `"$lexgrog" "$page" 2>&1`;
		like($out, qr/: "\Q$name\E - \S/, "$name: lexgrog finds its NAME line (for apropos and whatis)")
			or diag($out);
	}

	my $text = `"$groff" -man -rHY=0 -Tutf8 -P-cbou "$page" 2>/dev/null`;
	$text =~ s/\x{e2}\x{80}\x{90}/-/g;    # U+2010 HYPHEN
	for my $section (@sections) {
		like($text, qr/^\Q$section\E$/m, "$name: it has the section $section");
	}
	return $text;
}

## chat-fcgi(8)

my $text = page_text($page, 'chat-fcgi', 'NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS',
	'SIGNALS', 'EXIT STATUS', 'ENVIRONMENT', 'FILES', 'EXAMPLES', 'SEE ALSO');
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

## chat-fcgi-supervise(8), against the script it documents

my $sup_page = "$build/man/chat-fcgi-supervise.8";
BAIL_OUT("no $sup_page: run make first") unless -f $sup_page;
my $sup = page_text($sup_page, 'chat-fcgi-supervise', 'NAME', 'SYNOPSIS', 'DESCRIPTION',
	'OPTIONS', 'SIGNALS', 'EXIT STATUS', 'ENVIRONMENT', 'FILES', 'EXAMPLES', 'SEE ALSO');
my $script = ChatTest::read_file(ChatTest::srcdir() . '/conf/chat-fcgi-supervise');
my ($sup_env) = $sup =~ /^ENVIRONMENT\n(.*?)^\S/ms;
my %vars = map { $_ => 1 } $script =~ /\$\{(\w+):?-/g;
ok(keys %vars >= 2, 'found the variables the supervisor reads') or diag($script);
for my $var (sort keys %vars) {
	like($sup_env // '', qr/^ {7}\Q$var\E$/m, "chat-fcgi-supervise(8) ENVIRONMENT has $var");
}
my %codes = map { $_ => 1 } $script =~ /\bexit (\d+)/g;
ok(keys %codes >= 2, 'found the exit statuses of the supervisor') or diag($script);
for my $code (sort keys %codes) {
	like($sup, qr/^EXIT STATUS\n.*^ {7}$code\s/ms, "chat-fcgi-supervise(8) EXIT STATUS explains $code");
}
for my $word ('spawn-fcgi -n', 'SIGTERM', 'chat-fcgi(8)', '502', 'kill -9') {
	like($sup, qr/\Q$word\E/, "chat-fcgi-supervise(8) mentions $word");
}
my ($sup_synopsis) = $sup =~ /^SYNOPSIS\n(.*?)^\S/ms;
# A long installed path (make distcheck's) is broken across lines after a
# hyphen inside a word: join it, but not the "--" that ends a line.
($sup_synopsis //= '') =~ s/(?<=[^\s-])-\n\s+/-/g;
$sup_synopsis =~ s/\s+/ /g;
like($sup_synopsis, qr/chat-fcgi-supervise .* -- \S*chat-fcgi\b/s,
	'its SYNOPSIS: spawn-fcgi options, then -- and chat-fcgi');

done_testing;
