# Pull, issue 10 item 4: Salesforce queries are paged by keyset, each one ordered by
# (SystemModstamp, Id) and limited to 2,000 records, the next starting after the last pair
# seen. A bulk load stamps thousands of records with one SystemModstamp (one-second
# resolution): more than a page shares the keyset's time, and paging on time alone would ask
# for the same page forever. The Id breaks the tie: every record arrives, once, in a few
# queries, and the cursor ends at that second.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_one_second');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

q_(q{
CREATE EXTENSION switchboard;
INSERT INTO switchboard.secrets VALUES ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
CREATE TABLE sf_contacts (ext_id text PRIMARY KEY, last_name text);
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('salesforce', 'salesforce', '$base', 'sf')");

my $second = (int(time()) - 30) * 1000;
my $http = HTTP::Tiny->new;
for my $n (1 .. 4500)
{
	my $res = $http->request('PUT', "$base/_control/records/salesforce/Contact/b$n",
		{ headers => { 'Content-Type' => 'application/json' },
		  content => JSON::PP->new->encode({ key_field => 'External_Id__c', modified_ms => $second,
			  properties => { External_Id__c => "b$n", LastName => "Bulk$n" } }) });
	die "PUT: $res->{status}" unless $res->{success};
}
json_delete("$base/_control/requests");
pass('4,500 records stamped with one second');

q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('sf_pull', 'sf_contacts', 'salesforce', 'Contact', 'ext_id', 'External_Id__c', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('sf_pull', 'External_Id__c', 'ext_id'), ('sf_pull', 'LastName', 'last_name');
});
ok(wait_for('the cycle ends', sub {
	q_("SELECT cursor <> '1970-01-01T00:00:00.000Z' FROM switchboard.pull_status WHERE route = 'sf_pull'") eq 't' }, 60),
	'the cycle ends');
is(q_("SELECT count(*) FROM sf_contacts"), '4500', 'every record arrived');
is(q_("SELECT count(*) FROM sf_contacts WHERE last_name = 'Bulk' || substr(ext_id, 2)"), '4500', 'with its values');
is(q_("SELECT records_pulled FROM switchboard.pull_status WHERE route = 'sf_pull'"), '4500', 'each applied once');
is(q_("SELECT records_failed FROM switchboard.pull_status WHERE route = 'sf_pull'"), '0', 'nothing failed');
my @queries = grep { ($_->{query}{q} // '') =~ /FROM Contact WHERE (?!IsDeleted)/ } @{ double_requests($base, '/services/data/') };
ok(@queries >= 3 && @queries <= 4, 'three queries of 2,000 at most, no loop (' . scalar(@queries) . ')');
like($queries[-1]{query}{q}, qr/SystemModstamp = \S+ AND Id > '/, 'the later pages start after the last (time, Id) pair');
my $expect = q_("SELECT to_char(to_timestamp($second / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')");
is(q_("SELECT cursor FROM switchboard.pull_status WHERE route = 'sf_pull'"), $expect, 'the cursor ends at that second');

$node->stop;
done_testing();
