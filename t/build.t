#!/usr/bin/perl
# The autotools build: configure names the Debian package to install when a
# library is missing, and make install / uninstall honour DESTDIR. The
# installed systemd units pass systemd-analyze verify and score well in
# systemd-analyze security.

use strict;
use warnings;

use File::Find;
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Test::More;

use ChatTest;

my $src = ChatTest::srcdir();
my $build = $ENV{CHAT_BUILDDIR};
plan(skip_all => 'CHAT_BUILDDIR not set: run through make check') unless $build;
plan(skip_all => 'no configure script: run autoreconf -fi') unless -x "$src/configure";

my $tmp = tempdir('chat-fcgi-build-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});

# configure in a scratch copy: a source tree built in place refuses a second
# build directory, and the checks fail before configure needs anything else.
sub configure_fails {
	my ($env, $package, $name) = @_;
	my $dir = tempdir(DIR => $tmp);
	system('cp', '-R', "$src/configure", "$src/build-aux", $dir) == 0 or die;
	make_path("$dir/src");
	system('cp', "$src/src/chat.c", "$dir/src/") == 0 or die;
	my $out = `cd "$dir" && env $env ./configure 2>&1`;
	isnt($?, 0, "$name: configure stops");
	like($out, qr/install the Debian package \Q$package\E/, "$name: it names $package")
		or diag($out);
}

configure_fails('PKG_CONFIG_LIBDIR=/nonexistent', 'libjson-c-dev', 'no json-c');
configure_fails('ac_cv_header_fcgiapp_h=no', 'libfcgi-dev', 'no fcgiapp.h');
{
	# pkg-config that knows json-c and nothing else.
	my $pc = `pkg-config --variable=pcfiledir json-c`;
	chomp $pc;
	my $only_jsonc = tempdir(DIR => $tmp);
	symlink("$pc/json-c.pc", "$only_jsonc/json-c.pc") or die "symlink: $!";
	configure_fails("PKG_CONFIG_LIBDIR=$only_jsonc", 'libseccomp-dev', 'no libseccomp');
	# ... and json-c and libseccomp, but not SQLite.
	my $sc = `pkg-config --variable=pcfiledir libseccomp`;
	chomp $sc;
	my $no_sqlite = tempdir(DIR => $tmp);
	symlink("$pc/json-c.pc", "$no_sqlite/json-c.pc") or die "symlink: $!";
	symlink("$sc/libseccomp.pc", "$no_sqlite/libseccomp.pc") or die "symlink: $!";
	configure_fails("PKG_CONFIG_LIBDIR=$no_sqlite", 'libsqlite3-dev', 'no SQLite');
}

## make install DESTDIR=... and make uninstall

my $dest = "$tmp/stage";
my $out = `make -s -C "$build" install DESTDIR="$dest" 2>&1`;
is($?, 0, 'make install DESTDIR=... succeeds') or diag($out);

my %found;
find(sub { $found{ $File::Find::name =~ s{^\Q$dest\E}{}r } = 1 if -f $_ }, $dest);
my ($bin) = grep { m{/sbin/chat-fcgi$} } keys %found;
ok($bin, 'chat-fcgi is installed into sbindir') or diag(join "\n", sort keys %found);
ok($bin && -x "$dest$bin", '... executable');
my ($html) = grep { m{/share/chat-fcgi/html/index\.html$} } keys %found;
ok($html, 'the page is installed into $(datadir)/chat-fcgi/html');
(my $htmldir = $html // '') =~ s{/index\.html$}{};
ok($found{"$htmldir/$_"}, "... with $_") for qw(chat.js chat.css favicon.svg);
my ($snippet) = grep { m{/share/chat-fcgi/chat-fcgi\.conf$} } keys %found;
ok($snippet, 'the nginx snippet is installed beside the page');
my ($http_snippet) = grep { m{/share/chat-fcgi/chat-fcgi-http\.conf$} } keys %found;
ok($http_snippet, '... with its http-level part');
my ($rate_limit) = grep { m{/etc/chat-fcgi/rate-limit\.conf$} } keys %found;
ok($rate_limit, 'the rate limit setting is installed into $(sysconfdir)/chat-fcgi');

SKIP: {
	skip 'no snippet installed', 6 unless $snippet && $http_snippet && $rate_limit;
	my $conf = ChatTest::read_file("$dest$snippet");
	my $http_conf = ChatTest::read_file("$dest$http_snippet");
	unlike($conf . $http_conf, qr/@[A-Z_]+@/, 'the installed snippets have no placeholders left');
	like($conf, qr{alias \Q$htmldir\E/;}, 'it serves the installed page');
	like($conf, qr{fastcgi_pass chat_fcgi;}, 'it passes POST to the backend upstream');
	like($http_conf, qr!upstream chat_fcgi \{[^}]*server unix:/\S+/chat-fcgi\.sock;!s,
	     'the upstream is the backend socket');
	like($http_conf, qr{^include \Q$rate_limit\E;$}m, 'it includes the installed rate limit');

	my $nginx = $ENV{CHAT_NGINX} // ChatTest::which('nginx', '/usr/sbin');
	skip 'nginx not installed', 1 unless $nginx;
	my $run = "$tmp/nginx";
	make_path("$run/logs");
	# The http part includes the rate limit by its final path: here, staged.
	(my $staged_http = $http_conf) =~ s{^include (/\S+);$}{include $dest$1;}mg;
	ChatTest::write_file("$run/http.conf", $staged_http);
	my ($status, $t) = ChatTest::nginx_accepts_snippets($nginx, $run, "$run/http.conf", "$dest$snippet");
	is($status, 0, 'nginx -t accepts a server that includes the installed snippet') or diag($t);
}

my ($man) = grep { m{/man/man8/chat-fcgi\.8$} } keys %found;
ok($man, 'the man page is installed into $(mandir)/man8');
my ($defaults) = grep { m{/default/chat-fcgi$} } keys %found;
ok($defaults, 'the options file is installed into $(sysconfdir)/default');
like(ChatTest::read_file("$dest$defaults"), qr/^CHAT_FCGI_OPTS=""$/m, '... setting CHAT_FCGI_OPTS')
	if $defaults;
my ($sysusers) = grep { m{/lib/sysusers\.d/chat-fcgi\.conf$} } keys %found;
ok($sysusers, 'the sysusers.d file is installed');
like(ChatTest::read_file("$dest$sysusers"), qr/^u chat-fcgi /m, '... making the user chat-fcgi')
	if $sysusers;
my ($socket_unit) = grep { m{/systemd/system/chat-fcgi\.socket$} } keys %found;
my ($service_unit) = grep { m{/systemd/system/chat-fcgi\.service$} } keys %found;
ok($socket_unit && $service_unit, 'the systemd units are installed') or diag(join "\n", sort keys %found);

SKIP: {
	skip 'no units installed', 16 unless $socket_unit && $service_unit && $bin && $defaults;
	my $socket = ChatTest::read_file("$dest$socket_unit");
	my $service = ChatTest::read_file("$dest$service_unit");
	unlike($socket . $service, qr/@[A-Z_]+@/, 'the units have no placeholders left');
	my ($sock_path) = $socket =~ /^ListenStream=(\S+)$/m;
	my ($http_conf) = $http_snippet ? ChatTest::read_file("$dest$http_snippet") : '';
	like($http_conf, qr{server unix:\Q$sock_path\E;}, 'the socket unit listens where nginx connects')
		if $sock_path;
	like($socket, qr/^SocketUser=www-data$/m, 'the socket belongs to nginx\'s user');
	like($socket, qr/^SocketMode=0660$/m, '... mode 0660');
	like($socket, qr/^WantedBy=sockets\.target$/m, 'enabling the socket starts it at boot');
	like($service, qr/^ExecStart=\Q$bin\E \$CHAT_FCGI_OPTS$/m, 'the service runs the installed binary');
	like($service, qr/^EnvironmentFile=-\Q$defaults\E$/m, '... with the installed options file');
	like($service, qr/^Restart=on-failure$/m, '... restarts it on failure');
	like($service, qr/^StateDirectory=chat-fcgi$/m, '... gives it /var/lib/chat-fcgi');

	my $sa = ChatTest::which('systemd-analyze', '/usr/bin', '/bin');
	skip 'systemd-analyze not installed', 7 unless $sa;
	# verify checks that ExecStart exists on this machine: check copies whose
	# ExecStart names the binary under DESTDIR, and nothing else changed.
	my $units = "$tmp/units";
	make_path($units);
	(my $local = $service) =~ s{^ExecStart=\Q$bin\E}{ExecStart=$dest$bin}m;
	ChatTest::write_file("$units/chat-fcgi.service", $local);
	ChatTest::write_file("$units/chat-fcgi.socket", $socket);
	(my $mandir = "$dest$man") =~ s{/man8/chat-fcgi\.8$}{};
	# Documentation=man:chat-fcgi(8) is checked too: MANPATH finds the page.
	my $v = `cd "$units" && MANPATH="$mandir" SYSTEMD_LOG_COLOR=0 "$sa" verify ./chat-fcgi.socket ./chat-fcgi.service 2>&1`;
	is($?, 0, 'systemd-analyze verify passes on the units');
	is($v, '', '... with nothing to say') or diag($v);

	# The check that it would catch a mistake.
	ChatTest::write_file("$units/chat-fcgi.service", "$local\nProtectSytem=strict\n");
	$v = `cd "$units" && MANPATH="$mandir" "$sa" verify ./chat-fcgi.service 2>&1`;
	like($v, qr/Unknown key 'ProtectSytem'/, '... and it would report a misspelt setting');
	ChatTest::write_file("$units/chat-fcgi.service", $local);

	my $sec = `cd "$units" && SYSTEMD_COLORS=0 "$sa" security --offline=true --no-pager ./chat-fcgi.service 2>&1`;
	is($?, 0, 'systemd-analyze security --offline runs') or diag($sec);
	my ($exposure, $verdict) = $sec =~ /Overall exposure level for chat-fcgi\.service: ([\d.]+) (\w+)/;
	ok(defined $exposure, '... and gives an exposure level') or diag($sec);
	diag("systemd-analyze security: exposure $exposure $verdict") if defined $exposure;
	cmp_ok($exposure // 10, '<=', 1.5, 'the sandbox scores 1.5 or better (out of 10, lower is safer)');
	is($verdict // '', 'SAFE', '... which systemd calls SAFE');
}

$out = `make -s -C "$build" uninstall DESTDIR="$dest" 2>&1`;
is($?, 0, 'make uninstall DESTDIR=... succeeds') or diag($out);
my @left;
find(sub { push @left, $File::Find::name if -f $_ }, $dest);
is_deeply(\@left, [], 'make uninstall removes every installed file') or diag(join "\n", @left);

done_testing;
