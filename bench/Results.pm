package Results;

# bench/RESULTS.md is written by several commands, each owning one part of
# it: bench/run the main part (from the top), bench/run --rooms the part
# under ROOMS, bench/cross-node the part under NODES,
# bench/store-compare the part under STORES. Each writer replaces
# its own part and keeps the others', so no run drops another's figures.
#
#   Results::replace_part("$bench/RESULTS.md", 'nodes', $markdown);
#
# Perl core modules only.

use strict;
use warnings;

# The heading that starts each part after the main one, in file order.
our @PARTS = (
	[rooms => '## Rooms (`bench/run --rooms`)'],
	[nodes => '## Across nodes (`bench/cross-node`'],
	[stores => '## PostgreSQL against SQLite (`bench/store-compare`'],
);

# The file's parts: { main => ..., rooms => ..., nodes => ... }, each
# present only when the file has it, each ending where the next begins.
sub read_parts {
	my ($path) = @_;
	my $text = '';
	if (open(my $fh, '<', $path)) {
		local $/;
		$text = <$fh> // '';
	}
	my $heads = join('|', map { quotemeta $_->[1] } @PARTS);
	my %name = map { $_->[1] => $_->[0] } @PARTS;
	my %part;
	for my $piece (split(/^(?=(?:$heads))/m, $text)) {
		my ($head) = grep { index($piece, $_->[1]) == 0 } @PARTS;
		$part{ $head ? $head->[0] : 'main' } = $piece;
	}
	return \%part;
}

# Writes PATH with part NAME set to TEXT (which, for a part other than main,
# starts with that part's heading) and every other part as it was.
sub replace_part {
	my ($path, $name, $text) = @_;
	my $part = read_parts($path);
	$part->{$name} = $text;
	$part->{main} //= "# chat-fcgi benchmark results\n\n";
	my $out = join('', map { my $p = $_; $p =~ s/\n*\z/\n\n/; $p }
		grep { defined } map { $part->{$_} } 'main', map { $_->[0] } @PARTS);
	$out =~ s/\n+\z/\n/;
	open(my $fh, '>', "$path.tmp") or die "$path.tmp: $!\n";
	print $fh $out or die "$path.tmp: $!\n";
	close $fh or die "$path.tmp: $!\n";
	rename("$path.tmp", $path) or die "$path: $!\n";
	return;
}

1;
