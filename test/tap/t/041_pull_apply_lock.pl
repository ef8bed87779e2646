# Pull, issue 10 item 2: a page is applied under a row lock, re-checking pending local changes
# at apply time, and the remote wins only for the fields it pulls.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_lock');
sub q_ { return $node->safe_psql('postgres', $_[0]); }
sub hs_put
{
	my ($key, $props) = @_;
	my $res = HTTP::Tiny->new->request('PUT', "$base/_control/records/hubspot/contacts/$key",
		{ headers => { 'Content-Type' => 'application/json' }, content => JSON::PP->new->encode({ properties => $props }) });
	die "PUT: $res->{status}" unless $res->{success};
}
sub remote { return json_get("$base/_control/records/hubspot/contacts/$_[0]")->{properties}; }
sub pulled
{
	return wait_for('pull', sub { q_("SELECT next_pull_at > now() FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't' }, 30);
}

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text UNIQUE, first_name text, phone text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, conflict, pull_interval)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'both', 'local', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column) VALUES
  ('contacts_hs', 'email', 'lower(email)', 'email'),
  ('contacts_hs', 'firstname', 'first_name', 'first_name'),
  ('contacts_hs', 'phone', 'phone', NULL);   -- pushed, never pulled
INSERT INTO contacts (email, first_name, phone) VALUES ('bob@x.com', 'Bob', '100');
});
q_("SELECT switchboard.wait_idle('30 s')");
q_("SELECT switchboard.pull_now('contacts_hs')");
ok(pulled(), 'the route pulled once');

# conflict = 'local': an application write that commits while the page is being applied.
hs_put('bob@x.com', { firstname => 'remote' });
my $app = $node->background_psql('postgres');
$app->query_safe("BEGIN; UPDATE contacts SET first_name = 'app' WHERE email = 'bob\@x.com'");
q_("SELECT switchboard.pull_now('contacts_hs')");
ok(wait_for('the pull waiting for the row', sub {
	q_("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND wait_event_type = 'Lock'") eq '1' }, 30),
	'the pull waits for the application\'s transaction');
$app->query_safe('COMMIT');
$app->quit;
pulled();
is(q_("SELECT first_name FROM contacts WHERE email = 'bob\@x.com'"), 'app',
	'conflict = local: the write committed meanwhile is not overwritten');
q_("SELECT switchboard.wait_idle('30 s')");
is(remote('bob@x.com')->{firstname}, 'app', 'and it reaches the CRM: both sides agree');

# conflict = 'remote': the remote wins the pulled field; the pending change still pushes the
# field that is never pulled.
q_("UPDATE switchboard.routes SET conflict = 'remote' WHERE name = 'contacts_hs'");
q_("BEGIN; UPDATE contacts SET first_name = 'app2', phone = '555' WHERE email = 'bob\@x.com'; "
	. "UPDATE switchboard.queue SET next_attempt_at = now() + interval '1 hour' WHERE route = 'contacts_hs' AND state = 'pending'; COMMIT");
hs_put('bob@x.com', { firstname => 'remote2' });
q_("SELECT switchboard.pull_now('contacts_hs')");
ok(pulled(), 'pulled with the local change pending');
is(q_("SELECT first_name || '/' || phone FROM contacts WHERE email = 'bob\@x.com'"), 'remote2/555', 'the remote value wins the pulled field');
q_("UPDATE switchboard.queue SET next_attempt_at = NULL WHERE state = 'pending'");
q_("SELECT switchboard.wait_idle('30 s')");
my $r = remote('bob@x.com');
is(($r->{firstname} // '') . '/' . ($r->{phone} // ''), 'remote2/555', 'the push-only field of the pending change is still pushed');

$node->stop;
done_testing();
