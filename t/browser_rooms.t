#!/usr/bin/perl

# Rooms in a real browser: two headless Chromium windows (two WebDriver
# sessions) in one room, through nginx and chat-fcgi with a SQLite store.
# Each sees what the other says, a reload shows the history, a message typed
# while the backend is down waits in a queue that survives a reload and is
# stored exactly once when the backend is back, and while it is down the
# page says it is reconnecting and spaces its requests out. The windows
# have no EventSource, so all of it goes through long-polls.

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


my $t = ChatTest->new;    # with a SQLite store in its temp dir

my $wa = WebDriver->new(dir => $t->dir);
my $wb = WebDriver->new(dir => $t->dir);
# Long-polling is what this file is about: both windows are browsers without
# EventSource, which long-poll from the start (the event stream, and the
# fallback from it, are in t/browser_events.t).
$_->before_scripts('delete window.EventSource;') for $wa, $wb;

sub room_mode {
	my ($wd) = @_;
	return $wd->wait_for(sub { (data_attr($wd, 'chatMode') // '') eq 'room' }, $WAIT);
}

# What the server has stored for a room, oldest first.
sub stored {
	my ($room) = @_;
	my $r = $t->request(method => 'GET', path => "/chat/messages?room=$room&limit=500");
	my $j = $t->json($r);
	return $j && ref $j->{entries} eq 'ARRAY' ? $j->{entries} : [];
}

sub no_duplicates {
	my ($log, $name) = @_;
	my %seq;
	my @twice = grep { defined $_->{seq} && $seq{ $_->{seq} }++ } @$log;
	is_deeply(\@twice, [], "$name: no message shown twice");
}

# --- A private room ----------------------------------------------------------

$wa->get($t->url('/chat/'));
ok(room_mode($wa), 'a plain /chat/ joins a room (the backend keeps history)');
ok($wa->wait_for(sub { (data_attr($wa, 'chatReceiving') // '') eq 'long-poll' }, $WAIT),
	'without EventSource, the page long-polls');
my $private = $wa->execute('return document.getElementById("room-name").textContent');
like($private, qr/^[A-Za-z0-9_-]{8,64}$/, 'it is a private room with a random name');
is($wa->execute('return document.getElementById("room-link").getAttribute("href")'),
	$t->url("/chat/?room=$private"), 'the share link joins that room');
ok($wa->execute('return !document.getElementById("room").hidden && !document.getElementById("room-copy").hidden'),
	'the room, its link and a copy button are shown');
$wa->refresh;
ok(room_mode($wa), 'after a reload');
is($wa->execute('return document.getElementById("room-name").textContent'), $private,
	'a reload keeps the same private room');
$wb->get($t->url('/chat/'));
ok(room_mode($wb), 'another browser joins a room too');
isnt($wb->execute('return document.getElementById("room-name").textContent'), $private,
	'but another private room');

$wa->get($t->url('/chat/?room=' . 'not%20a%20room!'));
ok($wa->wait_for('!document.getElementById("notice").hidden', $WAIT), 'an invalid room name is refused');
like($wa->execute('return document.getElementById("notice").textContent'), qr/not a room name/,
	'with a notice saying why');
is($wa->execute('return document.getElementById("room-name").textContent'), $private,
	'and the page stays in the private room');
is($wa->execute('return location.search'), '', 'the bad name leaves the address bar');

# --- Two windows in one room -------------------------------------------------

my $room = 'lobby-' . int(rand(1e9));
$wa->get($t->url("/chat/?room=$room"));
$wb->get($t->url("/chat/?room=$room"));
ok(room_mode($wa) && room_mode($wb), "both windows joined $room");
is($wa->execute('return document.getElementById("room-name").textContent'), $room,
	'the room name is shown');
is_deeply(shown($wa), [], 'a new room is empty');

my $t0 = time;
say_in($wa, 'hello from A');
ok(wait_stored_log_ends_with($wa, [user => 'hello from A'], [bot => 'received hello from A']),
	'A sees its message, stored, and the reply');
ok(wait_stored_log_ends_with($wb, [other => 'hello from A'], [bot => 'received hello from A']),
	"B sees A's message and the reply");
my $lag = time - $t0;
note(sprintf "A's message reached B %.2f s after it was typed", $lag);
cmp_ok($lag, '<', 5, "B sees A's message within seconds, not at the next reload");

$t0 = time;
say_in($wb, '안녕 from B <b>');
ok(wait_stored_log_ends_with($wb, [user => '안녕 from B <b>'], [bot => 'received 안녕 from B <b>']),
	'B sees its own message and the reply');
ok(wait_stored_log_ends_with($wa, [other => '안녕 from B <b>'], [bot => 'received 안녕 from B <b>']),
	"A sees B's message (Korean and markup as text)");
note(sprintf "B's message reached A %.2f s after it was typed", time - $t0);
is($wa->execute('return document.querySelectorAll("#log b").length'), 0, 'no element made from text');

# Several quickly, from both sides: everyone sees the same order, once each.
say_in($wa, "A$_") for 1 .. 3;
say_in($wb, "B$_") for 1 .. 3;
my $ok = $wa->wait_for(sub { @{ messages($wa) } == 16 && !grep { $_->{state} } @{ messages($wa) } }, $WAIT)
  && $wb->wait_for(sub { @{ messages($wb) } == 16 && !grep { $_->{state} } @{ messages($wb) } }, $WAIT);
ok($ok, 'both windows end with all 16 messages, none pending');
my $log_a = messages($wa);
my $log_b = messages($wb);
no_duplicates($log_a, 'A');
no_duplicates($log_b, 'B');
is_deeply([map { $_->{seq} } @$log_a], [map { $_->{seq} } @$log_b],
	'both windows show the same messages in the same order');
is_deeply([map { $_->{seq} } @$log_a], [sort { $a <=> $b } map { $_->{seq} } @$log_a],
	'in the order the server stored them');
is_deeply([map { $_->{text} } @$log_a], [map { $_->{text} } @{ stored($room) }],
	'which is what the server has');
my %mine = (user => 'other', other => 'user', bot => 'bot');
is_deeply([map { $mine{ $_->{who} } } @$log_a], [map { $_->{who} } @$log_b],
	"each window shows its own messages as its own, and the other's as someone else's");

$wa->screenshot($t->dir . '/room-a.png');
$wb->screenshot($t->dir . '/room-b.png');

# --- History after a reload ----------------------------------------------------

my $before = shown($wa);
$wa->refresh;
ok($wa->wait_for(sub { @{ messages($wa) } == @$before }, $WAIT), 'a reload brings the history back');
is_deeply(shown($wa), $before, 'the same conversation, in order, mine still mine');

# --- The backend goes away: a queued message, sent once when it is back -------

$t->stop_backend;
say_in($wa, 'sent while down');
ok($wa->wait_for(sub { (data_attr($wa, 'chatConnection') // '') eq 'reconnecting' }, $WAIT),
	'with the backend down, the page says it is reconnecting');
ok($wa->execute('return !document.getElementById("connection").hidden'),
	'"Reconnecting…" is shown') and note('shown: ' . $wa->execute('return document.getElementById("connection").textContent'));
my ($queued) = grep { $_->{text} eq 'sent while down' } @{ messages($wa) };
ok($queued && $queued->{state} eq 'pending' && $queued->{client_id}, 'the message waits, marked pending');

$wa->refresh;
($queued) = grep { $_->{text} eq 'sent while down' } @{ messages($wa) };
ok($queued && $queued->{state} eq 'pending', 'a reload keeps the queued message');
is_deeply(shown($wa), [@$before, [user => 'sent while down']],
	'and the conversation (saved by the page), with the queued message last');

# Requests space out while it is down: not a hot loop.
sleep 8;
my $polls = $wa->execute(<<'JS');
	return performance.getEntriesByType('resource')
		.filter(function (e) { return /\/chat\/messages\?/.test(e.name); })
		.map(function (e) { return e.startTime; });
JS
my @gaps = map { ($polls->[$_] - $polls->[$_ - 1]) / 1000 } 1 .. $#$polls;
note('seconds between polls while down: ' . join(' ', map { sprintf '%.2f', $_ } @gaps));
cmp_ok(scalar @$polls, '<=', 8, 'in 8 s down, the reloaded page polled a few times, not in a loop');
# The backoff doubles with a jitter of 25%: each wait is at least
# 2 x 0.75 / 1.25 = 1.2 times the one before, and the third is over 1.5 s.
my $growing = @gaps >= 2 && !grep { $gaps[$_] < 1.15 * $gaps[$_ - 1] } 1 .. $#gaps;
ok($growing && $gaps[-1] >= 1.4, q{and waits longer each time, up to seconds})
	or diag explain \@gaps;
ok($wb->wait_for(sub { (data_attr($wb, 'chatConnection') // '') eq 'reconnecting' }, $WAIT),
	'the other window says it is reconnecting too');
$wa->screenshot($t->dir . '/room-a-down.png');

$t->start_backend;
# The page's next try may be up to 10 s away (the longest backoff).
$WAIT = 25;
ok(wait_stored_log_ends_with($wa, [user => 'sent while down'], [bot => 'received sent while down']),
	'once the backend is back, the queued message is sent and answered');
ok(wait_stored_log_ends_with($wb, [other => 'sent while down'], [bot => 'received sent while down']),
	'and the other window gets it');
$WAIT = 10;
ok($wa->wait_for(sub { (data_attr($wa, 'chatConnection') // '') eq 'ok' }, $WAIT)
	&& $wa->execute('return document.getElementById("connection").hidden'),
	'"Reconnecting…" goes away');
my @copies = grep { ($_->{client_id} // '') eq $queued->{client_id} && $_->{role} eq 'user' }
  @{ stored($room) };
is(scalar @copies, 1, 'the server stored it exactly once (one user entry with its client id)');
is(scalar(grep { $_->{text} eq 'sent while down' } @{ messages($wa) }), 1, 'A shows it once');
is(scalar(grep { $_->{text} eq 'sent while down' } @{ messages($wb) }), 1, 'B shows it once');
is(scalar(grep { !defined $_->{seq} } @{ messages($wa) }), 0, 'nothing left unconfirmed in A');
is($wa->execute('return localStorage.getItem("chat-fcgi.outbox.' . $room . '")'), undef,
	'the saved queue is empty');
is_deeply([map { $_->{seq} } @{ messages($wa) }], [map { $_->{seq} } @{ stored($room) }],
	'A resumed with no gap and no duplicate');
is_deeply([map { $_->{seq} } @{ messages($wb) }], [map { $_->{seq} } @{ stored($room) }],
	'B too');

# --- A refused message ------------------------------------------------------------

$wa->execute(<<'JS');
	document.getElementById('message').value = 'x'.repeat(70000);
	document.getElementById('chat').requestSubmit();
JS
my $refused = $wa->wait_for(sub {
	my ($m) = grep { length($_->{text}) == 70000 } @{ messages($wa) };
	return $m && $m->{state} eq 'failed' && $m;
}, $WAIT);
ok($refused, 'a message over the size limit is marked failed');
is($refused && $refused->{error}, 'The message is too large.', "with nginx's sentence");
say_in($wa, 'after the refused one');
ok($wa->wait_for(sub {
	my @log = @{ messages($wa) };
	return @log >= 3 && $log[-3]{text} eq 'after the refused one' && defined $log[-3]{seq}
	  && $log[-2]{text} eq 'received after the refused one' && $log[-1]{state} eq 'failed';
}, $WAIT), 'the queue goes on past it; the refused one stays last, out of the way');
$wa->refresh;
ok($wa->wait_for(sub { grep { $_->{state} eq 'failed' } @{ messages($wa) } }, $WAIT),
	'after a reload the refused message is still there, marked failed');
is($wa->execute('return document.querySelectorAll("#log .msg.failed button.retry").length'), 1,
	'with a Retry button');
$wa->click($wa->find('#log .msg.failed button.discard'));
is(scalar(grep { $_->{state} eq 'failed' } @{ messages($wa) }), 0, 'Discard removes it');
$wa->refresh;
ok(room_mode($wa) && $wa->wait_for(sub { @{ messages($wa) } > 0 }, $WAIT), 'after a reload');
is(scalar(grep { length $_->{text} == 70000 } @{ messages($wa) }), 0, 'it stays gone');

# --- Looks: both windows, dark and phone width ----------------------------------

$wb->cdp('Emulation.setEmulatedMedia', { features => [{ name => 'prefers-color-scheme', value => 'dark' }] });
$wb->window_rect(width => 375, height => 740);
ok($wb->execute('return document.documentElement.scrollWidth <= window.innerWidth'),
	'at phone width nothing sticks out sideways (with the room link in the header)');
$wb->screenshot($t->dir . '/room-b-phone-dark.png');
$wa->screenshot($t->dir . '/room-a-end.png');
note('screenshots in ' . $t->dir);

# --- A server with no room left for held polls ------------------------------------

# With --max-waits 0 every poll is answered at once with "busy": the page
# asks again after retry_after (1 s), so messages still arrive, a little
# later, without a hot loop and without "Reconnecting…".
my $full = ChatTest->new(backend_args => ['--max-waits', '0']);
my $busy_room = 'busy-' . int(rand(1e9));
$wa->window_rect(width => 800, height => 600);
$wb->window_rect(width => 800, height => 600);
$wa->get($full->url("/chat/?room=$busy_room"));
$wb->get($full->url("/chat/?room=$busy_room"));
ok(room_mode($wa) && room_mode($wb), 'both windows joined a room on a server that holds no poll');
$t0 = time;
say_in($wa, 'through busy polls');
ok(wait_stored_log_ends_with($wb, [other => 'through busy polls'], [bot => 'received through busy polls']),
	'the other window still gets the message');
note(sprintf 'it took %.2f s', time - $t0);
sleep 3;
my $asked = $wb->execute(<<'JS');
	return performance.getEntriesByType('resource')
		.filter(function (e) { return /\/chat\/messages\?/.test(e.name); }).length;
JS
note("polls in about 4 s of busy answers: $asked");
cmp_ok($asked, '<=', 12, 'busy answers are not retried in a loop');
is(data_attr($wb, 'chatConnection'), 'ok', 'and busy is not shown as a lost connection');
my $busy_log = $full->access_log;
my $busy_polls = () = $busy_log =~ m{^HTTP GET /chat/messages\?\S* 200 }mg;
cmp_ok($busy_polls, '<=', 30, "nginx's access log agrees: $busy_polls polls from both windows");
# Back to the first server before this one stops, so no poll hits a closed port.
$_->get($t->url("/chat/?room=$room")) for $wa, $wb;
ok(room_mode($wa) && room_mode($wb), 'both windows back in the first room');
$full->done;

# --- Two tabs of one browser -------------------------------------------------------

# Tabs share the browser's identity: what one sends shows as ours in the other.
my $first_tab = $wa->tab;
my $second_tab = $wa->new_tab;
$wa->switch_to($second_tab);
$wa->before_scripts('delete window.EventSource;');
$wa->get($t->url("/chat/?room=$room"));
ok(room_mode($wa), 'a second tab of A joins the room');
$wa->switch_to($first_tab);
say_in($wa, 'from the first tab');
ok(wait_stored_log_ends_with($wa, [user => 'from the first tab'], [bot => 'received from the first tab']),
	'the first tab sends');
$wa->switch_to($second_tab);
ok(wait_stored_log_ends_with($wa, [user => 'from the first tab'], [bot => 'received from the first tab']),
	'the second tab shows it as ours too');
is(scalar(grep { $_->{text} eq 'from the first tab' } @{ messages($wa) }), 1, 'once');
is(data_attr($wa, 'chatErrors'), '[]', 'second tab: no CSP violation or script error');
$wa->close_tab;
$wa->switch_to($first_tab);

# --- Nothing links a person's rooms -------------------------------------------------

# Every reader of a room sees each entry's client_id: the page draws the
# prefix of its ids at random for each room, so one browser's ids in two
# rooms share nothing, while in one room (a reload, another tab) they stay.
{
	my $other_room = 'other-' . int(rand(1e9));
	$wa->get($t->url("/chat/?room=$other_room"));
	ok(room_mode($wa), 'window A joins a second room');
	say_in($wa, 'in the second room');
	ok(wait_stored_log_ends_with($wa, [user => 'in the second room'], [bot => 'received in the second room']),
		'... and posts there');
	my $prefix = sub {
		my ($r, $text) = @_;
		my ($e) = grep { $_->{role} eq 'user' && $_->{text} eq $text } @{ stored($r) };
		return $e && $e->{client_id} =~ /^([^-]+)-/ ? $1 : undef;
	};
	my $here = $prefix->($other_room, 'in the second room');
	my $there = $prefix->($room, 'from the first tab');
	ok(defined $here && defined $there, 'its client ids in both rooms have a prefix');
	isnt($here, $there, '... and the prefixes differ: the two rooms are not linked');
	$wa->get($t->url("/chat/?room=$room"));
	ok(room_mode($wa), 'back in the first room');
	say_in($wa, 'back again');
	ok(wait_stored_log_ends_with($wa, [user => 'back again'], [bot => 'received back again']), '... it posts');
	is($prefix->($room, 'back again'), $there, '... with the same prefix as before there');
}

# --- No problems recorded ---------------------------------------------------------

for ([A => $wa], [B => $wb]) {
	my ($name, $wd) = @$_;
	is(data_attr($wd, 'chatErrors'), '[]', "$name: no CSP violation or script error");
	# While the backend was down nginx answered 502; the oversized message got 413.
	my @severe = grep { $_->{level} eq 'SEVERE' && $_->{message} !~ /status of (502|413)/ }
	  $wd->browser_log;
	is_deeply([map { $_->{message} } @severe], [], "$name: no errors in the browser console");
}

$wa->quit;
$wb->quit;
$t->done(backend_was_down => 1);

done_testing();
