package EventStream;

# A text/event-stream read as a browser's EventSource reads it, over a raw
# socket, one event at a time:
#
#   my $es = EventStream->open($t, '/chat/events?room=r', ['Last-Event-ID' => 4]);
#   is($es->status, 200);
#   my $ev = $es->next(5);   # {id, event, data, comments => [...]}, or undef
#   ok($es->ended);          # the server finished the response cleanly
#
# The HTTP head is parsed, the chunked body taken apart as it arrives, and
# the events split on blank lines (LF, CR or CRLF line ends, as the spec
# allows). Comments (": ...") and retry: are kept on the event they precede
# and in ->comments / ->retry.

use strict;
use warnings;

use IO::Socket::INET;
use Time::HiRes qw(time);

sub open {
	my ($class, $t, $path, $headers, %o) = @_;
	my $s = $t->begin_request(method => $o{method} // 'GET', path => $path,
		headers => [Accept => 'text/event-stream', @{ $headers // [] }],
		defined $o{body} ? (body => $o{body}) : ());
	my $self = bless {sock => $s, raw => '', body => '', text => '', head => undef,
		status => 0, headers => {}, ended => 0, eof => 0, comments => [], retry => undef},
		$class;
	$self->_fill($o{timeout} // 10) until $self->{head} || $self->{eof} || $self->{late};
	return $self;
}

sub status   { $_[0]{status} }
sub headers  { $_[0]{headers} }
sub header   { $_[0]{headers}{ lc $_[1] } }
sub ended    { $_[0]{ended} }      # the terminating chunk arrived
sub eof      { $_[0]{eof} }        # the connection closed
sub comments { $_[0]{comments} }
sub retry    { $_[0]{retry} }
sub body     { $_[0]{body} }       # everything after the head, de-chunked
sub sock     { $_[0]{sock} }

sub close {
	my ($self) = @_;
	CORE::close($self->{sock}) if $self->{sock};
	$self->{sock} = undef;
}

# Reads what arrives within timeout seconds (at least one read attempt);
# false when nothing came.
sub _fill {
	my ($self, $timeout) = @_;
	return 0 if $self->{eof} || !$self->{sock};
	my $deadline = time + $timeout;
	my $rin = '';
	vec($rin, fileno($self->{sock}), 1) = 1;
	for (;;) {
		my $left = $deadline - time;
		if ($left <= 0) { $self->{late} = 1; return 0 }
		my $n = select(my $rout = $rin, undef, undef, $left);
		next unless $n > 0;
		my $got = sysread($self->{sock}, my $buf, 65536);
		if (!$got) { $self->{eof} = 1; return 0 }
		$self->{raw} .= $buf;
		$self->_parse;
		return 1;
	}
}

sub _parse {
	my ($self) = @_;
	if (!$self->{head}) {
		my $i = index($self->{raw}, "\r\n\r\n");
		return if $i < 0;
		$self->{head} = substr($self->{raw}, 0, $i);
		$self->{raw} = substr($self->{raw}, $i + 4);
		($self->{status}) = $self->{head} =~ m{^HTTP/1\.[01] (\d{3})};
		for my $line (split /\r\n/, $self->{head}) {
			next unless $line =~ /^([^:]+):\s*(.*)$/;
			$self->{headers}{ lc $1 } = $2;
		}
		$self->{chunked} = ($self->{headers}{'transfer-encoding'} // '') =~ /chunked/i;
	}
	if (!$self->{chunked}) {
		$self->{body} .= $self->{raw};
		$self->{text} .= $self->{raw};
		$self->{raw} = '';
		return;
	}
	while ($self->{raw} =~ /^([0-9a-fA-F]+)\r\n/) {
		my ($len_line, $n) = ($&, hex $1);
		if ($n == 0) {
			$self->{ended} = 1;
			$self->{raw} = '';
			return;
		}
		last if length($self->{raw}) < length($len_line) + $n + 2;
		my $data = substr($self->{raw}, length($len_line), $n);
		substr($self->{raw}, 0, length($len_line) + $n + 2, '');
		$self->{body} .= $data;
		$self->{text} .= $data;
	}
}

# The next event (a hash: id, event, data, comments), or undef when none
# came within timeout seconds or the stream ended.
sub next {
	my ($self, $timeout) = @_;
	my $deadline = time + ($timeout // 10);
	for (;;) {
		if ($self->{text} =~ /\A(.*?)(?:\r\n|\r|\n)(?:\r\n|\r|\n)/s) {
			my $block = $1;
			substr($self->{text}, 0, length $&, '');
			my %ev = (comments => []);
			for my $line (split /\r\n|\r|\n/, $block) {
				if ($line =~ /^:\s?(.*)$/) {
					push @{ $ev{comments} }, $1;
					push @{ $self->{comments} }, $1;
					next;
				}
				my ($field, $value) = $line =~ /^([^:]*)(?::\s?(.*))?$/;
				$value //= '';
				if ($field eq 'data') {
					$ev{data} = defined $ev{data} ? "$ev{data}\n$value" : $value;
				} elsif ($field eq 'retry') {
					$self->{retry} = $value;
					$ev{retry} = $value;
				} else {
					$ev{$field} = $value;
				}
			}
			return \%ev if defined $ev{data};
			next;    # a block of comments or retry only: keep reading
		}
		return undef if $self->{ended} || $self->{eof};
		my $left = $deadline - time;
		return undef if $left <= 0;
		$self->_fill($left);
	}
}

# Comments and events until timeout: returns the events read (comments land
# in ->comments).
sub drain {
	my ($self, $timeout) = @_;
	my @ev;
	my $deadline = time + $timeout;
	while (time < $deadline) {
		my $ev = $self->next($deadline - time) or last;
		push @ev, $ev;
	}
	return @ev;
}

1;
