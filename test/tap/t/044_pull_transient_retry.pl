# Pull, issue 10 item 4: a transient per-record failure is tried again, not skipped while the
# cursor moves past it. Here the application inserts the same key while the pull inserts the
# remote record: the pull's insert waits for it and fails on the unique index; tried again, the
# record finds the row (and the pending local change), and conflict = 'remote' settles it.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_retry');
sub q_ { return $node->safe_psql('postgres', $_[0]); }
sub pulled
{
	return wait_for('pull', sub { q_("SELECT next_pull_at > now() FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't' }, 30);
}

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text UNIQUE, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, conflict, pull_interval)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'email', 'email', 'both', 'remote', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column) VALUES
  ('contacts_hs', 'email', 'email', 'email'),
  ('contacts_hs', 'firstname', 'first_name', 'first_name');
});
ok(pulled(), 'the route pulled once');

my $res = HTTP::Tiny->new->request('PUT', "$base/_control/records/hubspot/contacts/race\@x.com",
	{ headers => { 'Content-Type' => 'application/json' }, content => '{"properties":{"firstname":"remote"}}' });
die "PUT: $res->{status}" unless $res->{success};
my $app = $node->background_psql('postgres');
$app->query_safe("BEGIN; INSERT INTO contacts (email, first_name) VALUES ('race\@x.com', 'app')");
q_("SELECT switchboard.pull_now('contacts_hs')");
ok(wait_for('the pull\'s insert waiting', sub {
	q_("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND wait_event_type = 'Lock'") eq '1' }, 30),
	'the pull inserts the same key and waits for the application');
$app->query_safe('COMMIT');
$app->quit;
ok(pulled(), 'pulled');
is(q_("SELECT records_failed FROM switchboard.pull_status WHERE route = 'contacts_hs'"), '0', 'the record did not fail');
is(q_("SELECT first_name FROM contacts WHERE email = 'race\@x.com'"), 'remote', 'tried again, it was applied (conflict = remote)');
q_("SELECT switchboard.wait_idle('30 s')");
is(json_get("$base/_control/records/hubspot/contacts/race\@x.com")->{properties}{firstname}, 'remote', 'both sides agree');

$node->stop;
done_testing();
