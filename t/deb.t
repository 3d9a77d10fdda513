#!/usr/bin/perl
# The Debian package: dpkg-buildpackage -us -uc -b builds it from a copy of
# the release tree (it writes into the parent directory), lintian finds no
# error, and unpacked into a scratch root it has the files where a Debian
# admin looks for them, maintainer scripts that make the user and enable the
# socket, units that systemd-analyze verify accepts, and nginx snippets that
# Debian's nginx.conf layout loads. This machine runs no systemd, so nothing
# is installed on it.

use strict;
use warnings;

use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Test::More;

use ChatTest;

my $build = $ENV{CHAT_BUILDDIR};
plan(skip_all => 'CHAT_BUILDDIR not set: run through make check') unless $build;
for my $tool (qw(dpkg-buildpackage dh fakeroot lintian)) {
	plan(skip_all => "$tool not installed (./dev check installs it)")
		unless ChatTest::which($tool, '/usr/bin');
}

my $tmp = tempdir('chat-fcgi-deb-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});

# The outer make's job server and flags must not reach the package build.
delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES DESTDIR)};

my ($version) = `"$build/src/chat-fcgi" --version` =~ /^chat-fcgi (\S+)$/m;
ok($version, 'the version to package') or BAIL_OUT('no version');
my $tree = "$tmp/chat-fcgi-$version";
my $out = `make -s -C "$build" distdir distdir="$tree" 2>&1`;
is($?, 0, 'make distdir makes a clean copy of the release tree') or diag($out);
ok(-x "$tree/debian/rules", '... with debian/ in it');

$out = `cd "$tree" && dpkg-buildpackage -us -uc -b 2>&1`;
is($?, 0, 'dpkg-buildpackage -us -uc -b builds') or diag($out);
my ($deb) = glob("$tmp/chat-fcgi_${version}_*.deb");
ok($deb && -f $deb, '... a .deb') or BAIL_OUT("no .deb built:\n$out");
my ($changes) = glob("$tmp/chat-fcgi_${version}_*.changes");

# lintian: errors fail the test, and so does a program without its man
# page; other warnings are shown.
my $lint = `lintian --no-tag-display-limit "$changes" 2>&1`;
my @errors = grep { /^E: / } split /\n/, $lint;
is_deeply(\@errors, [], 'lintian finds no error');
my @no_man = grep { /\bno-manual-page\b/ } split /\n/, $lint;
is_deeply(\@no_man, [], 'lintian finds a man page for every program');
diag("lintian: $_") for grep { /^[WI]: / } split /\n/, $lint;

## The files, unpacked into a scratch root

my $root = "$tmp/root";
$out = `dpkg-deb -x "$deb" "$root" 2>&1`;
is($?, 0, 'dpkg-deb -x unpacks it') or diag($out);
my @files = map { s{^\./}{/}r } grep { !m{/$} } map { (split ' ', $_, 6)[5] }
	split /\n/, `dpkg-deb -c "$deb"`;
my %has = map { $_ => 1 } @files;
for my $f ('/usr/sbin/chat-fcgi', '/usr/share/man/man8/chat-fcgi.8.gz',
	'/usr/sbin/chat-fcgi-supervise', '/usr/share/man/man8/chat-fcgi-supervise.8.gz',
	'/usr/share/chat-fcgi/html/index.html', '/usr/share/chat-fcgi/html/chat.js',
	'/usr/share/chat-fcgi/html/chat.css', '/usr/share/chat-fcgi/html/favicon.svg',
	'/etc/nginx/snippets/chat-fcgi.conf', '/etc/nginx/conf.d/chat-fcgi-http.conf',
	'/etc/default/chat-fcgi', '/etc/chat-fcgi/rate-limit.conf',
	'/lib/systemd/system/chat-fcgi.socket',
	'/lib/systemd/system/chat-fcgi.service', '/usr/lib/sysusers.d/chat-fcgi.conf',
	'/usr/share/doc/chat-fcgi/copyright')
{
	ok($has{$f}, "it ships $f");
}
ok(!$has{'/usr/share/chat-fcgi/chat-fcgi.conf'}, 'the snippets live in /etc/nginx only')
	or diag(join "\n", @files);
like(`"$root/usr/sbin/chat-fcgi" --version`, qr/^chat-fcgi \Q$version\E$/m,
	'the packaged binary runs');

my $ctl = "$tmp/control";
$out = `dpkg-deb -e "$deb" "$ctl" 2>&1`;
is($?, 0, 'dpkg-deb -e extracts the control files') or diag($out);
my $control = ChatTest::read_file("$ctl/control");
like($control, qr/^Depends:.*libfcgi0ldbl.*libjson-c5/m, 'it depends on libfcgi and json-c');
like($control, qr/^Depends:.*systemd(-standalone)?-sysusers|^Depends:.*\bsystemd\b/m,
	'... and on something that runs systemd-sysusers');
is_deeply([sort split /\n/, ChatTest::read_file("$ctl/conffiles")],
	['/etc/chat-fcgi/rate-limit.conf', '/etc/default/chat-fcgi',
	 '/etc/nginx/conf.d/chat-fcgi-http.conf', '/etc/nginx/snippets/chat-fcgi.conf'],
	'the options file, the rate limit and the nginx snippets are conffiles: local edits survive upgrades');

## The maintainer scripts

for my $script (qw(preinst postinst prerm postrm)) {
	next unless -f "$ctl/$script";
	my $check = `sh -n "$ctl/$script" 2>&1`;
	is($?, 0, "$script is valid sh") or diag($check);
}
my $postinst = ChatTest::read_file("$ctl/postinst");
like($postinst, qr/^\s*systemd-sysusers .*\bchat-fcgi\.conf$/m, 'postinst makes the user (systemd-sysusers)');
like($postinst, qr/deb-systemd-helper enable 'chat-fcgi\.socket'/, 'postinst enables the socket');
like($postinst, qr/deb-systemd-invoke \$_dh_action 'chat-fcgi\.socket'/, '... and starts it');
unlike($postinst, qr/deb-systemd-helper enable 'chat-fcgi\.service'|invoke \S+ 'chat-fcgi\.service'/,
	'... but not the service, which the first connection starts');
ok(index($postinst, 'systemd-sysusers') < index($postinst, 'deb-systemd-invoke'),
	'... and the user exists before the socket starts');
like(ChatTest::read_file("$ctl/prerm"), qr/deb-systemd-invoke stop 'chat-fcgi\.socket'/,
	'prerm stops the socket (and so the service, which Requires= it)');
like(ChatTest::read_file("$ctl/postrm"), qr/deb-systemd-helper purge 'chat-fcgi\.socket'/,
	'postrm forgets the socket on purge');

SKIP: {
	my $sysusers = ChatTest::which('systemd-sysusers', '/usr/bin', '/bin');
	skip 'systemd-sysusers not installed', 2 unless $sysusers;
	# What postinst runs, pointed at the scratch root as DPKG_ROOT would.
	$out = `"$sysusers" --root="$root" chat-fcgi.conf 2>&1`;
	is($?, 0, 'systemd-sysusers --root makes the user from the packaged file') or diag($out);
	my ($pw) = grep { /^chat-fcgi:/ } split /\n/, ChatTest::read_file("$root/etc/passwd");
	like($pw // '', qr{^chat-fcgi:x:(\d+):\d+:[^:]*:/nonexistent:/usr/sbin/nologin$},
		'... a system user chat-fcgi without a home or a shell');
}

## The units and the nginx snippets, as installed

my $socket = ChatTest::read_file("$root/lib/systemd/system/chat-fcgi.socket");
my $service = ChatTest::read_file("$root/lib/systemd/system/chat-fcgi.service");
like($socket, qr{^ListenStream=/run/chat-fcgi\.sock$}m, 'the socket is /run/chat-fcgi.sock');
like($socket, qr/^SocketUser=www-data$/m, '... owned by www-data');
like($socket, qr/^SocketGroup=www-data$/m, '... group www-data');
like(ChatTest::read_file("$root/etc/nginx/conf.d/chat-fcgi-http.conf"),
	qr{server unix:/run/chat-fcgi\.sock;}, "nginx's upstream is that socket");
like($service, qr{^ExecStart=/usr/sbin/chat-fcgi \$CHAT_FCGI_OPTS$}m, 'the service runs /usr/sbin/chat-fcgi');
like($service, qr{^EnvironmentFile=-/etc/default/chat-fcgi$}m, '... with /etc/default/chat-fcgi');
like(ChatTest::read_file("$root/etc/nginx/snippets/chat-fcgi.conf"),
	qr{alias /usr/share/chat-fcgi/html/;}, 'the snippet serves the packaged page');

SKIP: {
	my $sa = ChatTest::which('systemd-analyze', '/usr/bin', '/bin');
	skip 'systemd-analyze not installed', 2 unless $sa;
	# verify wants ExecStart to exist on this machine: point copies at the
	# unpacked binary; nothing else changes.
	my $units = "$tmp/units";
	make_path($units);
	ChatTest::write_file("$units/chat-fcgi.socket", $socket);
	ChatTest::write_file("$units/chat-fcgi.service",
		$service =~ s{^ExecStart=/usr/sbin/}{ExecStart=$root/usr/sbin/}mr);
	$out = `cd "$units" && MANPATH="$root/usr/share/man" SYSTEMD_LOG_COLOR=0 "$sa" verify ./chat-fcgi.socket ./chat-fcgi.service 2>&1`;
	is($?, 0, 'systemd-analyze verify passes on the packaged units');
	is($out, '', '... with nothing to say') or diag($out);
}

SKIP: {
	my $nginx = $ENV{CHAT_NGINX} // ChatTest::which('nginx', '/usr/sbin');
	skip 'nginx not installed', 2 unless $nginx;
	# Debian's nginx.conf: conf.d/*.conf inside http { }, and a site that
	# includes the snippet, as the admin adds it.
	my $run = "$tmp/nginx";
	make_path("$run/conf.d");
	# The http part includes the rate limit by its absolute path: point it
	# into the scratch root, as installed.
	my $http = ChatTest::read_file("$root/etc/nginx/conf.d/chat-fcgi-http.conf");
	like($http, qr{include /etc/chat-fcgi/rate-limit\.conf;}, 'the http part includes the rate limit from /etc');
	$http =~ s{include /etc/chat-fcgi/}{include $root/etc/chat-fcgi/}g;
	ChatTest::write_file("$run/conf.d/chat-fcgi-http.conf", $http);
	my $status;
	($status, $out) = ChatTest::nginx_accepts_snippets($nginx, $run, "$run/conf.d/*.conf",
		"$root/etc/nginx/snippets/chat-fcgi.conf");
	is($status, 0, "nginx -t accepts the snippets laid out as Debian's nginx.conf includes them")
		or diag($out);
}

done_testing;
