# Pull, issue 10 (HubSpot's ceiling): records written by one request share a modification time
# (a batch upsert of 100), so a search page of 200 usually ends amid a batch. Paging by the
# newest time alone reads that batch again on the next page, and a full pull costs up to twice
# the searches HubSpot allows per second. The next search leaves out the ids already read at
# that time (NOT_IN): 1,000 records take 5 full pages and one to see the end, nothing twice.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_economy');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE people (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");

# 1,000 contacts in ten batch upserts: ten modification times of 100 records each.
my $http = HTTP::Tiny->new;
for my $batch (0 .. 9)
{
	my @inputs = map { { idProperty => 'email', id => "p$_\@x.com", properties => { email => "p$_\@x.com", firstname => "P$_" } } }
	  ($batch * 100 + 1 .. $batch * 100 + 100);
	my $res = $http->request('POST', "$base/crm/v3/objects/people/batch/upsert",
		{ headers => { 'Content-Type' => 'application/json', Authorization => 'Bearer hs-test-token' },
		  content => JSON::PP->new->encode({ inputs => \@inputs }) });
	die "upsert: $res->{status} $res->{content}" unless $res->{success};
	select(undef, undef, undef, 0.005);    # the next batch, another millisecond
}
json_delete("$base/_control/requests");

q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('people_hs', 'people', 'hubspot', 'people', 'email', 'email', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('people_hs', 'email', 'email'), ('people_hs', 'firstname', 'first_name');
});
ok(wait_for('the cycle ends', sub {
	q_("SELECT coalesce(cursor, '0') <> '0' FROM switchboard.pull_status WHERE route = 'people_hs'") eq 't' }, 60),
	'one cycle of the pull ends');
is(q_("SELECT count(*) FROM people"), '1000', 'all 1,000 arrived');
is(q_("SELECT records_failed FROM switchboard.pull_status WHERE route = 'people_hs'"), '0', 'nothing failed');
my @searches = grep { $_->{path} =~ m{/people/search$} } @{ double_requests($base, '/crm/') };
ok(!(grep { ($_->{status} // 0) != 200 } @searches), 'every search answered 200');
ok(@searches <= 6, sprintf('1,000 records in %d searches (5 pages of 200 and the end), none spent on records read already', scalar @searches));
$node->stop;
done_testing();
