#!/usr/bin/perl
# The memory checks themselves: the teardown of every end-to-end test finds
# sanitizer and valgrind reports, and in the sanitized and valgrind runs the
# backend really is sanitized, or really runs under valgrind.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use ChatTest;

## Finding the reports in logs

my $asan = <<'LOG';
chat-fcgi: chat-fcgi 0.1.0 listening on unix:/x/chat.sock with 16 threads
=================================================================
==23059==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000011
LOG
my $lsan = "==1==ERROR: LeakSanitizer: detected memory leaks\n";
my $ubsan = "src/reply.c:42:7: runtime error: signed integer overflow\n";
my $clean = "chat-fcgi: 400 POST /chat/ 0.02 ms: The body is not valid JSON.\n"
	. "chat-fcgi: exiting after 3 requests\n";
ok(ChatTest::sanitizer_report($asan), 'an AddressSanitizer report is found');
ok(ChatTest::sanitizer_report($lsan), 'a LeakSanitizer report is found');
ok(ChatTest::sanitizer_report($ubsan), 'an UndefinedBehaviorSanitizer report is found');
ok(!ChatTest::sanitizer_report($clean), 'a clean log is clean');

my $dir = tempdir('chat-fcgi-memcheck-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{CHAT_KEEP});
ChatTest::write_file("$dir/valgrind-1.log", <<'LOG');
==1== HEAP SUMMARY:
==1==     in use at exit: 1,056 bytes in 2 blocks
==1== LEAK SUMMARY:
==1==    definitely lost: 0 bytes in 0 blocks
==1==    possibly lost: 288 bytes in 1 blocks
==1== ERROR SUMMARY: 0 errors from 0 contexts (suppressed: 0 from 0)
LOG
ChatTest::write_file("$dir/valgrind-2.log", "==2== Memcheck, a memory error detector\n");
is(ChatTest::valgrind_problems($dir), '',
	'valgrind: no error and no definite leak, or a process killed before its summary, pass');
ChatTest::write_file("$dir/valgrind-3.log", <<'LOG');
==3== Invalid write of size 1
==3== ERROR SUMMARY: 6 errors from 1 contexts (suppressed: 0 from 0)
LOG
like(ChatTest::valgrind_problems($dir), qr/valgrind-3\.log.*Invalid write/s, 'a valgrind error is found');
unlink "$dir/valgrind-3.log";
ChatTest::write_file("$dir/valgrind-4.log", "==4==    definitely lost: 2,915 bytes in 78 blocks\n");
like(ChatTest::valgrind_problems($dir), qr/valgrind-4\.log/, 'a definite leak is found');

## The backend of this run

my $bin = $ENV{CHAT_FCGI} // ChatTest::srcdir() . '/src/chat-fcgi';
SKIP: {
	skip 'not the sanitized build (configure --enable-sanitizers)', 1 unless $ENV{CHAT_SANITIZED};
	local $ENV{ASAN_OPTIONS} = 'help=1';
	my $out = `"$bin" --version 2>&1`;
	like($out, qr/AddressSanitizer/, 'the backend is built with AddressSanitizer');
}

SKIP: {
	skip 'not the valgrind run (CHAT_VALGRIND=1)', 3 unless $ENV{CHAT_VALGRIND};
	my $t = ChatTest->new;
	is($t->json($t->post('{"message":"checked"}'))->{message}, 'received checked',
		'the backend answers under valgrind');
	$t->done;
	my @logs = glob($t->dir . '/valgrind-*.log');
	is(scalar @logs, 1, 'it ran under valgrind, which wrote one log');
	like(ChatTest::read_file($logs[0] // ''), qr/ERROR SUMMARY: 0 errors/,
		'... with a summary at its exit: no error');
}

done_testing;
