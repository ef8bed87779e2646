# Pull, issue 10 item 1: our own push coming back is not a remote change. The worker pushes v1
# (the CRM answers late and stamps v1 after the application committed v2); the next pull sees
# v1 "modified after v2" and, with conflict = 'newest', must still not write v1 back nor drop v2.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_echo');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text UNIQUE, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, conflict, pull_interval)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'both', 'newest', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column) VALUES
  ('contacts_hs', 'email', 'lower(email)', 'email'),
  ('contacts_hs', 'firstname', 'first_name', 'first_name');
INSERT INTO contacts (email, first_name) VALUES ('ada@x.com', 'v0');
});
q_("SELECT switchboard.wait_idle('30 s')");
ok(wait_for('first pull', sub { q_("SELECT last_pull_at IS NOT NULL AND next_pull_at > now() FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't' }, 30),
	'the route pulled once');

# v1 is pushed; the CRM holds the request 2 s and stamps the record when it applies it.
control($base, 'faults', { path_prefix => '/crm/v3/objects/contacts/batch/upsert', kind => 'slow', delay_ms => 2000, count => 1 });
json_delete("$base/_control/requests");
q_("UPDATE contacts SET first_name = 'v1' WHERE email = 'ada\@x.com'");
ok(wait_for('v1 in flight', sub { scalar(grep { $_->{path} =~ m{batch/upsert$} } @{ double_requests($base, '/crm/') }) >= 1 }, 30),
	'v1 is in flight');
# Meanwhile the application commits v2 (held back an hour, so the pull comes first), and asks for a pull.
q_("BEGIN; UPDATE contacts SET first_name = 'v2' WHERE email = 'ada\@x.com'; "
	. "UPDATE switchboard.queue SET next_attempt_at = now() + interval '1 hour' WHERE route = 'contacts_hs' AND state = 'pending'; COMMIT");
q_("SELECT switchboard.pull_now('contacts_hs')");
ok(wait_for('v1 stamped by the CRM', sub { json_get("$base/_control/records/hubspot/contacts/ada\@x.com")->{properties}{firstname} eq 'v1' }, 30),
	'the CRM applied v1');
ok(wait_for('the pull after the push', sub {
	q_("SELECT next_pull_at > now() FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't' }, 30), 'pulled again');
ok(q_("SELECT (pg_catalog.date_part('epoch', captured_at) * 1000)::bigint FROM switchboard.queue WHERE route = 'contacts_hs' AND state = 'pending'")
	< json_get("$base/_control/records/hubspot/contacts/ada\@x.com")->{modified_ms},
	'the CRM stamped v1 later than v2 was committed (the interleaving happened)');
is(q_("SELECT first_name FROM contacts WHERE email = 'ada\@x.com'"), 'v2', 'the echo of v1 is not written back over v2');
is(q_("SELECT count(*) FROM switchboard.queue WHERE route = 'contacts_hs' AND state = 'pending'"), '1', 'v2 is still to be pushed');

q_("UPDATE switchboard.queue SET next_attempt_at = NULL WHERE state = 'pending'");
q_("SELECT switchboard.wait_idle('30 s')");
is(json_get("$base/_control/records/hubspot/contacts/ada\@x.com")->{properties}{firstname}, 'v2', 'v2 reaches the CRM');
# And the echo of v2 itself changes nothing on the next pull.
q_("SELECT switchboard.pull_now('contacts_hs')");
wait_for('pull', sub { q_("SELECT next_pull_at > now() FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't' }, 30);
is(q_("SELECT first_name FROM contacts WHERE email = 'ada\@x.com'"), 'v2', 'both sides end at v2');
is(q_("SELECT fields->>'firstname' FROM switchboard.pushed_state WHERE route = 'contacts_hs' AND key = 'ada\@x.com'"), 'v2',
	'pushed_state keeps what was delivered last');

$node->stop;
done_testing();
