package ChatPage;

# What the browser tests read off the chat page (html/), through a WebDriver
# window: the log as the page shows it, waiting for it to settle, typing.
#
#   use ChatPage;    # exports the subs below and $WAIT
#   say_in($wd, 'hello');
#   wait_log_ends_with($wd, [user => 'hello'], [bot => 'received hello'])
#       or fail(...);
#   local $WAIT = 25;    # a longer deadline for what follows

use strict;
use warnings;

use Exporter qw(import);
use Test::More;

use WebDriver;

our @EXPORT = qw($WAIT messages shown wait_log_ends_with wait_stored_log_ends_with say_in data_attr);

# Seconds: a deadline, not an expectation.
our $WAIT = 10;

# The log as the window shows it: one hash per .msg, in order. state is
# 'failed', 'pending', 'streaming' or '' (settled); seq and client_id are
# what the page confirmed from the server (undef before).
sub messages {
	my ($wd) = @_;
	return $wd->execute(<<'JS');
	return Array.from(document.querySelectorAll('#log .msg')).map(function (m) {
		var text = m.querySelector('.text'), error = m.querySelector('.error');
		var r = text.getBoundingClientRect();
		return {
			who: ['user', 'bot', 'other'].find(function (c) { return m.classList.contains(c); }) || '?',
			text: text.textContent,
			state: m.classList.contains('failed') ? 'failed'
			     : m.classList.contains('pending') ? 'pending'
			     : m.classList.contains('streaming') ? 'streaming' : '',
			seq: m.dataset.seq === undefined ? null : Number(m.dataset.seq),
			client_id: m.dataset.clientId || null,
			error: error ? error.textContent : null,
			retry: m.querySelectorAll('button.retry').length,
			left: r.left, right: r.right
		};
	});
JS
}

# [who, text] of each message, for comparisons.
sub shown { return [map { [$_->{who}, $_->{text}] } @{ messages($_[0]) }] }

# Waits until the window's log ends with these [who, text] pairs, each
# settled; with { stored => 1 } first, each also confirmed by the server
# (a seq). Returns the log, or undef (with a dump) at the deadline.
sub wait_log_ends_with {
	my ($wd, @want) = @_;
	my %opt = ref $want[0] eq 'HASH' ? %{ shift @want } : ();
	my $log;
	my $ok = $wd->wait_for(sub {
		$log = messages($wd);
		return 0 if @$log < @want;
		my @tail = @$log[-@want .. -1];
		return !grep {
			$tail[$_]{who} ne $want[$_][0] || $tail[$_]{text} ne $want[$_][1] || $tail[$_]{state} ne ''
			  || ($opt{stored} && !defined $tail[$_]{seq})
		} 0 .. $#want;
	}, $WAIT);
	return $log if $ok;
	diag explain $log;
	return;
}

# The same, each also confirmed by the server (rooms).
sub wait_stored_log_ends_with {
	my ($wd, @want) = @_;
	return wait_log_ends_with($wd, { stored => 1 }, @want);
}

# Types TEXT into the message box and presses Enter.
sub say_in {
	my ($wd, $text) = @_;
	$wd->send_keys($wd->find('#message'), "$text$WebDriver::ENTER");
}

# A data-* attribute of <html>, where the page says what it is doing
# (chatMode, chatReceiving, chatErrors ...).
sub data_attr {
	my ($wd, $name) = @_;
	return $wd->execute("return document.documentElement.dataset.$name");
}

1;
