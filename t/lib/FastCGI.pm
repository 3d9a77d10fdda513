package FastCGI;

# Raw FastCGI records (the FastCGI 1.0 specification), to talk to chat-fcgi
# without nginx: whole requests, requests cut short, or malformed records.
#
#   my $s = FastCGI::connect_unix($path);
#   print $s FastCGI::request({REQUEST_METHOD => 'POST', ...}, $body);
#   my $r = FastCGI::read_response($s);   # {status, headers, body, ended}

use strict;
use warnings;

use IO::Socket::IP;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);

use constant {
	BEGIN_REQUEST => 1,
	ABORT_REQUEST => 2,
	END_REQUEST   => 3,
	PARAMS        => 4,
	FCGI_STDIN    => 5,
	FCGI_STDOUT   => 6,
	FCGI_STDERR   => 7,
	GET_VALUES    => 9,
	GET_VALUES_RESULT => 10,
	UNKNOWN_TYPE  => 11,
	CANT_MPX_CONN => 1,
	RESPONDER     => 1,
	KEEP_CONN     => 1,
};

sub record {
	my ($type, $id, $content, %o) = @_;
	$content //= '';
	return pack('CCnnCC', $o{version} // 1, $type, $id, length($content), 0, 0) . $content;
}

sub nv_length {
	my ($n) = @_;
	return $n < 128 ? pack('C', $n) : pack('N', $n | 0x80000000);
}

# A name-value pair with the lengths given as they go on the wire: each one
# 4 bytes with the high bit set, whatever the data that follows (for
# lengths that lie).
sub name_value_lengths {
	my ($name_len, $value_len, $data) = @_;
	return pack('NN', $name_len | 0x80000000, $value_len | 0x80000000) . ($data // '');
}

sub name_value {
	my ($k, $v) = @_;
	return nv_length(length $k) . nv_length(length $v) . $k . $v;
}

# The name-value pairs of a record's content (PARAMS, GET_VALUES,
# GET_VALUES_RESULT), in order: [[name, value], ...]; undef when the
# content does not split into whole pairs.
sub name_values {
	my ($content) = @_;
	my @pairs;
	my $at = 0;
	my $len = sub {
		return if $at >= length $content;
		my $b = unpack('C', substr($content, $at, 1));
		if ($b < 128) { $at += 1; return $b }
		return if $at + 4 > length $content;
		my $n = unpack('N', substr($content, $at, 4)) & 0x7fffffff;
		$at += 4;
		return $n;
	};
	while ($at < length $content) {
		my $nl = $len->() // return;
		my $vl = $len->() // return;
		return if $at + $nl + $vl > length $content;
		push @pairs, [substr($content, $at, $nl), substr($content, $at + $nl, $vl)];
		$at += $nl + $vl;
	}
	return \@pairs;
}

# An FCGI_GET_VALUES record (request id 0) asking for the names given:
# each with an empty value, as the specification has it.
sub get_values {
	my (@names) = @_;
	return record(GET_VALUES, 0, join('', map { name_value($_, '') } @names));
}

sub begin_request {
	my ($id, $flags) = @_;
	return record(BEGIN_REQUEST, $id, pack('nCx5', RESPONDER, $flags // 0));
}

# All params in one record, then the empty record that ends them.
sub params {
	my ($id, $p) = @_;
	my $content = join('', map { name_value($_, $p->{$_}) } sort keys %$p);
	return record(PARAMS, $id, $content) . record(PARAMS, $id, '');
}

# The body in records of at most 65535 bytes; $end adds the empty record.
sub stdin {
	my ($id, $data, $end) = @_;
	my $out = '';
	for (my $off = 0; $off < length $data; $off += 65535) {
		$out .= record(FCGI_STDIN, $id, substr($data, $off, 65535));
	}
	$out .= record(FCGI_STDIN, $id, '') if $end // 1;
	return $out;
}

# A whole request: begin, params (CONTENT_LENGTH filled in when absent) and
# the body.
sub request {
	my ($p, $body, %o) = @_;
	$body //= '';
	my %p = %$p;
	$p{CONTENT_LENGTH} //= length $body;
	my $id = $o{id} // 1;
	return begin_request($id, $o{keep} ? KEEP_CONN : 0) . params($id, \%p) . stdin($id, $body);
}

# GET /chat/metrics as nginx's metrics location sends it (marked).
sub metrics_request {
	return request({REQUEST_METHOD => 'GET', REQUEST_URI => '/chat/metrics', CHAT_METRICS => 1}, '');
}

sub chat_params {
	my (%extra) = @_;
	return {
		REQUEST_METHOD => 'POST',
		REQUEST_URI    => '/chat/',
		CONTENT_TYPE   => 'application/json',
		%extra,
	};
}

sub connect_unix {
	my ($path) = @_;
	my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path) or return;
	binmode $s;
	$s->autoflush(1);
	return $s;
}

sub connect_tcp {
	my ($host, $port) = @_;
	my $s = IO::Socket::IP->new(PeerHost => $host, PeerPort => $port, Proto => 'tcp',
		Timeout => 5) or return;
	binmode $s;
	$s->autoflush(1);
	return $s;
}

# Reads whatever records come until EOF or the timeout, or (until => CODE)
# until CODE, given the records read so far, returns true. Returns
# {records => [[type, id, content], ...], eof => 1 if the peer closed}.
sub read_records {
	my ($s, $timeout, %o) = @_;
	my $deadline = time + ($timeout // 5);
	my ($buf, $eof, @records) = ('', 0);
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	while (time < $deadline) {
		my $left = $deadline - time;
		next unless select(my $rout = $rin, undef, undef, $left > 0.2 ? 0.2 : $left);
		my $n = sysread($s, my $chunk, 65536);
		if (!$n) { $eof = 1; last }
		$buf .= $chunk;
		while (length($buf) >= 8) {
			my ($v, $type, $id, $len, $pad) = unpack('CCnnC', $buf);
			last if length($buf) < 8 + $len + $pad;
			push @records, [$type, $id, substr($buf, 8, $len)];
			substr($buf, 0, 8 + $len + $pad, '');
		}
		last if $o{until} && $o{until}->(@records);
	}
	return {records => \@records, eof => $eof};
}

# Takes the whole records at the start of $$buf into the answer $st
# (stdout, stderr, app, ended); true once END_REQUEST has come.
sub _take_records {
	my ($buf, $st) = @_;
	while (length($$buf) >= 8) {
		my ($v, $type, $id, $len, $pad) = unpack('CCnnC', $$buf);
		last if length($$buf) < 8 + $len + $pad;
		my $content = substr($$buf, 8, $len);
		substr($$buf, 0, 8 + $len + $pad, '');
		if ($type == FCGI_STDOUT) { $st->{stdout} .= $content }
		elsif ($type == FCGI_STDERR) { $st->{stderr} .= $content }
		elsif ($type == END_REQUEST) {
			$st->{app} = unpack('N', $content);
			$st->{ended} = 1;
			return 1;
		}
	}
	return 0;
}

# The answer read_response returns, from what _take_records gathered.
sub _answer {
	my ($st) = @_;
	my %r = (ended => $st->{ended}, app_status => $st->{app}, stderr => $st->{stderr}, headers => {},
		status => 0, body => '', raw => $st->{stdout});
	my ($head, $body) = split(/\r\n\r\n/, $st->{stdout}, 2);
	if (defined $body) {
		for my $line (split /\r\n/, $head) {
			$r{headers}{ lc $1 } = $2 if $line =~ /^([^:]+):\s*(.*)$/;
		}
		($r{status}) = ($r{headers}{status} // '200') =~ /^(\d+)/;
		$r{body} = $body;
	}
	return \%r;
}

# Reads records until END_REQUEST, EOF or the timeout. Returns
# {status, headers => {lc name => value}, body, stderr, ended, app_status}.
sub read_response {
	my ($s, $timeout) = @_;
	my $deadline = time + ($timeout // 5);
	my $buf = '';
	my %st = (stdout => '', stderr => '', ended => 0, app => undef);
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	while (!$st{ended} && time < $deadline) {
		my $left = $deadline - time;
		next unless select(my $rout = $rin, undef, undef, $left > 0.2 ? 0.2 : $left);
		my $n = sysread($s, my $chunk, 65536);
		last unless $n;
		$buf .= $chunk;
		_take_records(\$buf, \%st);
	}
	return _answer(\%st);
}

# The answers on several connections, read side by side until each has its
# END_REQUEST or EOF, or the timeout: one at a time, a backend writing a
# large answer to a connection not being read could keep the one being
# read waiting. Returns them in the order of the connections.
sub read_responses {
	my ($socks, $timeout) = @_;
	my $deadline = time + ($timeout // 5);
	my @st = map { {stdout => '', stderr => '', ended => 0, app => undef, buf => '', done => 0} } @$socks;
	while (time < $deadline) {
		my @open = grep { !$st[$_]{done} } 0 .. $#st;
		last unless @open;
		my $rin = '';
		vec($rin, fileno($socks->[$_]), 1) = 1 for @open;
		my $left = $deadline - time;
		next unless select(my $rout = $rin, undef, undef, $left > 0.2 ? 0.2 : $left) > 0;
		for my $i (@open) {
			next unless vec($rout, fileno($socks->[$i]), 1);
			my $n = sysread($socks->[$i], my $chunk, 65536);
			if (!$n) { $st[$i]{done} = 1; next }
			$st[$i]{buf} .= $chunk;
			$st[$i]{done} = 1 if _take_records(\$st[$i]{buf}, $st[$i]);
		}
	}
	return map { _answer($_) } @st;
}

1;
