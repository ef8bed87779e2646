# Pull, issue 10 item 5: a pull route that fails before its page is fetched (here: a request that
# cannot be built) backs off with the reason in pull_status, and does not hold up the others.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_isolation');
sub q_ { return $node->safe_psql('postgres', $_[0]); }
sub hs_put
{
	my ($obj, $key, $props) = @_;
	my $res = HTTP::Tiny->new->request('PUT', "$base/_control/records/hubspot/$obj/$key",
		{ headers => { 'Content-Type' => 'application/json' }, content => JSON::PP->new->encode({ properties => $props, key_field => 'email' }) });
	die "PUT: $res->{status}" unless $res->{success};
}

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE a (email text PRIMARY KEY, first_name text);
CREATE TABLE b (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
for my $t ('a', 'b')
{
	q_("INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval) "
		. "VALUES ('$t', '$t', 'hubspot', 'obj_$t', 'email', 'email', 'pull', '1 hour'); "
		. "INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('$t', 'email', 'email'), ('$t', 'firstname', 'first_name')");
}
ok(wait_for('first pulls', sub { q_("SELECT count(*) FROM switchboard.pull_status WHERE next_pull_at > now()") eq '2' }, 30), 'both routes pulled');

# Route a's stored cursor cannot go into a request.
q_("UPDATE switchboard.pull_state SET cursor_since = 'not-a-time' WHERE route = 'a'");
hs_put('obj_a', 'x@a.com', { firstname => 'X' });
hs_put('obj_b', 'y@b.com', { firstname => 'Y' });
q_("SELECT switchboard.pull_now('a'); SELECT switchboard.pull_now('b')");
ok(wait_for('route b pulled', sub { q_("SELECT count(*) FROM b") eq '1' }, 30), 'the other route is pulled');
ok(wait_for('route a backed off', sub { q_("SELECT next_pull_at > now() + interval '5 s' FROM switchboard.pull_status WHERE route = 'a'") eq 't' }, 30),
	'the broken route backs off');
like(q_("SELECT last_error FROM switchboard.pull_status WHERE route = 'a'"), qr/not-a-time.*not epoch milliseconds/,
	'with its own reason in pull_status');
is(q_("SELECT last_error IS NULL FROM switchboard.pull_status WHERE route = 'b'"), 't', 'the other route has no error');

# Repaired, it pulls again.
q_("UPDATE switchboard.pull_state SET cursor_since = '0' WHERE route = 'a'");
q_("SELECT switchboard.pull_now('a')");
ok(wait_for('route a pulled', sub { q_("SELECT count(*) FROM a") eq '1' }, 30), 'once repaired, the route pulls again');

$node->stop;
done_testing();
