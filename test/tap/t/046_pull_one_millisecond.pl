# Pull, issue 10 item 4: HubSpot's search pages at most 10,000 results per query, and the pull
# re-anchors its cursor on the newest time seen. When the whole window shares one millisecond
# (a bulk import), re-anchoring on time fetches the same 10,000 again forever: the pull walks
# that millisecond's records by id instead, and every record arrives.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_one_ms');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE imported (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");

my $http = HTTP::Tiny->new;
my $ms = int(time() * 1000) - 60_000;
control($base, 'config', { hubspot_frozen_ms => $ms });
for my $batch (0 .. 102)
{
	my @inputs = map { my $n = $batch * 100 + $_; { idProperty => 'email', id => "i$n\@x.com", properties => { email => "i$n\@x.com", firstname => "I$n" } } } 1 .. 100;
	my $res = $http->request('POST', "$base/crm/v3/objects/imported/batch/upsert",
		{ headers => { 'Content-Type' => 'application/json', Authorization => 'Bearer hs-test-token' }, content => JSON::PP->new->encode({ inputs => \@inputs }) });
	die "seed: $res->{status}" unless $res->{success};
}
control($base, 'config', { hubspot_frozen_ms => undef });
json_delete("$base/_control/requests");
pass('10,300 records stamped with one millisecond');

my $xid_before = q_("SELECT txid_current()");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('imported_hs', 'imported', 'hubspot', 'imported', 'email', 'email', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('imported_hs', 'email', 'email'), ('imported_hs', 'firstname', 'first_name');
});
ok(wait_for('every record pulled', sub { q_("SELECT count(*) FROM imported") == 10_300 }, 120), 'all 10,300 records arrive');
# Issue 10.6: a page is applied with one statement, not a subtransaction (and an XID) per record.
my $xids = q_("SELECT txid_current()") - $xid_before;
ok($xids < 1500, "pages applied set-based ($xids transaction ids for 10,300 records)");
is(q_("SELECT cursor FROM switchboard.pull_status WHERE route = 'imported_hs'"), "$ms", 'the cursor moved past that millisecond');
my @searches = grep { $_->{path} =~ m{/imported/search$} && ($_->{status} // 0) == 200 } @{ double_requests($base, '/crm/') };
ok(!(grep { ($_->{body}{after} // 0) + 200 > 10000 } @searches), 'never asked past the 10,000-result cap');
# 50 pages of the first window, re-anchored just below its millisecond: 50 more of the same
# window (now known to share one millisecond), 52 of that millisecond by id, then the query past it.
ok(@searches < 170, 'no loop over the same window (' . scalar(@searches) . ' searches)');

$node->stop;
done_testing();
