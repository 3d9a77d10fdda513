package RequestCost;

# Instructions per request of chat_respond(), counted by callgrind: the
# driver bench/request_cost answers one body N times; two runs with
# different N, subtracted, leave the cost of the extra requests alone
# (start-up, json-c's and libc's initialisation cancel out). The count does
# not depend on the machine's load, so the suite can guard it (t/cost.t).
#
#   my $ir = RequestCost::per_request($driver, 'hello');   # or a size: '64K'
#   my %budget = RequestCost::read_budget("$src/bench/budget");
#
# Perl core modules only: bench/run uses it too.

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX ();

# Requests in the short and the long run of each case: enough that the
# difference dwarfs any start-up jitter, few enough that a 64 KiB body
# stays under a second of callgrind.
our %RUNS = (hello => [20, 220], default => [2, 12]);

sub valgrind {
	for my $d (split(/:/, $ENV{PATH} // ''), '/usr/bin') {
		return "$d/valgrind" if -x "$d/valgrind";
	}
	return undef;
}

# Total instructions of one run of the driver, or dies with the reason.
sub instructions {
	my ($driver, $body, $n) = @_;
	my $vg = valgrind() or die "valgrind is not installed\n";
	my $dir = tempdir('chat-fcgi-cost-XXXXXX', TMPDIR => 1, CLEANUP => 1);
	my $out = "$dir/callgrind.out";
	my $log = "$dir/valgrind.log";
	my $pid = fork() // die "fork: $!\n";
	if ($pid == 0) {
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>', $log);
		open(STDERR, '>&', \*STDOUT);
		exec($vg, '--tool=callgrind', "--callgrind-out-file=$out", $driver, 'run', $body, $n)
			or POSIX::_exit(127);
	}
	waitpid($pid, 0);
	my $status = $?;
	my $text = slurp($log);
	die "callgrind of $driver run $body $n failed (status $status):\n$text" if $status != 0;
	my ($total) = slurp($out) =~ /^summary:\s*(\d+)/m
		or die "no summary line in callgrind's output for $body $n\n";
	return $total;
}

sub per_request {
	my ($driver, $body) = @_;
	my ($short, $long) = @{ $RUNS{$body} // $RUNS{default} };
	my $a = instructions($driver, $body, $short);
	my $b = instructions($driver, $body, $long);
	die "callgrind: $long requests cost no more than $short\n" if $b <= $a;
	return ($b - $a) / ($long - $short);
}

# The size in bytes of a body spec ('hello' is {"message":"hello"}).
sub body_bytes {
	my ($body) = @_;
	return length('{"message":"hello"}') if $body eq 'hello';
	my ($n, $unit) = $body =~ /^(\d+)([KM]?)$/i or die "bad body size $body\n";
	return $n * ({ '' => 1, k => 1024, m => 1024 * 1024 }->{ lc $unit });
}

# bench/budget: "NAME BODY INSTRUCTIONS" lines; # starts a comment.
sub read_budget {
	my ($path) = @_;
	my @cases;
	for my $line (split /\n/, slurp($path)) {
		$line =~ s/#.*//;
		next unless $line =~ /\S/;
		my ($name, $body, $max) = split ' ', $line;
		die "$path: bad line: $line\n" unless defined $max && $max =~ /^\d+$/;
		push @cases, { name => $name, body => $body, max => $max };
	}
	return @cases;
}

sub slurp {
	my ($path) = @_;
	open(my $fh, '<', $path) or die "$path: $!\n";
	local $/;
	return scalar <$fh>;
}

1;
