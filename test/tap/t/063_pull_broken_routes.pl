# Pull, issue 10 item 5: broken pull routes do not starve a healthy one. More broken routes than
# one round takes (PullsDue takes 8) whose request cannot be built (a stored cursor that is no
# time), and one whose page cannot be applied (LoadPullColumns: a pull_column dropped while the
# page was being fetched; once dropped, the route's definition no longer loads and it is
# disabled with the reason). Each backs off with its own reason in pull_status; the healthy
# route keeps pulling, cycle after cycle.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_broken_routes');
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
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
my @broken_request = map { "req$_" } 1 .. 9;
my @broken_columns = ('col1');
for my $t ('good', @broken_request, @broken_columns)
{
	q_("CREATE TABLE $t (email text PRIMARY KEY, first_name text, note text)");
	# The healthy route pulls every second; the others are made due by hand below (a broken
	# route that kept its old next_pull_at would sort before the healthy one every round).
	my $interval = $t eq 'good' ? '1 s' : '1 hour';
	q_("INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval) "
		. "VALUES ('$t', '$t', 'hubspot', 'obj_$t', 'email', 'email', 'pull', '$interval'); "
		. "INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('$t', 'email', 'email'), "
		. "('$t', 'firstname', 'first_name'), ('$t', 'note', 'note')");
	hs_put("obj_$t", "first\@$t.com", { firstname => 'F', note => 'n' });
}
ok(wait_for('first pulls', sub { q_("SELECT count(*) FROM switchboard.pull_status WHERE records_pulled = 1") eq '11' }, 60),
	'every route pulled once');
ok(wait_for('all idle', sub { q_("SELECT count(*) FROM switchboard.pull_status WHERE next_pull_at > now() + interval '10 minutes'") eq '10' }, 30), 'the routes to break wait');

# Broken: five cursors that cannot go into a request, five tables that lost a pulled column.
q_("UPDATE switchboard.pull_state SET cursor_since = 'not-a-time', next_pull_at = now() - interval '1 hour' WHERE route LIKE 'req%'");
# col1's next page is held 3 s by the double; its column is dropped meanwhile.
hs_put('obj_col1', 'second@col1.com', { firstname => 'S', note => 'n' });
control($base, 'faults', { path_prefix => '/crm/v3/objects/obj_col1/search', kind => 'slow', delay_ms => 3000, count => 1 });
q_("UPDATE switchboard.pull_state SET next_pull_at = now() - interval '1 hour' WHERE route = 'col1'");
ok(wait_for('col1 fetching', sub { my $f = json_get("$base/_control/faults"); ref $f eq 'ARRAY' && $f->[0]{hits} >= 1 }, 30),
	'col1 asks for its page (held by the double)');
q_("ALTER TABLE col1 DROP COLUMN note");
# The healthy route keeps getting records; each must arrive.
for my $n (1 .. 3)
{
	hs_put('obj_good', "g$n\@good.com", { firstname => "G$n", note => 'n' });
	ok(wait_for("record $n of the healthy route", sub { q_("SELECT count(*) FROM good WHERE email = 'g$n\@good.com'") eq '1' }, 30),
		"the healthy route pulls record $n while ten routes keep failing");
}
is(q_("SELECT last_error IS NULL FROM switchboard.pull_status WHERE route = 'good'"), 't', 'the healthy route has no error');

# While a route is being fetched, pull_status shows the crash-loop mark for a moment, so its
# error is polled for.
for my $t (@broken_request)
{
	ok(wait_for("$t error", sub { q_("SELECT last_error FROM switchboard.pull_status WHERE route = '$t'") =~ /not-a-time/ }, 10),
		"$t: the request's error in pull_status") or diag(q_("SELECT last_error FROM switchboard.pull_status WHERE route = '$t'"));
}
for my $t (@broken_columns)
{
	ok(wait_for("$t error", sub { q_("SELECT count(*) FROM switchboard.delivery_log WHERE route = '$t' AND outcome = 'pull_error' "
		. "AND error ~ 'pull_column \"note\".*no longer a column'") eq '1' }, 20),
		"$t: the page's apply failed on the dropped column (LoadPullColumns), recorded for the route");
	is(q_("SELECT count(*) FROM $t"), '1', "$t: nothing of the page applied");
}
# Every broken route was backed off: its next_pull_at moved past the hour-old value it had.
is(q_("SELECT count(*) FROM switchboard.pull_status WHERE route <> 'good' AND next_pull_at > now() - interval '1 minute' AND last_error_at > now() - interval '1 minute'"),
	'10', 'every broken route backed off (next_pull_at moved)')
	or diag(q_("SELECT route, next_pull_at, last_error_at, now() FROM switchboard.pull_status"));
is(q_("SELECT count(*) FROM switchboard.routes WHERE enabled"), '11', 'no route was disabled for a failed page');

# Repaired, a broken route pulls again.
hs_put('obj_req1', 'second@req1.com', { firstname => 'S', note => 'n' });
q_("UPDATE switchboard.pull_state SET cursor_since = '0' WHERE route = 'req1'");
q_("SELECT switchboard.pull_now('req1')");
ok(wait_for('req1 pulled', sub { q_("SELECT count(*) FROM req1") eq '2' }, 30), 'once repaired, the route pulls again');

$node->stop;
done_testing();
