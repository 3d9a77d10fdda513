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

# Reads whatever records come until EOF or the timeout. Returns
# {records => [[type, id, content], ...], eof => 1 if the peer closed}.
sub read_records {
	my ($s, $timeout) = @_;
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
	}
	return {records => \@records, eof => $eof};
}

# Reads records until END_REQUEST, EOF or the timeout. Returns
# {status, headers => {lc name => value}, body, stderr, ended, app_status}.
sub read_response {
	my ($s, $timeout) = @_;
	my $deadline = time + ($timeout // 5);
	my ($buf, $stdout, $stderr, $ended, $app) = ('', '', '', 0, undef);
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	READ: while (!$ended && time < $deadline) {
		my $left = $deadline - time;
		next unless select(my $rout = $rin, undef, undef, $left > 0.2 ? 0.2 : $left);
		my $n = sysread($s, my $chunk, 65536);
		last unless $n;
		$buf .= $chunk;
		while (length($buf) >= 8) {
			my ($v, $type, $id, $len, $pad) = unpack('CCnnC', $buf);
			last if length($buf) < 8 + $len + $pad;
			my $content = substr($buf, 8, $len);
			substr($buf, 0, 8 + $len + $pad, '');
			if ($type == FCGI_STDOUT) { $stdout .= $content }
			elsif ($type == FCGI_STDERR) { $stderr .= $content }
			elsif ($type == END_REQUEST) {
				$app = unpack('N', $content);
				$ended = 1;
				last READ;
			}
		}
	}
	my %r = (ended => $ended, app_status => $app, stderr => $stderr, headers => {},
		status => 0, body => '', raw => $stdout);
	my ($head, $body) = split(/\r\n\r\n/, $stdout, 2);
	if (defined $body) {
		for my $line (split /\r\n/, $head) {
			$r{headers}{ lc $1 } = $2 if $line =~ /^([^:]+):\s*(.*)$/;
		}
		($r{status}) = ($r{headers}{status} // '200') =~ /^(\d+)/;
		$r{body} = $body;
	}
	return \%r;
}

1;
