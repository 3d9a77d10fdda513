#!/usr/bin/perl
# bench/run --smoke and bench/store-compare --smoke: the benchmarks run end to end (wrk against nginx's own
# answer and against chat-fcgi, the 64 KiB round, the callgrind counts) and
# counts no error. No figure is judged here: the machine may be busy.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

plan(skip_all => "a benchmark of a sanitized build measures the sanitizers; the plain and distcheck passes run this") if $ENV{CHAT_SANITIZED};
use ChatTest;

my $src = ChatTest::srcdir();
my $build = $ENV{CHAT_BUILDDIR} // $src;
my $backend = $ENV{CHAT_FCGI} // "$build/src/chat-fcgi";
my $driver = "$build/bench/request_cost";
for my $tool (qw(wrk valgrind nginx spawn-fcgi sqlite3)) {
	plan(skip_all => "$tool not installed")
		unless ChatTest::which($tool, '/usr/sbin', '/sbin', '/usr/bin');
}
BAIL_OUT("no $driver: run make first") unless -x $driver;
# A failed run keeps its directory for a look: keep it inside ours.
$ENV{TMPDIR} = tempdir('chat-fcgi-t-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});

# The test build stands in for the release one, which bench/run would
# otherwise build into the source tree (read-only under distcheck).
sub bench {
	my (@args) = @_;
	my $out = `"$^X" "$src/bench/run" --smoke --backend "$backend" --driver "$driver" @args 2>&1`;
	return ($? >> 8, $out);
}

my ($status, $out) = bench();
is($status, 0, 'bench/run --smoke exits 0: everything ran, no error counted') or diag($out);
for my $title ('POST {"message":"hello"}', 'A 64 KiB message', 'Instructions per request') {
	like($out, qr/^### \Q$title\E/m, "the report has the table: $title");
}
# Each load row: target, load, conns, req/s, p50, p99, p99/p50, errors 0, ...
my $num = qr/\d+(?:\.\d+)?/;
for my $target ('reference', 'chat-fcgi', 'floor') {
	like($out, qr/^\| \Q$target\E \| round 1 \| 8 \| [1-9]\d* \| $num \| $num \| $num \| 0 \|/m,
		"$target served requests with no error");
}
# The floor (bench/floor) is measured as a backend: its own CPU per request
# and memory, a ratio to the round's reference, and the summary sets
# chat-fcgi's CPU against it.
like($out, qr/^\| floor \| round 1 \| 8 \|(?: [^|]+ \|){6} $num \| $num \| $num \|(?: [^|]+ \|){2}$/m,
	'the floor row has its own backend CPU, memory and ratio');
like($out, qr/^  the floor: median ratio $num, .* backend CPU-µs\/request $num \(chat-fcgi's: $num× that\)$/m,
	'the summary compares the backend CPU with the floor\'s');
like($out, qr/^\| floor \| 64 KiB \| 8 \| [1-9]\d* \|(?: [^|]+ \|){3} 0 \|/m,
	'the floor answered the 64 KiB round too, with no error');
like($out, qr/^\| chat-fcgi \| round 1 \| 8 \|(?: [^|]+ \|){8} $num \| $num \| $num \|$/m,
	'the backend row has a ratio to the reference');
like($out, qr/^\| chat-fcgi \| 64 KiB \| 8 \| [1-9]\d* \|/m, 'the 64 KiB round served requests');
like($out, qr/^\| 64 KiB message \| 65536 \| [1-9]\d* \| $num \|/m,
	'the 64 KiB callgrind count, with instructions per byte');

# The rooms' measurements (--rooms): stored against stateless posts, the
# fan-out to long-pollers (bench/fanout), the poll cost over filled
# databases; each counts its errors, and the run exits 1 on any.
($status, $out) = bench('--rooms');
is($status, 0, 'bench/run --rooms --smoke exits 0: everything ran, no error counted')
	or diag($out);
for my $title ('Stored posts against stateless posts', 'Fan-out: 50 long-pollers in one room',
	'Fan-out: 50 event streams in one room', 'Poll cost against stored entries') {
	like($out, qr/^#### \Q$title\E/m, "the rooms report has the table: $title");
}
for my $target ('stateless', 'stored', '1000 entries', '10000 entries') {
	like($out, qr/^\| \Q$target\E \| round 1 \| 8 \| [1-9]\d* \| $num \| $num \| $num \| 0 \|/m,
		"rooms: $target served requests with no error");
}
like($out, qr/^\| long-pollers open at once \(backend metrics\) \| 50 \|$/m, 'all 50 polls were held');
like($out, qr/^\| event streams open at once \(backend metrics\) \| 50 \|$/m,
	'all 50 event streams were open');
my @deliveries = $out =~ /^\| deliveries \(posts × pollers\) \| ([1-9]\d*) \|$/mg;
is(scalar @deliveries, 2, 'posts reached the pollers and the streams');
my @clean = $out =~ m{^\| errors: failed polls / missing / duplicated / busy / failed posts \| 0 / 0 / 0 / 0 / 0 \|$}mg;
is(scalar @clean, 2, 'both fan-outs counted no error');

# A backend that cannot answer the benchmark's bodies makes the run fail
# before any figure is taken, and says why.
($status, $out) = bench('--backend-arg=--max-body=1000');
is($status, 1, 'a backend answering 413 fails the run');
like($out, qr/backend answered 64K with 413/, '... and the reason is shown');

# bench/store-compare --smoke: stored posts on SQLite and on a private
# PostgreSQL, through nginx, both without an error.
SKIP: {
	skip 'built without PostgreSQL', 5 if ($ENV{CHAT_POSTGRESQL} // '') eq '0';
	my $cmp = `"$^X" "$src/bench/store-compare" --smoke --backend "$backend" 2>&1`;
	is($?, 0, 'bench/store-compare --smoke exits 0') or diag($cmp);
	for my $store ('SQLite', 'PostgreSQL') {
		like($cmp, qr/^\| 1 \| \Q$store\E \| [1-9]\d* \| $num \| $num \| 0 \|/m,
			"it stored posts on $store with no error");
	}

	# bench/cross-node --smoke: event streams on one node, posts to another,
	# one PostgreSQL: every post reaches every stream once.
	my $fanout = "$build/bench/fanout";
	my $x = `"$^X" "$src/bench/cross-node" --smoke --backend "$backend" --fanout "$fanout" 2>&1`;
	is($?, 0, 'bench/cross-node --smoke exits 0') or diag($x);
	like($x, qr{^\| errors: failed / missing / duplicated / busy / failed posts \| 0 / 0 / 0 / 0 / 0 \|$}m,
		'... every post reached every stream on the other node once');
}

# bench/Results.pm: each writer of RESULTS.md replaces its own part and
# keeps the others', whichever runs last.
{
	no warnings q(once);    # @Results::PARTS is loaded at run time
	require "$src/bench/Results.pm";
	my $slurp = sub { open(my $fh, '<', $_[0]) or die "$_[0]: $!"; local $/; scalar <$fh> };
	my $file = "$ENV{TMPDIR}/RESULTS.md";
	my ($rooms, $nodes) = map { $_->[1] } @Results::PARTS;
	Results::replace_part($file, main => "# results\n\nmain 1\n");
	Results::replace_part($file, nodes => "$nodes, x)\n\nnodes 1\n");
	Results::replace_part($file, rooms => "$rooms\n\nrooms 1\n");
	is($slurp->($file), "# results\n\nmain 1\n\n$rooms\n\nrooms 1\n\n$nodes, x)\n\nnodes 1\n",
		'RESULTS.md: the main part, then rooms, then across nodes, whatever order they were written');
	Results::replace_part($file, main => "# results\n\nmain 2\n");
	like($slurp->($file), qr/main 2\n.*rooms 1\n.*nodes 1\n\z/s, 'a new main part keeps rooms and nodes');
	Results::replace_part($file, nodes => "$nodes, y)\n\nnodes 2\n");
	like($slurp->($file), qr/\A# results\n\nmain 2\n.*rooms 1\n.*nodes 2\n\z/s,
		'a new nodes part keeps the others');
	unlike($slurp->($file), qr/nodes 1|main 1/, 'and the old parts are gone');
	my ($stores) = map { $_->[1] } grep { $_->[0] eq 'stores' } @Results::PARTS;
	Results::replace_part($file, stores => "$stores, z)\n\nstores 1\n");
	Results::replace_part($file, rooms => "$rooms\n\nrooms 2\n");
	like($slurp->($file), qr/\A# results\n\nmain 2\n.*rooms 2\n.*nodes 2\n.*stores 1\n\z/s,
		'bench/store-compare\'s part comes last, and stays when another is written');
}
done_testing;
