#!/usr/bin/perl

# The chat page in a real browser (headless Chromium over WebDriver), through
# nginx and a chat-fcgi that keeps no history (--store none): the page falls
# back, quietly, to the stateless chat. Sending, replies, HTML shown as text,
# empty input, the backend going away and Retry, a 413, phone width, and no
# CSP violation or script error on the way. Rooms: t/browser_rooms.t.

use strict;
use warnings;

use utf8;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Time::HiRes qw(sleep);

use lib 't/lib';
use WebDriver;

BEGIN {
	if (my $why = WebDriver->available) { plan skip_all => $why }
}

use ChatTest;
use ChatPage;

binmode Test::More->builder->$_, ':encoding(UTF-8)' for qw(output failure_output todo_output);

my $ENTER = $WebDriver::ENTER;

my $t  = ChatTest->new(backend_args => ['--store', 'none']);
my $wd = WebDriver->new(dir => $t->dir);

sub type_into_message {
	my ($text) = @_;
	$wd->send_keys($wd->find('#message'), $text);
}

sub page_problems { $wd->execute('return document.documentElement.dataset.chatErrors') }

# --- The page ---------------------------------------------------------------

my $page = HTTP::Tiny->new->get($t->url('/chat/'));
like($page->{headers}{'content-security-policy'} // '', qr/script-src 'self'/,
	'the page is served with a strict CSP (so the checks below mean something)');

$wd->get($t->url('/'));
is($wd->execute('return location.pathname'), '/chat/', 'the root leads to /chat/');
is(page_problems(), '[]', 'chat.js ran, no CSP violation or script error while loading');
is($wd->execute('return document.activeElement && document.activeElement.id'), 'message',
	'the input has focus on load');
is($wd->execute('return document.getElementById("log").getAttribute("aria-live")'), 'polite',
	'the log is announced to screen readers');
ok($wd->wait_for('document.documentElement.dataset.chatMode === "stateless"', $WAIT),
	'without history on the server, the page runs the stateless chat');
ok($wd->execute('return document.getElementById("room").hidden && document.getElementById("notice").hidden'
	. ' && document.getElementById("connection").hidden'),
	'quietly: no room, no notice, no "reconnecting"');

# --- Send and reply ---------------------------------------------------------

type_into_message("django$ENTER");
my $log = wait_log_ends_with($wd, [user => 'django'], [bot => 'received django']);
ok($log, 'the message and then its reply are shown');
SKIP: {
	skip 'no reply', 3 unless $log;
	is(scalar @$log, 2, 'exactly two messages in the log');
	my ($user, $bot) = @$log;
	cmp_ok($user->{right}, '>', $bot->{right} + 50, 'the user bubble is on the right');
	cmp_ok($user->{left}, '>', $bot->{left} + 50, 'the reply bubble is on the left');
}
is_deeply($wd->execute('return [document.activeElement.id, document.getElementById("message").value]'),
	['message', ''], 'after sending, the input is empty and keeps focus');

# --- HTML is text -----------------------------------------------------------

my $html = '<img src=x onerror=alert(1)>';
type_into_message("$html$ENTER");
$log = wait_log_ends_with($wd, [user => $html], [bot => "received $html"]);
ok($log, 'markup comes back and is shown literally, as text');
is($wd->execute('return document.querySelectorAll("#log img, #log script").length'), 0,
	'no element was made from the message');

# Korean: UTF-8 end to end.
type_into_message("안녕하세요 $ENTER");
ok(wait_log_ends_with($wd, [user => '안녕하세요 '], [bot => 'received 안녕하세요 ']),
	'Korean text (and its trailing space) goes through unchanged');

# --- Nothing to send ----------------------------------------------------------

my $count = scalar @{ messages($wd) };
type_into_message("   $ENTER");
$wd->click($wd->find('#chat button[type=submit]'));
sleep 0.2;    # a sent message would show at once: submit adds it synchronously
is(scalar @{ messages($wd) }, $count, 'whitespace-only input is not sent');
$wd->clear($wd->find('#message'));

# --- No history to show after a reload ----------------------------------------

$wd->refresh;
ok($wd->wait_for('document.documentElement.dataset.chatMode === "stateless"', $WAIT),
	'after a reload, still the stateless chat');
is_deeply(messages($wd), [], 'which has no history to show');
type_into_message("django$ENTER");
ok(wait_log_ends_with($wd, [user => 'django'], [bot => 'received django']), 'and goes on working');

# --- The backend goes away: the message stays, marked, with Retry ------------

is(page_problems(), '[]', 'no CSP violation or script error so far');

$t->stop_backend;
type_into_message("hello$ENTER");
my $failed = $wd->wait_for(sub {
	my ($last) = reverse @{ messages($wd) };
	return $last && $last->{who} eq 'user' && $last->{text} eq 'hello' && $last->{state} eq 'failed'
	  && $last->{retry} == 1 && $last;
}, $WAIT);
ok($failed, 'with the backend down, the message stays, marked failed, with a Retry button');
# What the server says while the backend is down is what the page shows.
my $down = HTTP::Tiny->new->post($t->url('/chat/'), {
	headers => { 'Content-Type' => 'application/json' }, content => '{"message":"probe"}' });
my $said = eval { JSON::PP->new->utf8->decode($down->{content})->{error} };
if (defined $said) {
	is($failed && $failed->{error}, $said, "and the server's error sentence is shown");
} else {
	like($failed && $failed->{error}, qr/\S/, 'and the error is explained');
}
note('error shown: ' . ($failed ? $failed->{error} : '(none)'));

$t->start_backend;
$wd->click($wd->find('#log .msg.failed button.retry'));
ok(wait_log_ends_with($wd, [user => 'hello'], [bot => 'received hello']),
	'Retry sends it again and the reply follows it');
is($wd->execute('return document.querySelectorAll("#log .failed, #log .error, #log .retry").length'),
	0, 'and the failure mark is gone');

# --- Input method editors ----------------------------------------------------

# A Korean IME commits the composed syllable with Enter; that keydown comes
# with isComposing (or keyCode 229 in Safari) and must not send the form,
# while a plain Enter must. WebDriver cannot drive an IME, so the keydowns
# are dispatched as the browser would send them.
is_deeply($wd->execute(<<'JS'), [JSON::PP::true, JSON::PP::true, JSON::PP::false],
	var input = document.getElementById('message');
	function enter(init) {
		var e = new KeyboardEvent('keydown', Object.assign({ key: 'Enter', bubbles: true,
			cancelable: true }, init));
		input.dispatchEvent(e);
		return e.defaultPrevented;
	}
	return [enter({ isComposing: true }), enter({ keyCode: 229 }), enter({})];
JS
	'Enter that ends an IME composition is held back; a plain Enter is not');

# --- A 4xx answer ------------------------------------------------------------

my $before = scalar @{ messages($wd) };
$wd->execute(<<'JS');
	document.getElementById('message').value = 'x'.repeat(70000);
	document.getElementById('chat').requestSubmit();
JS
my $too_big = $wd->wait_for(sub {
	my ($last) = reverse @{ messages($wd) };
	return $last && $last->{state} eq 'failed' && length($last->{text}) == 70000 && $last;
}, $WAIT);
ok($too_big, 'a message over the size limit stays, marked failed');
is($too_big && $too_big->{error}, 'The message is too large.', "and nginx's JSON 413 sentence is shown");
is(scalar @{ messages($wd) }, $before + 1, 'no reply is added for it');

# --- Looks ------------------------------------------------------------------

# The newest message wholly inside the visible part of the log (the scroll
# to it may be smooth, so this is waited for).
my $NEWEST_IN_VIEW = <<'JS';
	var log = document.getElementById('log').getBoundingClientRect();
	var last = document.querySelector('#log .msg:last-child').getBoundingClientRect();
	return last.top >= log.top - 1 && last.bottom <= log.bottom + 1;
JS

my $long = ('long' x 60) . ' and some words after a very long one';
type_into_message("$long$ENTER");
wait_log_ends_with($wd, [user => $long], [bot => "received $long"]);
ok($wd->wait_for(sub { $wd->execute($NEWEST_IN_VIEW) }, 3), 'the newest message is scrolled into view');
$wd->screenshot($t->dir . '/chat-desktop.png');

$wd->window_rect(width => 375, height => 740);
ok($wd->execute('return document.documentElement.scrollWidth <= window.innerWidth'),
	'at phone width nothing sticks out sideways');
ok($wd->wait_for(sub { $wd->execute($NEWEST_IN_VIEW) }, 3),
	'and the newest message is still in view');
$wd->screenshot($t->dir . '/chat-phone.png');
note('screenshots in ' . $t->dir);

# --- No problems recorded ----------------------------------------------------

is(page_problems(), '[]', 'no CSP violation or script error in the whole run');
# The console also shows what happened before chat.js ran. The 404 of the
# history the server does not keep, the 502 while the backend was down and
# the 413 of the oversized message are expected there.
my @severe = grep { $_->{level} eq 'SEVERE' && $_->{message} !~ /status of (404|502|413)/ }
  $wd->browser_log;
is_deeply([map { $_->{message} } @severe], [], 'no errors in the browser console');

$wd->quit;
$t->done(backend_was_down => 1);

done_testing();
