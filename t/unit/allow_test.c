/* --allow-from: which lists parse, and which peers they let in. */
#include "allow.h"
#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static bool allows(const char *list, const char *peer)
{
	struct allow_list l;
	char err[160];
	if (allow_parse(&l, list, err, sizeof err) != 0)
		return false;
	struct sockaddr_in in = {.sin_family = AF_INET};
	struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
	if (inet_pton(AF_INET, peer, &in.sin_addr) == 1)
		return allow_match(&l, (struct sockaddr *)&in, sizeof in);
	if (inet_pton(AF_INET6, peer, &in6.sin6_addr) == 1)
		return allow_match(&l, (struct sockaddr *)&in6, sizeof in6);
	return false;
}

static void test_parse(void)
{
	static const char *const good[] = {"127.0.0.1",
					   "10.0.0.0/8",
					   "::1",
					   "fd00::/8",
					   "10.0.0.11, 10.0.0.12,10.0.0.13",
					   "0.0.0.0/0",
					   "::ffff:10.0.0.1",
					   "2001:db8::/32,192.0.2.1/32"};
	static const char *const bad[] = {
	    "",          ",",          "localhost",     "10.0.0.1/33", "::1/129",
	    "10.0.0.1/", "10.0.0.1/x", "10.0.0.1/0008", "10.0.0.256",  "10.0.0.1 10.0.0.2 junk"};
	struct allow_list l;
	char err[160];
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		ok(allow_parse(&l, good[i], err, sizeof err) == 0, "'%s' parses", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		ok(allow_parse(&l, bad[i], err, sizeof err) != 0 && err[0],
		   "'%s' is refused with a sentence (%s)", bad[i], err);
	}
	char many[64 * 12 + 16] = "";
	for (int i = 0; i <= ALLOW_MAX; i++) {
		char one[16];
		snprintf(one, sizeof one, "%s10.0.0.%d", i ? "," : "", i);
		strcat(many, one);
	}
	ok(allow_parse(&l, many, err, sizeof err) != 0, "more than %d addresses are refused",
	   ALLOW_MAX);
}

static void test_match(void)
{
	ok(allows("127.0.0.1", "127.0.0.1"), "an address lets itself in");
	ok(!allows("127.0.0.1", "127.0.0.2"), "... and no other");
	ok(allows("10.1.2.0/24", "10.1.2.200"), "a /24 lets its addresses in");
	ok(!allows("10.1.2.0/24", "10.1.3.1"), "... and not the next /24's");
	ok(allows("10.1.2.0/23", "10.1.3.1"), "a /23 takes both");
	ok(allows("10.1.2.128/25", "10.1.2.255"), "a prefix inside a byte");
	ok(!allows("10.1.2.128/25", "10.1.2.127"), "... both ways");
	ok(allows("0.0.0.0/0", "198.51.100.7"), "/0 lets in any IPv4 peer");
	ok(!allows("0.0.0.0/0", "::1"), "... and no IPv6 one");
	ok(allows("::1", "::1"), "IPv6 loopback");
	ok(allows("2001:db8:1::/48", "2001:db8:1:ffff::9"), "an IPv6 /48");
	ok(!allows("2001:db8:1::/48", "2001:db8:2::1"), "... and not its neighbour");
	ok(allows("10.0.0.11,10.0.0.12", "10.0.0.12"), "the second of a list");
	ok(allows("10.0.0.1", "::ffff:10.0.0.1"),
	   "an IPv4 peer on a dual-stack socket matches its IPv4 entry");
	ok(!allows("::ffff:10.0.0.1", "10.0.0.2"), "... a mapped entry is an IPv4 one");

	struct allow_list l;
	char err[160];
	ok(allow_parse(&l, "10.0.0.1", err, sizeof err) == 0, "a list");
	struct sockaddr un = {.sa_family = AF_UNIX};
	ok(allow_match(&l, &un, sizeof un), "a unix socket's peer is always let in");
}

int main(void)
{
	test_parse();
	test_match();
	return done_testing();
}
