# Pull, issue 10 item 4: a Salesforce query whose locator expired between two pages
# (INVALID_QUERY_LOCATOR) is started again instead of being asked for forever.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_locator');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

control($base, 'config', { sf_page_size => 2 });
q_(q{
CREATE EXTENSION switchboard;
INSERT INTO switchboard.secrets VALUES ('sf', '{"client_id":"sf-id","client_secret":"sf-secret"}');
CREATE TABLE sf_contacts (ext_id text PRIMARY KEY, last_name text);
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('salesforce', 'salesforce', '$base', 'sf')");
for my $n (1 .. 6)
{
	my $res = HTTP::Tiny->new->request('PUT', "$base/_control/records/salesforce/Contact/c$n",
		{ headers => { 'Content-Type' => 'application/json' },
		  content => JSON::PP->new->encode({ key_field => 'External_Id__c', properties => { External_Id__c => "c$n", LastName => "Last$n" } }) });
	die "PUT: $res->{status}" unless $res->{success};
}
# The second page of the query is held 1.5 s, and the query's locator expires meanwhile.
control($base, 'faults', { path_prefix => '/services/data/v59.0/query/', kind => 'slow', delay_ms => 1500, count => 1 });
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('sf_pull', 'sf_contacts', 'salesforce', 'Contact', 'ext_id', 'External_Id__c', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('sf_pull', 'External_Id__c', 'ext_id'), ('sf_pull', 'LastName', 'last_name');
});
ok(wait_for('the second page asked for', sub { scalar @{ double_requests($base, '/services/data/v59.0/query/') } >= 1 }, 30),
	'the pull follows nextRecordsUrl');
is(control($base, 'expire_locators')->{expired}, 1, 'the query locator expires');
ok(wait_for('all records pulled', sub { q_("SELECT count(*) FROM sf_contacts") eq '6' }, 20),
	'the query is started again and every record arrives');
my @refused = grep { ($_->{status} // 0) == 400 } @{ double_requests($base, '/services/data/') };
is(scalar @refused, 1, 'the expired locator was asked for once');
# The query starts again after the last record the batches so far reached (issue 10.4 keyset),
# not from the start of the cycle.
my @after = grep { $_->{seq} > $refused[0]{seq} && ($_->{query}{q} // '') =~ /FROM Contact WHERE (?!IsDeleted)/ }
	@{ double_requests($base, '/services/data/') };
like($after[0]{query}{q} // '', qr/SystemModstamp = \S+ AND Id > '/, 'the new query starts after the position reached');
is(q_("SELECT records_failed FROM switchboard.pull_status WHERE route = 'sf_pull'"), '0', 'nothing failed');

$node->stop;
done_testing();
