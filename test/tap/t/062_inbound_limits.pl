# The receiver's connection limits (issue 12 review): switchboard.inbound_max_connections and the
# per-address limit (a quarter of it, at least 8), and the whole-request deadline. MHD's own
# connection timeout measures only silence: a client sending one header byte a second held its
# connection for hours. Now a request must arrive whole within inbound_timeout of its first
# byte (a kept-alive connection's idle time before it does not count), however steadily it
# trickles; the connection is then closed, and other requests are served meanwhile.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use HTTP::Tiny;
use IO::Socket::INET;
use Time::HiRes qw(time usleep);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = new_node(
	'inbound_limits',
	'switchboard.listen_addresses'          => "'127.0.0.1'",
	'switchboard.listen_port'               => $port,
	'switchboard.inbound_max_connections'   => 40,
	'switchboard.inbound_timeout'           => "'30s'",
	'switchboard.naptime'                   => "'10s'");
sub q_ { return $node->safe_psql('postgres', $_[0]); }
q_('CREATE EXTENSION switchboard');
my $zero = '/inbound/' . ('0' x 32);    # an unknown token: 404, answered at once
my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);
ok(wait_for('receiver listening', sub { $http->post("http://127.0.0.1:$port$zero", { content => '{}' })->{status} == 404 }, 60),
	'the receiver listens');

sub connect_from
{
	my ($local) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, LocalAddr => $local, Proto => 'tcp')
	  or die "connect from $local: $!";
	$s->autoflush(1);
	return $s;
}
# Sends a request on the socket (kept alive unless $close) and returns the status of its answer,
# 0 when the connection closed without one, -1 when none came within $wait seconds.
sub ask
{
	my ($s, $wait, $close) = @_;
	local $SIG{PIPE} = 'IGNORE';
	my $conn = $close ? 'close' : 'keep-alive';
	print $s "POST $zero HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: $conn\r\nContent-Length: 2\r\n\r\n{}" or return 0;
	return answer($s, $wait);
}
sub answer
{
	my ($s, $wait) = @_;
	my $got = '';
	my $deadline = time + $wait;
	while (time < $deadline)
	{
		my $rin = '';
		vec($rin, fileno($s), 1) = 1;
		next unless select(my $rout = $rin, undef, undef, 0.1);
		my $n = sysread($s, my $buf, 4096);
		return 0 if !$n && $got eq '';
		last if !$n;
		$got .= $buf;
		last if $got =~ /\r\n\r\n/ && $got =~ /\}\n?$/;
	}
	return $got =~ m{^HTTP/1\.[01] (\d{3})} ? $1 + 0 : -1;
}
# Whether the server closed the socket (EOF or reset) within $wait seconds, sending nothing.
sub closed_within
{
	my ($s, $wait) = @_;
	my $deadline = time + $wait;
	while (time < $deadline)
	{
		my $rin = '';
		vec($rin, fileno($s), 1) = 1;
		next unless select(my $rout = $rin, undef, undef, 0.1);
		my $n = sysread($s, my $buf, 4096);
		return 1 if !$n;
	}
	return 0;
}

# ---- the per-address limit: 40 / 4 = 10 connections from one address -----------------------
# (Addresses the requests above did not come from: MHD counts a closed connection until it
# cleaned it up.)
my @held = map { connect_from('127.0.0.11') } 1 .. 10;
usleep(300_000);
my $eleventh = connect_from('127.0.0.11');
ok(closed_within($eleventh, 3), 'an 11th connection from the same address is closed unserved (per-address limit 10)');
my $other = connect_from('127.0.0.12');
is(ask($other, 5), 404, 'a connection from another address is served meanwhile');
is(ask($held[0], 5), 404, 'and so are the ten held ones: the first ...');
is(ask($held[9], 5), 404, '... and the last');

# ---- the connection cap: 40 -------------------------------------------------------------------
# 10 from .11, and .12 (already one), .13, .14 up to 10 each: 40 connections.
push @held, $other, map { connect_from('127.0.0.12') } 1 .. 9;
push @held, map { connect_from('127.0.0.13') } 1 .. 10;
push @held, map { connect_from('127.0.0.14') } 1 .. 10;
usleep(300_000);
is(scalar(@held), 40, '40 connections open');
my $extra = connect_from('127.0.0.15');
my $status = ask($extra, 2);
ok($status <= 0, "a 41st connection is not served while 40 are open (answer: $status)");
is(ask($held[$_], 5), 404, "held connection $_ is served at the cap") for 0, 15, 39;
close($_) for splice(@held, 30, 10);
my $after = $status == 0 ? ask(connect_from('127.0.0.15'), 5) : answer($extra, 5);
is($after, 404, 'once connections close, a new one is served (' . ($status == 0 ? 'the 41st was refused' : 'the 41st waited') . ')');
close($_) for @held, $extra, $eleventh;

# ---- the whole-request deadline ------------------------------------------------------------
q_("ALTER SYSTEM SET switchboard.inbound_timeout = '3s'");
q_('SELECT pg_reload_conf()');
sleep 2;
ok(wait_for('receiver back', sub { (eval { $http->post("http://127.0.0.1:$port$zero", { content => '{}' })->{status} } // 0) == 404 }, 30),
	'the receiver restarted with inbound_timeout 3s');

my $request = "POST $zero HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " . ('p' x 100) . "\r\nContent-Length: 2\r\n\r\n{}";
my @tricklers = (
	{ name => 'the request line', bytes => $request, sent => 0 },
	{ name => 'the headers', bytes => substr($request, 40), sent => 0, prefix => substr($request, 0, 40) });
# On a kept-alive connection, the deadline counts from the first byte of the next request.
my $kept = connect_from('127.0.0.1');
is(ask($kept, 5), 404, 'a kept-alive connection is served');
my $kept_trickler = connect_from('127.0.0.1');
is(ask($kept_trickler, 5), 404, 'another one too');
sleep 2;    # idle, within inbound_timeout
is(ask($kept, 5), 404, 'after 2 s idle its next request is served (the idle time is not the request\'s)');
push @tricklers, { name => 'a kept-alive connection\'s second request', sock => $kept_trickler, bytes => $request, sent => 0 };
my $t0 = time;
for my $t (@tricklers)
{
	$t->{sock} //= connect_from('127.0.0.1');
	my $s = $t->{sock};
	print $s $t->{prefix} if $t->{prefix};
	$t->{t0} = time;
}
my ($served, $slowest) = (0, 0);
while (time - $t0 < 20 && grep { !$_->{closed} } @tricklers)
{
	for my $t (grep { !$_->{closed} } @tricklers)
	{
		my $s = $t->{sock};
		local $SIG{PIPE} = 'IGNORE';
		my $ok = $t->{sent} < length($t->{bytes}) ? print $s substr($t->{bytes}, $t->{sent}++, 1) : 1;
		$t->{closed} = time - $t->{t0} if !$ok || closed_within($s, 0.05);
	}
	my $q0 = time;
	my $r = $http->post("http://127.0.0.1:$port$zero", { content => '{}' });
	$served++ if $r->{status} == 404;
	$slowest = time - $q0 if time - $q0 > $slowest;
	my $rest = 1 - (time - $q0) - 0.1 * @tricklers;
	usleep($rest * 1e6) if $rest > 0;
}
for my $t (@tricklers)
{
	ok(defined $t->{closed} && $t->{closed} >= 2.5 && $t->{closed} < 5.5,
		sprintf("a client trickling %s a byte a second is cut off %.1f s after its first byte (inbound_timeout 3 s)",
			$t->{name}, $t->{closed} // -1));
}
ok($served >= 3 && $slowest < 1, sprintf('meanwhile other requests are served (%d, slowest %.2f s)', $served, $slowest));

$node->stop;
done_testing();
