package PgTest;

# A private PostgreSQL server for one test file, from Debian's postgresql
# package: initdb into a temp dir, pg_ctl on a free port with its unix
# socket in that dir, stopped at the end (also when the test dies).
# PostgreSQL refuses to run as root: as root, the server runs as the
# postgres user the package made.
#
#   my $pg = PgTest->new;              # skips the test when not installed
#   my $pg = PgTest->new(ipv6 => 1);   # TCP on ::1 as well as 127.0.0.1
#   my $uri = $pg->uri($pg->createdb('chat'));
#   $pg->psql('chat', 'SELECT count(*) FROM entries');
#   $pg->stop; $pg->start; $pg->restart;
#
# Environment: CHAT_KEEP=1 keeps the temp dir; CHAT_POSTGRESQL=0 says the
# build has no PostgreSQL (configure --without-postgresql): tests skip.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

my @live;    # servers not yet stopped, for END

sub bindir {
	my $d = `pg_config --bindir 2>/dev/null` // '';
	chomp $d;
	return $d if $d && -x "$d/initdb";
	my @found = sort { ($b =~ /(\d+)/)[0] <=> ($a =~ /(\d+)/)[0] }
		grep { -x "$_/initdb" } glob('/usr/lib/postgresql/*/bin');
	return $found[0];
}

# Can any user get through every directory down to $dir?
sub reachable {
	my ($dir) = @_;
	$dir = File::Spec->rel2abs($dir);
	while (1) {
		my @st = stat($dir) or return 0;
		return 0 unless $st[2] & 01;
		my $up = dirname($dir);
		last if $up eq $dir;
		$dir = $up;
	}
	return 1;
}

sub free_port {
	for (1 .. 50) {
		my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
			Proto => 'tcp', Listen => 1) or next;
		my $port = $s->sockport;
		close $s;
		return $port;
	}
	BAIL_OUT('no free port found');
}

sub new {
	my ($class, %opt) = @_;
	plan(skip_all => 'chat-fcgi was built without PostgreSQL')
		if defined $ENV{CHAT_POSTGRESQL} && $ENV{CHAT_POSTGRESQL} eq '0';
	my $bin = bindir();
	# Skips only for a missing tool; ./dev installs it, and CI runs ./dev.
	plan(skip_all => 'PostgreSQL server not installed (Debian package postgresql)')
		unless $bin;
	my $self = bless { bin => $bin, opt => \%opt }, $class;
	# Short: the socket's path must fit in 107 bytes. As root, the server's
	# user must reach it: a private TMPDIR (a test's own) will not do, so
	# the system's temp dir is used then.
	my $base = File::Spec->tmpdir;
	if ($> == 0 && !reachable($base)) {
		local $ENV{TMPDIR};
		$base = File::Spec->tmpdir;
	}
	$self->{dir} = tempdir('chat-pg-XXXXXX', DIR => $base, CLEANUP => !$ENV{CHAT_KEEP});
	$self->{data} = "$self->{dir}/data";
	$self->{port} = free_port();
	mkdir $self->{data} or die "$self->{data}: $!";
	if ($> == 0) {
		my ($uid, $gid) = (getpwnam('postgres'))[2, 3];
		BAIL_OUT('running as root, and there is no postgres user to run PostgreSQL as')
			unless defined $uid;
		$self->{as} = ['runuser', '-u', 'postgres', '--'];
		chmod 0755, $self->{dir};
		# The log is written by the programs run here and by the server.
		open(my $fh, '>>', "$self->{dir}/server.log") or die "server.log: $!";
		close $fh;
		chown $uid, $gid, $self->{dir}, $self->{data}, "$self->{dir}/server.log";
	}
	$self->run_as('initdb', '-D', $self->{data}, '-U', 'postgres', '-A', 'trust',
		'-E', 'UTF8', '--locale=C', '--no-sync') == 0
		or BAIL_OUT("initdb failed:\n" . $self->log);
	push @live, $self;
	$self->start;
	return $self;
}

sub dir  { $_[0]{dir} }
sub port { $_[0]{port} }
sub log  { my $f = "$_[0]{dir}/server.log"; open(my $fh, '<', $f) or return ''; local $/; <$fh> }

# Runs one of PostgreSQL's programs as the server's user; its exit status.
sub run_as {
	my ($self, $prog, @args) = @_;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0) {
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', "$self->{dir}/server.log");
		open(STDERR, '>&', \*STDOUT);
		exec(@{ $self->{as} // [] }, "$self->{bin}/$prog", @args) or POSIX::_exit(127);
	}
	waitpid($pid, 0);
	return $?;
}

# The server's settings: a private port, its socket in the temp dir, TCP on
# 127.0.0.1 (the nodes of the scale-out test use it), and on ::1 too when
# the test asks (a host name with both loopback addresses). fsync stays on
# unless the test asks otherwise: the restart tests are about durability.
sub options {
	my ($self) = @_;
	my $listen = $self->{opt}{ipv6} ? "'127.0.0.1,::1'" : '127.0.0.1';
	my @o = ("-c port=$self->{port}", "-c unix_socket_directories=$self->{dir}",
		"-c listen_addresses=$listen", '-c max_connections=200',
		'-c log_min_messages=warning');
	push @o, '-c fsync=off' if $self->{opt}{fsync_off};
	return join(' ', @o);
}

sub start {
	my ($self) = @_;
	$self->run_as('pg_ctl', '-D', $self->{data}, '-l', "$self->{dir}/server.log", '-w',
		'-t', '60', '-o', $self->options, 'start') == 0
		or BAIL_OUT("PostgreSQL did not start:\n" . $self->log);
	$self->{running} = 1;
}

# mode: fast (the default; sessions are ended, then a clean shutdown) or
# immediate (a crash, recovered from the WAL at the next start).
sub stop {
	my ($self, $mode) = @_;
	return unless $self->{running};
	$self->run_as('pg_ctl', '-D', $self->{data}, '-w', '-t', '60', '-m', $mode // 'fast',
		'stop');
	$self->{running} = 0;
}

sub restart {
	my ($self, $mode) = @_;
	$self->stop($mode);
	$self->start;
}

# A libpq URI for database $db, over the unix socket (tcp => 1: over TCP).
sub uri {
	my ($self, $db, %o) = @_;
	return "postgresql://postgres\@127.0.0.1:$self->{port}/$db" if $o{tcp};
	return "postgresql://postgres\@/$db?host=$self->{dir}&port=$self->{port}";
}

# Runs SQL in database $db with psql; its output (rows, unaligned, one a
# line), or undef when psql failed.
sub psql {
	my ($self, $db, $sql) = @_;
	my $pid = open(my $fh, '-|') // die "fork: $!";
	if ($pid == 0) {
		open(STDERR, '>&', \*STDOUT);
		exec("$self->{bin}/psql", '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
			'-h', $self->{dir}, '-p', $self->{port}, '-U', 'postgres', '-d', $db,
			'-c', $sql) or POSIX::_exit(127);
	}
	local $/;
	my $out = <$fh>;
	close $fh;
	return undef if $?;
	$out =~ s/\s+\z//;
	return $out;
}

# Makes a fresh, empty database; returns its name.
sub createdb {
	my ($self, $db) = @_;
	defined $self->psql('postgres', qq{DROP DATABASE IF EXISTS "$db"}) or die "dropdb $db";
	defined $self->psql('postgres', qq{CREATE DATABASE "$db"}) or die "createdb $db";
	return $db;
}

sub DESTROY {
	my ($self) = @_;
	local ($?, $!, $@);
	$self->stop('immediate') if $self->{running};
}

END {
	local $?;
	$_->stop('immediate') for grep { $_->{running} } @live;
}

1;
