#!/usr/bin/perl

# Security of the page in a real browser (headless Chromium over WebDriver):
# - no script runs from any message: markup, event handlers, javascript:
#   URLs come back and are shown as text, live and after a reload;
# - the Content-Security-Policy stops script even if a message ever were
#   rendered as HTML (a rendering bug simulated here): inline handlers,
#   inline <script>, javascript: links, eval, scripts from elsewhere;
# - CSRF as a browser does it: a form on another origin posting to /chat/
#   gets 403, the same form on our own origin gets its reply, and a
#   cross-origin JSON fetch stops at the refused preflight.

use strict;
use warnings;

use utf8;
use JSON::PP;
use Test::More;

use lib 't/lib';
use WebDriver;

BEGIN {
	if (my $why = WebDriver->available) { plan skip_all => $why }
}

use ChatTest;
use ChatPage;

binmode Test::More->builder->$_, ':encoding(UTF-8)' for qw(output failure_output todo_output);

my $ENTER = $WebDriver::ENTER;

# A page on another origin (another port), and one on ours, each with a form
# posting a message to our /chat/. nginx serves both from config; the other
# origin learns our port from its query string.
my $evil_port = ChatTest::free_port();
sub form_page {
	my ($action) = @_;
	return qq{<!doctype html><form method="post" action="$action">}
		. qq{<input name="message" value="forged"><button id="go">go</button></form>};
}
my $t;
$t = ChatTest->new(
	http_extra => <<"CONF",
server {
    listen 127.0.0.1:$evil_port;
    location = /evil.html {
        default_type text/html;
        return 200 '${\ form_page('http://127.0.0.1:$arg_port/chat/') }';
    }
}
CONF
	server_extra => <<"CONF",
location = /form.html {
    default_type text/html;
    return 200 '${\ form_page('/chat/') }';
}
CONF
);
my $wd = WebDriver->new(dir => $t->dir);

sub wait_reply_to {
	my ($text) = @_;
	return $wd->wait_for(sub {
		my $log = messages($wd);
		return @$log >= 2 && $log->[-2]{text} eq $text && $log->[-1]{text} eq "received $text"
			&& $log->[-1]{state} eq '';
	}, $WAIT);
}

sub pwned { $wd->execute('return window.pwned === undefined ? null : String(window.pwned)') }
sub problems { decode_json($wd->execute('return document.documentElement.dataset.chatErrors || "[]"')) }

# Elements a message could have made: none of these belong in the log.
my $FOREIGN = '#log img, #log script, #log svg, #log iframe, #log a, #log style, #log details, '
	. '#log object, #log embed, #log form, #log input, #log math, #log video';

# --- No script from any message -------------------------------------------

my @payloads = (
	q{<img src=x onerror="window.pwned='img'">},
	q{<script>window.pwned='script'</script>},
	q{<svg onload="window.pwned='svg'"><circle r=1></svg>},
	q{<a href="javascript:window.pwned='link'">click me</a>},
	q{<iframe srcdoc="<script>parent.pwned='iframe'</script>"></iframe>},
	q{"><img src=x onerror="window.pwned='attr'">},
	q{</span></li><script>window.pwned='breakout'</script>},
	q{<details open ontoggle="window.pwned='details'">x</details>},
	q{<style>@import 'http://127.0.0.1:1/x.css';</style>},
	q{javascript:window.pwned='url'},
	q{{{constructor.constructor('window.pwned=1')()}} ${window.pwned='tpl'}},
);

$wd->get($t->url('/chat/'));
is_deeply(problems(), [], 'the page loads without any CSP violation or error');
for my $p (@payloads) {
	$wd->send_keys($wd->find('#message'), "$p$ENTER");
	ok(wait_reply_to($p), "shown literally, with its reply: $p") or diag explain messages($wd);
}
is(pwned(), undef, 'no message ran any script (window.pwned is unset)');
is($wd->execute("return document.querySelectorAll('$FOREIGN').length"), 0,
	'no element was made from any message');
is_deeply(problems(), [], 'nothing even tried to run: no CSP violation, no error');

$wd->refresh;
$wd->wait_for('document.querySelectorAll("#log .msg").length >= ' . 2 * @payloads, $WAIT);
my $texts = $wd->execute('return Array.from(document.querySelectorAll("#log .text")).map(function (e) { return e.textContent; })');
is_deeply([grep { defined } @$texts[-2 * @payloads .. -1]], [map { ($_, "received $_") } @payloads],
	'after a reload the history comes back as the same text');
is(pwned(), undef, '... and still nothing ran');
is($wd->execute("return document.querySelectorAll('$FOREIGN').length"), 0, '... nor was made');

# --- The CSP is the second wall ---------------------------------------------
# Suppose a bug rendered a message as HTML: the policy must still stop it.
# (WebDriver's own scripts are exempt from CSP; what they insert is not.)

$wd->execute(<<'JS');
	var d = document.createElement('div');
	d.innerHTML = '<img src="data:," onerror="window.pwned=\'handler\'">';
	document.body.appendChild(d);
	var s = document.createElement('script');
	s.textContent = "window.pwned = 'inline script'";
	document.body.appendChild(s);
	var a = document.createElement('a');
	a.id = 'jslink';
	a.href = "javascript:window.pwned='javascript: URL'";
	a.textContent = 'link';
	document.body.appendChild(a);
	var e = document.createElement('script');
	e.src = 'http://127.0.0.1:1/evil.js';
	document.body.appendChild(e);
JS
$wd->click($wd->find('#jslink'));
my $blocked = $wd->wait_for(sub {
	my @p = @{ problems() };
	my %seen;
	for (@p) {
		$seen{handler} = 1 if /^CSP script-src-attr blocked inline/;
		$seen{inline} = 1 if /^CSP script-src-elem blocked inline/;
		$seen{url} = 1 if /^CSP script-src-elem blocked http:\/\/127\.0\.0\.1:1\/evil\.js/;
	}
	return keys %seen == 3 ? \@p : 0;
}, $WAIT);
ok($blocked, 'the CSP blocked an inline handler, an inline script and a foreign script')
	or diag explain problems();
is(pwned(), undef, '... and none of them, nor a javascript: link, ran');
# A string handed to a timer is compiled later, in the page's own context.
$wd->execute(q{setTimeout("window.pwned = 'string timer'", 0);});
ok($wd->wait_for(sub { grep { /^CSP script-src blocked eval/ } @{ problems() } }, $WAIT),
	'string compilation (eval, string timers) is refused: no unsafe-eval') or diag explain problems();
is(pwned(), undef, '... and the string did not run');

# --- CSRF, as a browser does it ---------------------------------------------

sub page_json {
	my $text = $wd->wait_for('document.readyState === "complete" && document.body && '
		. 'document.body.innerText.indexOf("{") === 0 && document.body.innerText', $WAIT);
	return eval { decode_json(Encode::encode('UTF-8', $text // '')) };
}
use Encode ();

$wd->get("http://127.0.0.1:$evil_port/evil.html?port=" . $t->port);
$wd->click($wd->find('#go'));
my $j = page_json();
like($j->{error} // '', qr/only from this site's own pages/,
	'a form on another origin posting to /chat/: refused (403)') or diag explain $j;

$wd->get($t->url('/form.html'));
$wd->click($wd->find('#go'));
$j = page_json();
is($j->{message}, 'received forged', 'the same form on our own origin: answered');

# A cross-origin JSON post: the browser asks first, nginx says no, the post
# is never sent.
$wd->get("http://127.0.0.1:$evil_port/evil.html");
my $posts_before = () = $t->access_log =~ /^HTTP POST \/chat\/ /mg;
$wd->execute(sprintf(<<'JS', $t->port));
	window.outcome = null;
	fetch('http://127.0.0.1:%d/chat/', { method: 'POST',
		headers: { 'Content-Type': 'application/json' }, body: '{"message":"cors"}' })
	.then(function (r) { window.outcome = 'answered ' + r.status; },
	      function (e) { window.outcome = e.name; });
JS
is($wd->wait_for('window.outcome', $WAIT), 'TypeError',
	'a cross-origin JSON fetch fails in the browser');
$wd->wait_for(sub { $t->access_log =~ /^HTTP OPTIONS \/chat\/ 405/m }, $WAIT);
like($t->access_log, qr/^HTTP OPTIONS \/chat\/ 405/m, '... because its preflight got 405');
my $posts_after = () = $t->access_log =~ /^HTTP POST \/chat\/ /mg;
is($posts_after, $posts_before, '... and the post itself never reached nginx');

$wd->screenshot($t->dir . '/browser_security.png');
$wd->quit;
$t->done;

done_testing();
