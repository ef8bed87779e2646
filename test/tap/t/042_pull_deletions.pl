# Pull, issue 10 item 3: a remote deletion applies to the remote record the route knows for the
# key. HubSpot's archived listing is walked whole every cycle: a contact archived there and
# created again by the application (a new HubSpot record) is not deleted again.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_deletions');
sub q_ { return $node->safe_psql('postgres', $_[0]); }
sub full_cycle
{
	q_("SELECT switchboard.pull_now('contacts_hs')");
	return wait_for('a pull cycle', sub {
		q_("SELECT phase = 'changes' AND next_pull_at > now() AND last_error IS NULL FROM switchboard.pull_state WHERE route = 'contacts_hs'") eq 't' }, 30);
}

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text UNIQUE, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, on_delete, conflict, pull_interval)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'lower(email)', 'email', 'both', 'delete', 'remote', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column) VALUES
  ('contacts_hs', 'email', 'lower(email)', 'email'),
  ('contacts_hs', 'firstname', 'first_name', 'first_name');
INSERT INTO contacts (email, first_name) VALUES ('carol@x.com', 'Carol'), ('dan@x.com', 'Dan');
});
q_("SELECT switchboard.wait_idle('30 s')");
ok(full_cycle(), 'a first pull cycle');
my $first_id = json_get("$base/_control/records/hubspot/contacts/carol\@x.com")->{id};
is(q_("SELECT remote_id FROM switchboard.remote_ids WHERE route = 'contacts_hs' AND key = 'carol\@x.com'"), $first_id, 'the remote id is known');

# Archived in the CRM: deleted locally.
HTTP::Tiny->new->request('DELETE', "$base/_control/records/hubspot/contacts/carol\@x.com");
ok(full_cycle(), 'pulled the deletion');
is(q_("SELECT count(*) FROM contacts WHERE email = 'carol\@x.com'"), '0', 'a contact archived in the CRM is deleted locally');

# The application creates it again: a new HubSpot record.
q_("INSERT INTO contacts (email, first_name) VALUES ('carol\@x.com', 'Carol again')");
q_("SELECT switchboard.wait_idle('30 s')");
my $second_id = json_get("$base/_control/records/hubspot/contacts/carol\@x.com")->{id};
isnt($second_id, $first_id, 'the CRM created a new record');
is(q_("SELECT remote_id FROM switchboard.remote_ids WHERE route = 'contacts_hs' AND key = 'carol\@x.com'"), $second_id, 'whose id the route knows');

# Every later sweep of the archive still lists the old record: it deletes nothing.
ok(full_cycle(), 'another pull cycle');
ok(full_cycle(), 'and another');
is(q_("SELECT first_name FROM contacts WHERE email = 'carol\@x.com'"), 'Carol again', 'the contact created again is not deleted');
is(q_("SELECT count(*) FROM contacts"), '2', 'nothing else is deleted');

# A deletion of a record the route knows still applies.
HTTP::Tiny->new->request('DELETE', "$base/_control/records/hubspot/contacts/dan\@x.com");
ok(full_cycle(), 'pulled');
is(q_("SELECT count(*) FROM contacts WHERE email = 'dan\@x.com'"), '0', 'a newly archived contact is deleted');

$node->stop;
done_testing();
