package WebDriver;

# A tiny W3C WebDriver client for tests: starts chromedriver, drives one
# headless Chromium session, and always cleans up. Perl core modules only.
#
#   if (my $why = WebDriver->available) { plan skip_all => $why }
#   my $wd = WebDriver->new(dir => $tmpdir);
#   $wd->get($url);
#   $wd->send_keys($wd->find('#message'), "hi\x{E007}");   # \x{E007} is Enter
#   $wd->wait_for('document.querySelectorAll(".msg").length == 2', 10)
#       or fail(...);
#   $wd->quit;    # also done by DESTROY and at END
#
# Environment: CHROMIUM and CHROMEDRIVER override the binaries found.

use strict;
use warnings;

use Carp qw(croak);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Time::HiRes qw(sleep time);

# The key under which W3C WebDriver returns an element reference.
our $ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';
our $ENTER   = "\x{E007}";

my $STARTUP_TIMEOUT = 10;    # seconds for chromedriver to answer /status
my $COMMAND_TIMEOUT = 30;    # seconds for one command (new session included)

# Without the networking flags Chromium keeps trying hosts it cannot reach.
my @CHROMIUM_ARGS = (
	qw(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run),
	qw(--disable-background-networking --disable-component-update --disable-sync),
	qw(--disable-dev-shm-usage), '--window-size=800,600',
);

my $json = JSON::PP->new->utf8->canonical->allow_nonref;
my %live;    # sessions still to close, so END can close them

sub _which {
	my ($name) = @_;
	for my $dir (split /:/, $ENV{PATH} // '') {
		my $path = "$dir/$name";
		return $path if -f $path && -x _;
	}
	return;
}

# The real binary, not the /usr/bin/chromium wrapper (which prints a warning).
sub chromium {
	return $ENV{CHROMIUM} if $ENV{CHROMIUM};
	return '/usr/lib/chromium/chromium' if -x '/usr/lib/chromium/chromium';
	return _which('chromium') // _which('chromium-browser');
}

sub chromedriver { $ENV{CHROMEDRIVER} || _which('chromedriver') }

# Returns undef when a browser can be driven, else a sentence saying what is
# missing (for skip_all). The name reads as a question: "available?" is
# answered with what is not.
sub available {
	my $chromium = chromium();
	my $driver   = chromedriver();
	return 'chromium not installed'     unless $chromium && -x $chromium;
	return 'chromedriver not installed' unless $driver && -x $driver;
	return;
}

sub _free_port {
	my $sock = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 1)
	  or croak "no free port: $!";
	return $sock->sockport;
}

# new(dir => DIR): chromedriver's log and Chromium's profile go in DIR
# (a fresh temp dir by default).
sub new {
	my ($class, %opt) = @_;
	my $why = $class->available;
	croak $why if $why;

	my $dir = $opt{dir} // tempdir('webdriver-XXXXXX', TMPDIR => 1, CLEANUP => 1);
	my $profile = tempdir('chromium-XXXXXX', DIR => $dir, CLEANUP => 1);
	my $port = _free_port();
	my $self = bless {
		dir   => $dir,
		log   => "$dir/chromedriver.log",
		base  => "http://127.0.0.1:$port",
		owner => $$,    # a forked child must not quit our browser
		http  => HTTP::Tiny->new(timeout => $COMMAND_TIMEOUT, keep_alive => 1),
	}, $class;

	$self->{driver_pid} = _spawn(chromedriver(), "--port=$port",
		'--allowed-ips=127.0.0.1', "--log-path=$self->{log}");
	$live{$self} = $self;
	weaken($live{$self});

	$self->_wait_ready;
	my $caps = eval { $self->_call(POST => '/session', {
		capabilities => { alwaysMatch => {
			browserName          => 'chrome',
			'goog:chromeOptions' => {
				binary => chromium(),
				args   => [@CHROMIUM_ARGS, "--user-data-dir=$profile"],
			},
			'goog:loggingPrefs' => { browser => 'ALL' },
		} },
	}) } or do {
		my $why = $@ =~ s/ at \S+ line \d+\.?\n\z//r;
		$self->quit;
		croak "$why (chromium: " . chromium() . "; see $self->{log})";
	};
	$self->{session} = $caps->{sessionId}
	  or croak "WebDriver: no session id in the answer to POST /session";
	return $self;
}

sub _spawn {
	my ($bin, @args) = @_;
	my $pid = fork // croak "fork: $!";
	return $pid if $pid;
	# Child: chromedriver logs to its --log-path; keep the TAP stream clean.
	open STDOUT, '>', '/dev/null';
	open STDERR, '>', '/dev/null';
	exec { $bin } $bin, @args
	  or POSIX::_exit(127);    # exec failed; skip Perl's END blocks
}

sub _wait_ready {
	my ($self) = @_;
	my $deadline = time + $STARTUP_TIMEOUT;
	my $quick = HTTP::Tiny->new(timeout => 1);
	while (time < $deadline) {
		if (waitpid($self->{driver_pid}, WNOHANG) > 0) {
			delete $self->{driver_pid};
			croak "chromedriver exited at once (status $?); see $self->{log}";
		}
		my $res = $quick->get("$self->{base}/status");
		if ($res->{success}) {
			my $status = eval { $json->decode($res->{content}) };
			return if $status && $status->{value}{ready};
		}
		sleep 0.05;
	}
	$self->quit;
	croak "chromedriver did not become ready in ${STARTUP_TIMEOUT}s; see $self->{log}";
}

# One WebDriver command. POST always sends a JSON object, as W3C requires.
sub _call {
	my ($self, $method, $path, $body) = @_;
	$body //= {} if $method eq 'POST';
	my $res = $self->{http}->request($method, $self->{base} . $path, {
		headers => { 'Content-Type' => 'application/json; charset=utf-8' },
		defined $body ? (content => $json->encode($body)) : (),
	});
	my $answer = eval { $json->decode($res->{content}) };
	unless ($res->{success}) {
		my $v = ref $answer eq 'HASH' && ref $answer->{value} eq 'HASH' ? $answer->{value} : undef;
		my $why = $v ? "$v->{error}: " . ($v->{message} // '') : "$res->{status} $res->{content}";
		$why =~ s/\n.*//s;    # Chromium's stack trace adds nothing here
		croak "WebDriver $method $path: $why";
	}
	return ref $answer eq 'HASH' ? $answer->{value} : undef;
}

sub _session_call {
	my ($self, $method, $path, $body) = @_;
	croak 'WebDriver: no session' unless $self->{session};
	return $self->_call($method, "/session/$self->{session}$path", $body);
}

sub dir { $_[0]{dir} }

sub get { my ($self, $url) = @_; $self->_session_call(POST => '/url', { url => $url }); return }

sub current_url { $_[0]->_session_call(GET => '/url') }

sub refresh { $_[0]->_session_call(POST => '/refresh'); return }

# find($css) -> element id (croaks when nothing matches).
sub find {
	my ($self, $css) = @_;
	my $el = $self->_session_call(POST => '/element', { using => 'css selector', value => $css });
	return $el->{$ELEMENT};
}

sub find_all {
	my ($self, $css) = @_;
	my $els = $self->_session_call(POST => '/elements', { using => 'css selector', value => $css });
	return map { $_->{$ELEMENT} } @$els;
}

sub send_keys {
	my ($self, $el, $text) = @_;
	$self->_session_call(POST => "/element/$el/value", { text => $text });
	return;
}

sub clear { my ($self, $el) = @_; $self->_session_call(POST => "/element/$el/clear"); return }

sub click { my ($self, $el) = @_; $self->_session_call(POST => "/element/$el/click"); return }

# An element id, as an argument to execute().
sub element { my ($self, $id) = @_; return { $ELEMENT => $id } }

# execute($js, @args): runs $js as a function body; returns what it returns.
sub execute {
	my ($self, $js, @args) = @_;
	return $self->_session_call(POST => '/execute/sync', { script => $js, args => \@args });
}

# wait_for($js_expression or sub, $timeout_s): polls every 100 ms until the
# condition is true; returns its value, or undef when the time is up.
sub wait_for {
	my ($self, $cond, $timeout) = @_;
	my $check = ref $cond eq 'CODE' ? $cond : sub { $self->execute("return ($cond);") };
	my $deadline = time + ($timeout // 10);
	while (1) {
		my $v = $check->();
		return $v if $v;
		return if time >= $deadline;
		sleep 0.1;
	}
}

sub window_rect {
	my ($self, %rect) = @_;
	return $self->_session_call(POST => '/window/rect', \%rect);
}

# screenshot($file): saves a PNG of the viewport.
sub screenshot {
	my ($self, $file) = @_;
	my $png = decode_base64($self->_session_call(GET => '/screenshot'));
	open my $fh, '>:raw', $file or croak "$file: $!";
	print $fh $png;
	close $fh or croak "$file: $!";
	return $file;
}

# Tabs of this session: new_tab opens one and returns its handle (without
# switching to it); switch_to($handle) makes it the one commands go to;
# close_tab closes the current one.
sub new_tab { $_[0]->_session_call(POST => '/window/new', { type => 'tab' })->{handle} }

sub tab { $_[0]->_session_call(GET => '/window') }

sub switch_to {
	my ($self, $handle) = @_;
	$self->_session_call(POST => '/window', { handle => $handle });
	return;
}

sub close_tab { $_[0]->_session_call(DELETE => '/window'); return }

# cdp($command, \%params): a Chrome DevTools Protocol command, through
# ChromeDriver's extension to W3C (e.g. Emulation.setEmulatedMedia).
sub cdp {
	my ($self, $cmd, $params) = @_;
	return $self->_session_call(POST => '/goog/cdp/execute', { cmd => $cmd, params => $params // {} });
}

# before_scripts($js): runs $js in every page this tab loads from now on,
# before the page's own scripts (e.g. to take an API away from the page, as
# an older browser would not have it). Through the DevTools protocol, so the
# page's CSP does not apply to it.
sub before_scripts {
	my ($self, $js) = @_;
	return $self->cdp('Page.addScriptToEvaluateOnNewDocument', { source => $js });
}

# Browser console entries since the last call ({level, message, ...}).
# A ChromeDriver extension to W3C; returns () where it is not supported.
sub browser_log {
	my ($self) = @_;
	my $entries = eval { $self->_session_call(POST => '/se/log', { type => 'browser' }) };
	return ref $entries eq 'ARRAY' ? @$entries : ();
}

# Closes the browser and stops chromedriver. Safe to call more than once.
sub quit {
	my ($self) = @_;
	return if $$ != $self->{owner};
	if (my $session = delete $self->{session}) {
		eval { $self->_call(DELETE => "/session/$session") };
	}
	if (my $pid = delete $self->{driver_pid}) {
		kill 'TERM', $pid;
		my $deadline = time + 5;
		while (waitpid($pid, WNOHANG) == 0) {
			if (time > $deadline) { kill 'KILL', $pid; waitpid($pid, 0); last }
			sleep 0.05;
		}
	}
	delete $live{$self};
	return;
}

sub DESTROY { local ($., $@, $!, $^E, $?); $_[0]->quit }

END { local $?; $_->quit for grep { defined } values %live }

1;
