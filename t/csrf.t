#!/usr/bin/perl
# Cross-site request forgery, through nginx and chat-fcgi. A page on another
# site can make a browser send only "simple" requests without asking first:
# a form post (urlencoded, multipart or text/plain). So:
# - form posts must come from our own origin (Sec-Fetch-Site, else Origin),
#   or carry neither header (not a browser: curl, scripts); others get 403;
# - JSON needs Content-Type application/json, which is not simple: a
#   browser asks first (a CORS preflight, OPTIONS), and nginx refuses that,
#   with no Access-Control-Allow-* header. text/plain, what a cross-site form
#   can send instead, gets 415.

use strict;
use warnings;

use Test::More;

use ChatTest;

$| = 1;

my $t = ChatTest->new;
my $own = '127.0.0.1:' . $t->port;    # the Host a browser sends here
my $FORM = 'application/x-www-form-urlencoded';

sub form_post {
	my (@headers) = @_;
	return $t->post('message=hi', type => $FORM, headers => ['Host' => $own, @headers]);
}

sub is_received {
	my ($r, $name) = @_;
	is($r->{status}, 200, "$name: 200");
	is(($t->json($r) // {})->{message}, 'received hi', "$name: answered") or diag($r->{raw});
}

sub is_forbidden {
	my ($r, $name) = @_;
	is($r->{status}, 403, "$name: 403");
	is($r->{headers}{'content-type'}, 'application/json; charset=utf-8', "$name: JSON");
	like(($t->json($r) // {})->{error} // '', qr/only from this site's own pages/,
		"$name: says why") or diag($r->{raw});
}

# --- accepted ---------------------------------------------------------------

is_received(form_post(), 'a form post with neither header (curl, a script)');
is_received(form_post('Sec-Fetch-Site' => 'same-origin', 'Origin' => "http://$own"),
	'a form post from our own page');
is_received(form_post('Sec-Fetch-Site' => 'none'), 'a form post the user typed (Sec-Fetch-Site: none)');
is_received(form_post('Origin' => "http://$own"), 'a form post with our Origin only (older browsers)');
is_received($t->post('message=hi', type => $FORM,
		headers => ['Host' => 'LocalHost:' . $t->port, 'Origin' => 'http://localhost:' . $t->port]),
	'host names compare without case');

# --- refused ----------------------------------------------------------------

is_forbidden(form_post('Sec-Fetch-Site' => 'cross-site', 'Origin' => 'http://evil.example'),
	'a form post from another site');
is_forbidden(form_post('Sec-Fetch-Site' => 'same-site'), 'a form post from a sibling subdomain');
is_forbidden(form_post('Sec-Fetch-Site' => 'cross-site', 'Origin' => "http://$own"),
	'Sec-Fetch-Site cross-site, whatever Origin says');
is_forbidden(form_post('Origin' => 'http://evil.example'), 'a foreign Origin only');
is_forbidden(form_post('Origin' => 'null'), 'Origin: null (a sandboxed frame, a data: page)');
is_forbidden(form_post('Origin' => 'http://127.0.0.1:' . ($t->port == 1 ? 2 : $t->port - 1)),
	'our host on another port');
is_forbidden(form_post('Origin' => "https://$own"), 'our host and port over another scheme');
is_forbidden($t->post('message=hi', type => "$FORM; charset=utf-8",
		headers => ['Host' => $own, 'Sec-Fetch-Site' => 'cross-site']),
	'a form post with parameters in its Content-Type');

# --- JSON -------------------------------------------------------------------

my $r = $t->post('{"message":"hi"}', type => 'text/plain',
	headers => ['Host' => $own, 'Sec-Fetch-Site' => 'cross-site', 'Origin' => 'http://evil.example']);
is($r->{status}, 415, 'JSON sent as text/plain (what a cross-site form can do): 415');

my $pre = $t->request(method => 'OPTIONS', path => '/chat/', headers => [
	'Host' => $own, 'Origin' => 'http://evil.example',
	'Access-Control-Request-Method' => 'POST',
	'Access-Control-Request-Headers' => 'content-type']);
cmp_ok($pre->{status}, '>=', 400, "a CORS preflight is refused ($pre->{status})");
is_deeply([grep { /^access-control-/ } keys %{ $pre->{headers} }], [],
	'... with no Access-Control-Allow-* header, so the browser never sends the post');

# The post a browser would send only after a preflight that passed: never,
# so JSON is not judged by origin (README: Security).
$r = $t->post('{"message":"hi"}',
	headers => ['Host' => $own, 'Sec-Fetch-Site' => 'cross-site', 'Origin' => 'http://evil.example']);
is($r->{status}, 200, 'JSON is not judged by origin: only a passed preflight could send it');

like($t->backend_log, qr/403 POST \/chat\/ .*cross-site form post/,
	'the backend logs a refused form post with its reason');
$t->done;

done_testing;
