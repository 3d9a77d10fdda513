#!/usr/bin/perl

# Event streams and streamed replies in a real browser: headless Chromium
# windows (WebDriver sessions) through nginx and chat-fcgi with a SQLite
# store. The page's event-stream parser against the standard's framing rules;
# two windows on GET /chat/events seeing each other without a long-poll; a
# reply that grows part by part (--stream-pace) and ends as the stored
# reply; a stream cut by kill -9 and retried with the same client id; a
# backend restart (the browser's own reconnect) and an outage with a queued
# message (long-polls, then events again); a server that refuses streams
# (--max-streams 0) and a browser without EventSource or readable bodies,
# where long-polls and whole answers do the same work; no CSP violation or
# script error anywhere. Long-polling alone: t/browser_rooms.t.

use strict;
use warnings;

use utf8;
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);

use lib 't/lib';
use WebDriver;

BEGIN {
	if (my $why = WebDriver->available) { plan skip_all => $why }
}

use ChatTest;
use ChatPage;

binmode Test::More->builder->$_, ':encoding(UTF-8)' for qw(output failure_output todo_output);

my $PACE = 150;    # ms between the parts of a streamed reply

my $t = ChatTest->new(backend_args => ['--stream-pace', $PACE]);

my $wa = WebDriver->new(dir => $t->dir);
my $wb = WebDriver->new(dir => $t->dir);

sub receiving {
	my ($wd, $how) = @_;
	return $wd->wait_for(sub { (data_attr($wd, 'chatReceiving') // '') eq $how }, $WAIT);
}

# The page's requests so far to a path under /chat/ (messages, events, or
# the page's own POSTs to ./), as [url, ...] from the resource timeline.
sub requests_to {
	my ($wd, $what) = @_;
	return $wd->execute(<<'JS', $what);
	var re = new RegExp('/chat/' + arguments[0] + '(\\?|$)');
	return performance.getEntriesByType('resource')
		.filter(function (e) { return re.test(e.name); })
		.map(function (e) { return e.name; });
JS
}

sub long_polls { return [grep { /[?&]after=/ } @{ requests_to($_[0], 'messages') }] }

# What the server has stored for a room, oldest first.
sub stored {
	my ($server, $room) = @_;
	my $r = $server->request(method => 'GET', path => "/chat/messages?room=$room&limit=500");
	my $j = $server->json($r);
	return $j && ref $j->{entries} eq 'ARRAY' ? $j->{entries} : [];
}

sub no_duplicates {
	my ($log, $name) = @_;
	my %seq;
	my @twice = grep { defined $_->{seq} && $seq{ $_->{seq} }++ } @$log;
	is_deeply(\@twice, [], "$name: no message shown twice");
}

# Records every text a streamed reply shows while it grows, in window.grown.
sub watch_growth {
	my ($wd) = @_;
	$wd->execute(<<'JS');
	window.grown = [];
	if (window.growthWatcher) window.growthWatcher.disconnect();
	window.growthWatcher = new MutationObserver(function () {
		document.querySelectorAll('#log .msg.bot.streaming .text').forEach(function (t) {
			if (window.grown[window.grown.length - 1] !== t.textContent) window.grown.push(t.textContent);
		});
	});
	window.growthWatcher.observe(document.getElementById('log'),
		{ subtree: true, childList: true, characterData: true, attributes: true });
JS
}

# --- The parser of text/event-stream ----------------------------------------

# Each input is given to the page's parser whole, cut in two at every
# position, and one character at a time: the events must not depend on how
# the network cut the stream. Expected: [type, data, id] per event.
my @cases = (
	['the contract: retry, comments, ids, entries',
		"retry: 2000\n\nid: 7\nevent: message\ndata: {\"seq\":7,\"text\":\"a\"}\n\n: keep-alive\n\n"
		  . "id: 8\nevent: message\ndata: {\"seq\":8}\n\n",
		[['message', '{"seq":7,"text":"a"}', '7'], ['message', '{"seq":8}', '8']]],
	['a streamed reply with CRLF',
		"event: delta\r\ndata: {\"text\":\"rec\"}\r\n\r\nevent: delta\r\ndata: {\"text\":\"eived\"}\r\n\r\n"
		  . "event: done\r\ndata: {\"message\":\"received\"}\r\n\r\n",
		[['delta', '{"text":"rec"}', ''], ['delta', '{"text":"eived"}', ''],
		 ['done', '{"message":"received"}', '']]],
	['lines ended by CR alone; the type is reset after each event',
		"event: delta\rdata: x\r\rdata: y\r\r",
		[['delta', 'x', ''], ['message', 'y', '']]],
	['CRLF is one line end, also when cut between CR and LF',
		"data: a\r\ndata: b\r\n\r\n",
		[['message', "a\nb", '']]],
	['mixed line ends',
		"data: a\n\rdata: b\r\n\n",
		[['message', 'a', ''], ['message', 'b', '']]],
	['data lines join with LF; one space after the colon is dropped, no more',
		"data:no space\ndata:  two spaces\ndata\ndata: \n\n",
		[['message', "no space\n two spaces\n\n", '']]],
	['no data, no event; the id is kept for the next one',
		"event: delta\n\n: a comment\n\nretry: 10\n\nid: 3\n\nfoo: bar\ndata: z\n\n",
		[['message', 'z', '3']]],
	['an event cut before its blank line is dropped',
		"event: delta\ndata: {\"text\":\"x\"}\n\nevent: done\ndata: {}\n",
		[['delta', '{"text":"x"}', '']]],
	['an event cut inside a line is dropped',
		"event: done\ndata: {\"mess",
		[]],
	['text beyond ASCII', "data: 안녕 ✓ \x{1F600}\n\n", [['message', "안녕 ✓ \x{1F600}", '']]],
);

$wa->get($t->url('/chat/'));
ok($wa->wait_for('window.chatFcgi && typeof window.chatFcgi.SSEParser === "function"', $WAIT),
	'the page offers its event-stream parser to tests');
my $parsed = $wa->execute(<<'JS', [map { $_->[1] } @cases]);
	var P = window.chatFcgi.SSEParser;
	function run(pieces) {
		var p = new P(), out = [];
		pieces.forEach(function (s) { out = out.concat(p.push(s, false)); });
		return out.concat(p.push('', true)).map(function (e) { return [e.type, e.data, e.id]; });
	}
	return arguments[0].map(function (s) {
		var whole = run([s]);
		var same = JSON.stringify(whole);
		var badCuts = [];
		for (var i = 1; i < s.length; i++) {
			if (JSON.stringify(run([s.slice(0, i), s.slice(i)])) !== same) badCuts.push(i);
		}
		var byChar = JSON.stringify(run(Array.from(s))) === same;
		// The end given with the last piece, rather than after it.
		var p = new P();
		var endWithLast = JSON.stringify(p.push(s, true).map(function (e) {
			return [e.type, e.data, e.id];
		})) === same;
		return { whole: whole, badCuts: badCuts, byChar: byChar, endWithLast: endWithLast };
	});
JS
for my $i (0 .. $#cases) {
	my ($name, undef, $want) = @{ $cases[$i] };
	my $got = $parsed->[$i];
	is_deeply($got->{whole}, $want, "parser: $name");
	is_deeply($got->{badCuts}, [], "parser: $name: the same, cut in two anywhere");
	ok($got->{byChar} && $got->{endWithLast}, "parser: $name: the same, one character at a time");
}

# --- Two windows on the event stream --------------------------------------------

my $room = 'events-' . int(rand(1e9));
$wa->get($t->url("/chat/?room=$room"));
$wb->get($t->url("/chat/?room=$room"));
ok(receiving($wa, 'events') && receiving($wb, 'events'), 'both windows listen to the event stream');
is(data_attr($wa, 'chatConnection'), 'ok', 'and are not reconnecting');

my $t0 = time;
say_in($wa, 'hello over events');
ok(wait_stored_log_ends_with($wb, [other => 'hello over events'], [bot => 'received hello over events']),
	"B sees A's message and the reply");
note(sprintf "A's message reached B %.2f s after it was typed", time - $t0);
ok(wait_stored_log_ends_with($wa, [user => 'hello over events'], [bot => 'received hello over events']),
	'A sees its message, stored, and the whole reply');
$t0 = time;
say_in($wb, '안녕 from B <b>');
ok(wait_stored_log_ends_with($wa, [other => '안녕 from B <b>'], [bot => 'received 안녕 from B <b>']),
	"A sees B's message (Korean and markup as text)");
note(sprintf "B's message reached A %.2f s after it was typed", time - $t0);
is($wa->execute('return document.querySelectorAll("#log b").length'), 0, 'no element made from text');
is_deeply(long_polls($wa), [], 'A made no long-poll: it all came through the event stream');
is_deeply(long_polls($wb), [], 'B neither');

# --- A reply that grows ---------------------------------------------------------

watch_growth($wa);
my $words = 'watch this reply grow one part at a time';
say_in($wa, $words);
ok($wa->wait_for('document.querySelector("#log .msg.bot.streaming")', $WAIT),
	'the reply shows while it is still arriving (.streaming)');
$wa->screenshot($t->dir . '/growing.png');
my $log = wait_stored_log_ends_with($wa, [user => $words], [bot => "received $words"]);
ok($log, 'then it is the whole reply, stored (a seq), no longer streaming');
my $grown = $wa->execute('return window.grown');
note('texts shown while it grew: ' . join(' | ', @$grown));
my $final = "received $words";
my @partial = grep { length($_) && length($_) < length($final) && index($final, $_) == 0 } @$grown;
cmp_ok(scalar @partial, '>=', 2, 'it showed at least two partial texts, each a beginning of the reply');
is_deeply([grep { index($final, $_) != 0 } @$grown], [], 'every text it showed was a beginning of the reply');
ok(!grep({ length($grown->[$_]) < length($grown->[$_ - 1]) } 1 .. $#$grown), 'and it only grew');
my $plain = $t->json($t->post(JSON::PP->new->utf8->encode({ message => $words })));
is($plain && $plain->{message}, $final, 'the finished text is the non-streamed reply');
ok(wait_stored_log_ends_with($wb, [other => $words], [bot => $final]), 'B gets the whole reply too');
my @replies = grep { $_->{text} eq $final } @{ messages($wa) };
is(scalar @replies, 1, 'A shows the reply once, although events brought it before the stream ended');
is($wa->execute('return document.querySelectorAll("#log [aria-busy]").length'), 0,
	'nothing is left marked busy');
my $posts = $wa->execute(<<'JS');
	return performance.getEntriesByType('resource')
		.filter(function (e) { return e.initiatorType === 'fetch' && /\/chat\/$/.test(e.name); })
		.map(function (e) { return Math.round(e.responseEnd - e.responseStart); });
JS
note('ms from the first byte to the end of each post\'s answer: ' . join(' ', @$posts));

# --- Streams cut half-way ---------------------------------------------------------

# kill -9 of the backend after the first part: the page reads a stream that
# ends before "done". The exchange was stored before the first part, so the
# event stream has usually brought it already: the page shows it, once.
# Then the same with A's receiving cut off (its event stream and long-polls
# blocked in the browser): A sends the message again with the same client
# id once the backend is back, and shows the replayed reply, once.
sub cut_reply {
	my ($text) = @_;
	my $posts = () = $t->access_log =~ m{^HTTP POST /chat/ }mg;
	say_in($wa, $text);
	ok($wa->wait_for('document.querySelector("#log .msg.bot.streaming")', $WAIT), "$text: a reply starts to grow");
	$t->signal_backend('KILL');
	sleep 0.5;
	$t->start_backend;
	local $WAIT = 25;    # the page's next try may be several seconds away (backoff)
	ok(wait_stored_log_ends_with($wa, [user => $text], [bot => "received $text"]),
		"$text: after the cut, the whole reply is shown");
	my $after = () = $t->access_log =~ m{^HTTP POST /chat/ }mg;
	my @entries = grep { $_->{text} =~ /\Q$text\E$/ } @{ stored($t, $room) };
	is_deeply([map { $_->{role} } @entries], [qw(user bot)],
		"$text: the server stored the message and its reply once each");
	is(scalar(grep { $_->{text} eq "received $text" } @{ messages($wa) }), 1, "$text: A shows the reply once");
	ok(wait_stored_log_ends_with($wb, [other => $text], [bot => "received $text"]), "$text: B gets it too");
	return $after - $posts;
}

my $sent = cut_reply('a reply cut off half-way');
note("posts of it: $sent");

$wa->cdp('Network.enable');
$wa->cdp('Network.setBlockedURLs', { urls => ['*/chat/events*', '*/chat/messages*'] });
# The open stream is not blocked: a restart ends it, and its reconnect is.
$t->stop_backend;
$t->start_backend;
ok(receiving($wa, 'long-poll') && $wa->wait_for(sub { (data_attr($wa, "chatConnection") // "") eq "reconnecting" }, $WAIT),
	'with its event stream and long-polls blocked, A is reconnecting');
$sent = cut_reply('a reply cut off and sent again');
cmp_ok($sent, '>=', 2, "A sent it again after the cut ($sent posts)");
$wa->cdp('Network.setBlockedURLs', { urls => [] });
$WAIT = 25;
ok(receiving($wa, 'events') && receiving($wb, 'events'), 'unblocked, both windows listen to events again');
$WAIT = 10;
is_deeply([map { $_->{seq} } @{ messages($wa) }], [map { $_->{seq} } @{ stored($t, $room) }],
	'A has every stored entry, in order, once');

# --- The backend restarts: the browser's own reconnect -------------------------------

# The stream ends cleanly at shutdown; EventSource reconnects by itself after
# the server's retry (2 s), with Last-Event-ID, to the new backend.
my $polls_before = @{ long_polls($wb) };
$t->stop_backend;
$t->start_backend;
note('backend restarted');
sleep 3;
say_in($wa, 'after a restart');
ok(wait_stored_log_ends_with($wb, [other => 'after a restart'], [bot => 'received after a restart']),
	'B gets a message posted after the restart');
is(data_attr($wb, 'chatReceiving'), 'events', 'B is on the event stream');
is(scalar @{ long_polls($wb) }, $polls_before, 'B did not fall back to long-polls: its stream reconnected');
# An open stream is logged when it ends: those that the shutdown ended.
my $ended = () = $t->access_log =~ m{^HTTP GET /chat/events\?room=\Q$room\E&after=\d+ 200 }mg;
cmp_ok($ended, '>=', 2, "nginx logged the streams the shutdown ended ($ended)");
no_duplicates(messages($wb), 'B');
is_deeply([map { $_->{seq} } @{ messages($wb) }], [map { $_->{seq} } @{ stored($t, $room) }],
	'B has every stored entry, in order, once');

# --- An outage: long-polls with backoff, the queue, then events again -------------

$t->stop_backend;
say_in($wa, 'queued on events');
ok($wa->wait_for(sub { (data_attr($wa, 'chatConnection') // '') eq 'reconnecting' }, $WAIT),
	'with the backend down, A says it is reconnecting');
ok($wb->wait_for(sub { (data_attr($wb, 'chatConnection') // '') eq 'reconnecting' }, $WAIT),
	'so does B');
is(data_attr($wb, 'chatReceiving'), 'long-poll', 'B fell back to long-polls (which back off)');
my ($queued) = grep { $_->{text} eq 'queued on events' } @{ messages($wa) };
ok($queued && $queued->{state} eq 'pending', 'the message waits, pending');
sleep 4;
my $down_polls = long_polls($wb);
cmp_ok(scalar @$down_polls - $polls_before, '<=', 6, 'B did not poll in a loop while the backend was down')
	and note('long-polls while down: ' . (@$down_polls - $polls_before));
$t->start_backend;
$WAIT = 25;
ok(wait_stored_log_ends_with($wa, [user => 'queued on events'], [bot => 'received queued on events']),
	'once the backend is back, the queued message is sent and answered');
ok(wait_stored_log_ends_with($wb, [other => 'queued on events'], [bot => 'received queued on events']),
	'and B gets it');
$WAIT = 10;
ok(receiving($wa, 'events') && receiving($wb, 'events'), 'both windows are back on the event stream');
ok($wb->wait_for(sub { (data_attr($wb, 'chatConnection') // '') eq 'ok' }, $WAIT), 'B is no longer reconnecting');
my @copies = grep { ($_->{client_id} // '') eq $queued->{client_id} && $_->{role} eq 'user' }
  @{ stored($t, $room) };
is(scalar @copies, 1, 'the server stored the queued message exactly once');
for ([A => $wa], [B => $wb]) {
	my ($name, $wd) = @$_;
	my $l = messages($wd);
	no_duplicates($l, $name);
	is_deeply([map { $_->{seq} } @$l], [map { $_->{seq} } @{ stored($t, $room) }],
		"$name resumed with no gap and no duplicate");
}
$t0 = time;
say_in($wb, 'on events again');
ok(wait_stored_log_ends_with($wa, [other => 'on events again'], [bot => 'received on events again']),
	'a new message reaches A');
$wa->screenshot($t->dir . '/events-a.png');

for ([A => $wa], [B => $wb]) {
	my ($name, $wd) = @$_;
	is(data_attr($wd, 'chatErrors'), '[]', "$name: no CSP violation or script error");
	# While the backend was down nginx answered 502 (to polls, posts and the
	# stream's reconnect).
	my @severe = grep { $_->{level} eq 'SEVERE' && $_->{message} !~ /status of 502|EventSource.*502/ }
	  $wd->browser_log;
	is_deeply([map { $_->{message} } @severe], [], "$name: no errors in the browser console");
}

# --- A server that holds no stream: long-polls, unnoticed ----------------------------

# --max-streams 0 answers every GET /chat/events with a JSON 503 at once:
# the page falls back to long-polls without saying anything, and posts still
# stream their replies.
my $full = ChatTest->new(backend_args => ['--max-streams', '0', '--stream-pace', $PACE]);
my $full_room = 'full-' . int(rand(1e9));
$wa->get($full->url("/chat/?room=$full_room"));
$wb->get($full->url("/chat/?room=$full_room"));
ok(receiving($wa, 'long-poll') && receiving($wb, 'long-poll'),
	'on a server that holds no stream, both windows long-poll');
cmp_ok(scalar @{ requests_to($wb, 'events') }, '>=', 1, 'after asking for the event stream');
watch_growth($wb);
say_in($wb, 'through long-polls');
ok(wait_stored_log_ends_with($wa, [other => 'through long-polls'], [bot => 'received through long-polls']),
	'A gets B\'s message through a long-poll');
ok(wait_stored_log_ends_with($wb, [user => 'through long-polls'], [bot => 'received through long-polls']),
	'B gets the reply');
cmp_ok(scalar(grep { length($_) && index('received through long-polls', $_) == 0 } @{ $wb->execute('return window.grown') }),
	'>=', 2, 'which grew as its parts arrived');
cmp_ok(scalar @{ long_polls($wa) }, '>=', 1, 'A used long-polls');
is(data_attr($wa, 'chatConnection'), 'ok', 'the refused stream is not shown as a lost connection');
is(data_attr($wb, 'chatConnection'), 'ok', 'in B either');
my $refused = () = $full->access_log =~ m{^HTTP GET /chat/events\?\S* 503 }mg;
cmp_ok($refused, '>=', 2, "nginx's access log shows the 503s ($refused)");
cmp_ok($refused, '<=', 4, 'one per window, not a retry loop');
for ([A => $wa], [B => $wb]) {
	my ($name, $wd) = @$_;
	is(data_attr($wd, 'chatErrors'), '[]', "$name: no CSP violation or script error");
	# The browser itself reports the refused stream in the console.
	my @severe = grep { $_->{level} eq 'SEVERE' && $_->{message} !~ m{/chat/events.*(status of 503|MIME type)} }
	  $wd->browser_log;
	is_deeply([map { $_->{message} } @severe], [], "$name: nothing else in the browser console");
}
$_->get($t->url("/chat/?room=$room")) for $wa, $wb;    # off $full before it stops
ok(receiving($wa, 'events') && receiving($wb, 'events'), 'both windows back on the first server, on events');
$full->done;

# --- Without history: the stateless chat's replies grow too ----------------------

my $none = ChatTest->new(backend_args => ['--store', 'none', '--stream-pace', $PACE]);
$wa->get($none->url('/chat/'));
ok($wa->wait_for('document.documentElement.dataset.chatMode === "stateless"', $WAIT),
	'on a server without history, the page runs the stateless chat');
watch_growth($wa);
say_in($wa, 'grow without a room');
ok(wait_log_ends_with($wa, [user => 'grow without a room'], [bot => 'received grow without a room']),
	'a message and its whole reply');
cmp_ok(scalar(grep { length($_) && length($_) < 28 && index('received grow without a room', $_) == 0 }
	@{ $wa->execute('return window.grown') }), '>=', 2, 'which grew as its parts arrived');
say_in($wa, 'cut without a room');
ok($wa->wait_for('document.querySelector("#log .msg.bot.streaming")', $WAIT), 'another reply starts to grow');
$none->signal_backend('KILL');
ok($wa->wait_for(sub {
	my $l = messages($wa);
	return $l->[-1]{text} eq 'cut without a room' && $l->[-1]{state} eq 'failed';
}, $WAIT), 'cut off, the message is marked failed, as for a lost connection');
is($wa->execute('return document.querySelectorAll("#log .msg.streaming").length'), 0,
	'and the part of the reply that came is gone');
$none->start_backend;
$wa->click($wa->find('#log .msg.failed button.retry'));
ok(wait_log_ends_with($wa, [user => 'cut without a room'], [bot => 'received cut without a room']),
	'Retry brings the whole reply');
is(data_attr($wa, 'chatErrors'), '[]', 'stateless: no CSP violation or script error');
my @severe_none = grep { $_->{level} eq 'SEVERE' && $_->{message} !~ /status of 404/ } $wa->browser_log;
is_deeply([map { $_->{message} } @severe_none], [], 'stateless: no errors in the browser console but the 404 of the history');
$wa->get($t->url("/chat/?room=$room"));
ok(receiving($wa, 'events'), 'A is back in its room, on events');
$none->done(backend_was_down => 1);

# --- A hidden tab lets its stream go, and resumes when shown --------------

# What the browser does when a tab goes to the background or comes back.
sub set_visibility {
	my ($wd, $state) = @_;
	$wd->execute(<<"JS");
	Object.defineProperty(document, 'visibilityState', { configurable: true, get: function () { return '$state'; } });
	document.dispatchEvent(new Event('visibilitychange'));
JS
}

sub entries_seen { [map { $_->{seq} } grep { defined $_->{seq} } @{ messages($_[0]) }] }

ok(receiving($wb, 'events'), 'B listens to the stream');
my $streams = $t->metric('chat_fcgi_streams');
$wa->execute('document.documentElement.dataset.chatRestAfter = "1"');
set_visibility($wa, 'hidden');
ok(receiving($wa, 'resting'), 'hidden for a second, A stops receiving');
ok($wa->wait_for(sub { $t->metric('chat_fcgi_streams') == $streams - 1 }, $WAIT),
	'and closes its event stream (the server holds one fewer)');
is(data_attr($wa, 'chatConnection'), 'ok', 'which is not shown as trouble');
say_in($wb, 'while A was hidden');
ok(wait_stored_log_ends_with($wb, [user => 'while A was hidden'], [bot => 'received while A was hidden']),
	'B posts meanwhile');
sleep 0.5;
ok(!grep({ $_->{text} eq 'while A was hidden' } @{ messages($wa) }), 'resting, A has not received it');
set_visibility($wa, 'visible');
ok(receiving($wa, 'events'), 'shown again, A listens to the event stream again');
ok(wait_stored_log_ends_with($wa, [other => 'while A was hidden'], [bot => 'received while A was hidden']),
	'and shows what was said while it was hidden');
no_duplicates(messages($wa), 'A after resting');
is_deeply(entries_seen($wa), [map { $_->{seq} } @{ stored($t, $room) }], 'no gap: A shows every stored entry');

# --- A stream that never opens; a browser without EventSource or readable bodies ------

# An older browser: no EventSource, no Response.body. The page long-polls
# from the start and posts for whole JSON answers, as before streams.
my $wc = WebDriver->new(dir => $t->dir);

# First, a stream that never opens (as behind a proxy that buffers it): the
# browser holds every GET /chat/events unanswered. After 10 s the page
# long-polls, without saying anything.
$wc->cdp('Fetch.enable', { patterns => [{ urlPattern => '*/chat/events*' }] });
$wc->get($t->url("/chat/?room=$room"));
ok($wc->wait_for(sub { (data_attr($wc, 'chatMode') // '') eq 'room' }, $WAIT), 'a third window joins the room');
my $held_since = time;
ok($wc->wait_for(sub { (data_attr($wc, 'chatReceiving') // '') eq 'long-poll' }, 20),
	'its stream held back unopened, it long-polls')
	and note(sprintf 'after %.1f s', time - $held_since);
is(data_attr($wc, 'chatConnection'), 'ok', 'without saying it is reconnecting');
say_in($wa, 'to a window whose stream never opened');
ok(wait_stored_log_ends_with($wc, [other => 'to a window whose stream never opened'],
	[bot => 'received to a window whose stream never opened']), "A's message reaches it");
$wc->cdp('Fetch.disable');

$wc->before_scripts('delete window.EventSource; delete window.ReadableStream;');
$wc->get($t->url("/chat/?room=$room"));
ok(receiving($wc, 'long-poll'), 'without EventSource the page long-polls');
is($wc->execute('return typeof EventSource'), 'undefined', '(EventSource is really gone)');
say_in($wc, 'from an old browser');
ok(wait_stored_log_ends_with($wc, [user => 'from an old browser'], [bot => 'received from an old browser']),
	'its message is answered (a whole JSON answer)');
ok(wait_stored_log_ends_with($wa, [other => 'from an old browser'], [bot => 'received from an old browser']),
	'and reaches A on events');
say_in($wa, 'to the old browser');
ok(wait_stored_log_ends_with($wc, [other => 'to the old browser'], [bot => 'received to the old browser']),
	"A's message reaches it through a long-poll");
is_deeply(requests_to($wc, 'events'), [], 'it never asked for the event stream');
is(data_attr($wc, 'chatErrors'), '[]', 'no CSP violation or script error');
is_deeply([map { $_->{message} } grep { $_->{level} eq 'SEVERE' } $wc->browser_log], [],
	'no errors in its console');

# Long-polls rest too.
$wc->execute('document.documentElement.dataset.chatRestAfter = "1"');
set_visibility($wc, 'hidden');
ok(receiving($wc, 'resting'), 'hidden for a second, the old browser stops long-polling');
my $polls = scalar @{ long_polls($wc) };
say_in($wa, 'while the old browser was hidden');
ok(wait_stored_log_ends_with($wa, [user => 'while the old browser was hidden'],
	[bot => 'received while the old browser was hidden']), 'A posts meanwhile');
sleep 0.5;
ok(!grep({ $_->{text} eq 'while the old browser was hidden' } @{ messages($wc) }), 'resting, it has not received it');
is(scalar @{ long_polls($wc) }, $polls, 'and asked nothing more');
set_visibility($wc, 'visible');
ok(wait_stored_log_ends_with($wc, [other => 'while the old browser was hidden'],
	[bot => 'received while the old browser was hidden']), 'shown again, it long-polls what it missed');
ok(receiving($wc, 'long-poll'), 'and goes on long-polling');
no_duplicates(messages($wc), 'the old browser after resting');
$wc->quit;

is(data_attr($wa, 'chatErrors'), '[]', 'A: still no CSP violation or script error');
$wa->quit;
$wb->quit;
$t->done(backend_was_down => 1);

done_testing();
