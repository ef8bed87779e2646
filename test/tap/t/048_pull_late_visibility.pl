# Pull, issue 10 item 4: Salesforce's SystemModstamp has one-second resolution and is stamped
# before the transaction commits, so a record can become visible to queries after a cycle
# whose cursor already covers its time (a record stamped in the cursor's own second, or
# just before). A strict "SystemModstamp > cursor" never sees it again. Each cycle starts an
# overlap window before the cursor instead; the records read again are applied idempotently.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_late');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

sub put_contact
{
	my ($key, $last, $ms) = @_;
	my $res = HTTP::Tiny->new->request('PUT', "$base/_control/records/salesforce/Contact/$key",
		{ headers => { 'Content-Type' => 'application/json' },
		  content => JSON::PP->new->encode({ key_field => 'External_Id__c', properties => { External_Id__c => $key, LastName => $last },
			  defined $ms ? (modified_ms => $ms) : () }) });
	die "PUT: $res->{status}" unless $res->{success};
}

q_(q{
CREATE EXTENSION switchboard;
INSERT INTO switchboard.secrets VALUES ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
CREATE TABLE sf_contacts (ext_id text PRIMARY KEY, last_name text);
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('salesforce', 'salesforce', '$base', 'sf')");
put_contact("c$_", "Last$_") for 1 .. 3;
my $newest = json_get("$base/_control/records/salesforce/Contact/c3")->{modified_ms};

q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('sf_pull', 'sf_contacts', 'salesforce', 'Contact', 'ext_id', 'External_Id__c', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('sf_pull', 'External_Id__c', 'ext_id'), ('sf_pull', 'LastName', 'last_name');
});
ok(wait_for('the first cycle', sub {
	q_("SELECT count(*) FROM sf_contacts") eq '3'
	  && q_("SELECT cursor <> '1970-01-01T00:00:00.000Z' FROM switchboard.pull_status WHERE route = 'sf_pull'") eq 't' }, 30),
	'the first cycle pulls three contacts');
my $cursor = q_("SELECT cursor FROM switchboard.pull_status WHERE route = 'sf_pull'");
my $pulled = q_("SELECT records_pulled FROM switchboard.pull_status WHERE route = 'sf_pull'");

# Two records that committed late: one stamped with the cursor's own time, one earlier in the
# cycle (both were invisible when the first cycle ran). And a change after the cursor.
put_contact('c4', 'Late4', $newest);
put_contact('c5', 'Late5', $newest - 700);
put_contact('c6', 'After6');
q_("SELECT switchboard.pull_now('sf_pull')");
ok(wait_for('the second cycle', sub {
	q_("SELECT cursor <> '$cursor' FROM switchboard.pull_status WHERE route = 'sf_pull'") eq 't' }, 30),
	'the second cycle ends');
is(q_("SELECT string_agg(ext_id || '=' || last_name, ',' ORDER BY ext_id) FROM sf_contacts"),
	'c1=Last1,c2=Last2,c3=Last3,c4=Late4,c5=Late5,c6=After6',
	'the records that became visible late arrived, each once, with its values');
my @queries = grep { ($_->{query}{q} // '') =~ /FROM Contact WHERE (?!IsDeleted)/ } @{ double_requests($base, '/services/data/') };
like($queries[-1]{query}{q}, qr/SystemModstamp >= /, 'the cycle started an overlap window before the cursor');
# The records of the overlap window read again (c1..c3) changed nothing and failed nothing.
ok(q_("SELECT records_pulled FROM switchboard.pull_status WHERE route = 'sf_pull'") >= $pulled + 3, 'the new records counted');
is(q_("SELECT records_failed FROM switchboard.pull_status WHERE route = 'sf_pull'"), '0', 'nothing failed');

# A third cycle with nothing new reads the window again and applies nothing: a version
# already applied is no remote change (a local edit since, the remote record unchanged, stays).
q_("UPDATE sf_contacts SET last_name = 'Local1' WHERE ext_id = 'c1'");
$pulled = q_("SELECT records_pulled FROM switchboard.pull_status WHERE route = 'sf_pull'");
my $last = q_("SELECT last_pull_at FROM switchboard.pull_status WHERE route = 'sf_pull'");
json_delete("$base/_control/requests");
q_("SELECT switchboard.pull_now('sf_pull')");
ok(wait_for('the third cycle', sub {
	q_("SELECT last_pull_at > '$last' AND next_pull_at > now() FROM switchboard.pull_status WHERE route = 'sf_pull'") eq 't' }, 30),
	'the third cycle ends');
@queries = grep { ($_->{query}{q} // '') =~ /FROM Contact WHERE (?!IsDeleted)/ } @{ double_requests($base, '/services/data/') };
ok(@queries >= 1, 'the window was read again');
is(q_("SELECT records_pulled FROM switchboard.pull_status WHERE route = 'sf_pull'"), $pulled, 'nothing applied again');
is(q_("SELECT string_agg(ext_id || '=' || last_name, ',' ORDER BY ext_id) FROM sf_contacts"),
	'c1=Local1,c2=Last2,c3=Last3,c4=Late4,c5=Late5,c6=After6', 'the local edit stays');

$node->stop;
done_testing();
