#!/usr/bin/perl
# The page over nginx: the redirect from /, the page and its assets with
# their types and security headers, a page made only of local files with no
# inline script or style, a JSON 404 for a missing asset, and a JSON 405
# with Allow for methods the page does not take.

use strict;
use warnings;

use Test::More;

use ChatTest;

$| = 1;

my $t = ChatTest->new;
my $src = ChatTest::srcdir();

# --- / redirects to /chat/ --------------------------------------------------

{
	my $r = $t->request(method => 'GET', path => '/');
	is($r->{status}, 301, 'GET / is a permanent redirect');
	is($r->{headers}{location}, '/chat/',
		'GET /: Location is the relative /chat/ (no scheme, host or port)');

	$r = $t->request(method => 'HEAD', path => '/');
	is($r->{status}, 301, 'HEAD / is a redirect too');
	is($r->{headers}{location}, '/chat/', 'HEAD /: Location is /chat/');

	$r = $t->request(method => 'GET', path => '/', headers => [Host => 'chat.example.org:8080']);
	is($r->{headers}{location}, '/chat/',
		'GET / with another Host: Location stays relative (works behind any proxy)');
}

# --- the page ----------------------------------------------------------------

my $index = ChatTest::read_file("$src/html/index.html");
ok(length $index, 'html/index.html in the source tree is not empty');

# The page's security headers, on any response that serves the page.
sub has_page_headers {
	my ($r, $name) = @_;
	my $csp = $r->{headers}{'content-security-policy'} // '';
	ok(length $csp, "$name: has a Content-Security-Policy");
	like($csp, qr/(^|;)\s*frame-ancestors\s+'none'\s*(;|$)/,
		"$name: CSP has frame-ancestors 'none'");
	like($csp, qr/(^|;)\s*script-src\s+'self'\s*(;|$)/, "$name: CSP has script-src 'self' only");
	unlike($csp, qr/unsafe-inline/i, "$name: CSP has no 'unsafe-inline'");
	unlike($csp, qr/unsafe-eval/i, "$name: CSP has no 'unsafe-eval'");
	is($r->{headers}{'x-content-type-options'}, 'nosniff', "$name: X-Content-Type-Options: nosniff");
	like($r->{headers}{'referrer-policy'} // '', qr/\S/, "$name: has a Referrer-Policy");
}

{
	my $r = $t->request(method => 'GET', path => '/chat/');
	is($r->{status}, 200, 'GET /chat/ is 200');
	like($r->{headers}{'content-type'} // '', qr{^text/html;\s*charset=utf-8$}i,
		'GET /chat/: Content-Type is text/html; charset=utf-8');
	is($r->{body}, $index, 'GET /chat/ serves html/index.html as is');
	has_page_headers($r, 'GET /chat/');

	my $h = $t->request(method => 'HEAD', path => '/chat/');
	is($h->{status}, 200, 'HEAD /chat/ is 200');
	is($h->{body}, '', 'HEAD /chat/ has no body');
	like($h->{headers}{'content-type'} // '', qr{^text/html;\s*charset=utf-8$}i,
		'HEAD /chat/: Content-Type is text/html; charset=utf-8');
	is($h->{headers}{'content-length'}, length($index), 'HEAD /chat/: Content-Length is the page\'s');
	has_page_headers($h, 'HEAD /chat/');

	$r = $t->request(method => 'GET', path => '/chat/?from=link');
	is($r->{status}, 200, 'GET /chat/ with a query string still serves the page');
	is($r->{body}, $index, 'GET /chat/?from=link: the same page');

	$r = $t->request(method => 'GET', path => '/chat/?room=lobby');
	is($r->{status}, 200, 'GET /chat/?room=lobby (a room\'s share link) serves the page');
	is($r->{body}, $index, 'GET /chat/?room=lobby: the same page; chat.js joins the room');
}

# --- the page's assets -------------------------------------------------------

my %asset = (
	'chat.js'     => qr{^application/javascript(;\s*charset=utf-8)?$}i,
	'chat.css'    => qr{^text/css(;\s*charset=utf-8)?$}i,
	'favicon.svg' => qr{^image/svg\+xml(;\s*charset=utf-8)?$}i,
);
for my $name (sort keys %asset) {
	my $file = ChatTest::read_file("$src/html/$name");
	ok(length $file, "html/$name in the source tree is not empty");
	my $r = $t->request(method => 'GET', path => "/chat/$name");
	is($r->{status}, 200, "GET /chat/$name is 200");
	like($r->{headers}{'content-type'} // '', $asset{$name}, "GET /chat/$name: Content-Type")
		or diag("got: " . ($r->{headers}{'content-type'} // 'none'));
	is($r->{headers}{'x-content-type-options'}, 'nosniff',
		"GET /chat/$name: X-Content-Type-Options: nosniff");
	ok($r->{body} eq $file, "GET /chat/$name serves html/$name as is");

	my $h = $t->request(method => 'HEAD', path => "/chat/$name");
	is($h->{status}, 200, "HEAD /chat/$name is 200");
	is($h->{body}, '', "HEAD /chat/$name has no body");
}

# --- what the page is made of --------------------------------------------------

(my $html = $index) =~ s/<!--.*?-->//gs;    # comments say things; tags do them
{
	like($html, qr{<script\b[^>]*\bsrc\s*=\s*["']?(\./)?chat\.js["'\s>]}i,
		'index.html loads chat.js by a relative src');
	like($html, qr{<link\b(?=[^>]*\brel\s*=\s*["']?stylesheet)[^>]*\bhref\s*=\s*["']?(\./)?chat\.css["'\s>]}i,
		'index.html loads chat.css by a relative stylesheet link');

	my @scripts = $html =~ m{<script\b([^>]*)>(.*?)</script\s*>}gis;
	ok(@scripts >= 2, 'index.html has a <script> element');
	my @inline;
	while (my ($attrs, $body) = splice(@scripts, 0, 2)) {
		push @inline, $body if $body =~ /\S/ || $attrs !~ /\bsrc\s*=/i;
	}
	is_deeply(\@inline, [], 'index.html has no inline <script> content (every script has a src)');

	unlike($html, qr{<style\b}i, 'index.html has no <style> element');
	unlike($html, qr{<[a-z][^>]*\sstyle\s*=}i, 'index.html has no inline style= attribute');
	unlike($html, qr{<[a-z][^>]*\son[a-z]+\s*=}i,
		'index.html has no inline event handler (onclick= and the like)');
	unlike($html, qr{\b(href|src|action|formaction)\s*=\s*["']?\s*javascript:}i,
		'index.html has no javascript: URL');

	my @urls = $html =~ m{\b(?:src|href|action|formaction|poster|data)\s*=\s*["']?([^"'\s>]*)}gi;
	ok(@urls >= 2, 'index.html has src/href attributes to check');
	my @external = grep { m{^\s*(?:[a-z][a-z0-9+.-]*:)?//}i } @urls;
	is_deeply(\@external, [], 'index.html: no src/href is an external URL (http://, https://, //host)');
	unlike($html, qr{https?://}i, 'index.html: no http:// or https:// anywhere in its markup');
}

# The elements chat.js fills in: the room, its share link, the connection
# state (announced politely) and the notice for a bad room name.
for my $id (qw(room room-name room-link room-copy connection notice)) {
	like($html, qr{<[a-z]+\b[^>]*\bid="\Q$id\E"}, "index.html has #$id");
}
like($html, qr{<[a-z]+\b(?=[^>]*\bid="connection")(?=[^>]*\brole="status")}, '#connection is a status region');

{
	my $js = ChatTest::read_file("$src/html/chat.js");
	unlike($js, qr{\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b},
		'chat.js never turns text into markup (textContent only)');
	like($js, qr{crypto\.getRandomValues}, 'room names and client ids come from crypto.getRandomValues');
	unlike($js, qr{https?://}i, 'chat.js names no http:// or https:// URL');
	unlike($js, qr{["'`]\s*//[a-z0-9.-]}i, 'chat.js has no protocol-relative //host string');
	unlike($js, qr{\bimportScripts\s*\(|\bimport\s*\(\s*["'`](?!\.)}, 'chat.js imports nothing from elsewhere');

	my $css = ChatTest::read_file("$src/html/chat.css");
	unlike($css, qr{https?://}i, 'chat.css names no http:// or https:// URL');
	unlike($css, qr{url\(\s*["']?\s*//}i, 'chat.css has no url(//host)');
	unlike($css, qr{\@import\b}i, 'chat.css imports no other stylesheet');
}

# --- a missing asset -------------------------------------------------------------

{
	my $r = $t->request(method => 'GET', path => '/chat/nope.js');
	$t->is_json_error($r, 404, 'GET /chat/nope.js');
	is($r->{headers}{'x-content-type-options'}, 'nosniff', 'GET /chat/nope.js: nosniff on the 404');

	$r = $t->request(method => 'GET', path => '/chat/no/such/dir/');
	$t->is_json_error($r, 404, 'GET /chat/no/such/dir/');
}

# --- other methods -------------------------------------------------------------------

for my $m (qw(PUT DELETE PATCH OPTIONS)) {
	for my $path ('/chat/', '/chat/chat.js') {
		my $r = $t->request(method => $m, path => $path,
			($m eq 'PUT' || $m eq 'PATCH'
				? (headers => ['Content-Type' => 'application/json'], body => '{"message":"x"}')
				: ()));
		$t->is_json_error($r, 405, "$m $path");
		my %allow = map { uc($_) => 1 } split /\s*,\s*/, $r->{headers}{allow} // '';
		ok($allow{GET} && $allow{HEAD} && $allow{POST}, "$m $path: Allow lists GET, HEAD and POST")
			or diag('Allow: ' . ($r->{headers}{allow} // 'none'));
		ok(!$allow{$m}, "$m $path: Allow does not list $m");
	}
}

# The page's requests left nothing for the backend to log as failed.
$t->stop;
unlike($t->backend_log, qr/^chat-fcgi: [45]\d\d /m, 'the backend logged no failed request');
$t->done;

done_testing;
