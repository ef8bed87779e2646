# Pull, issue 10 item 4: HubSpot's search pages by offset (after), and a record modified
# between two pages (our own push landing, an edit in the CRM) moves to the end of a result
# sorted by modification time: every record behind it shifts one place forward, and the next
# offset skips one of them for good (the cursor moves past it at the end of the cycle). The
# pull pages by keyset instead (each page a new search from the newest time seen): nothing
# is skipped, and the records read twice are applied idempotently.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_moved');
sub q_ { return $node->safe_psql('postgres', $_[0]); }

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE people (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");

# 600 contacts, each with a modification time of its own (three pages of 200).
my $http = HTTP::Tiny->new;
for my $n (1 .. 600)
{
	my $res = $http->request('PUT', "$base/_control/records/hubspot/people/p$n\@x.com",
		{ headers => { 'Content-Type' => 'application/json' },
		  content => JSON::PP->new->encode({ properties => { email => "p$n\@x.com", firstname => "P$n" } }) });
	die "PUT: $res->{status}" unless $res->{success};
}
json_delete("$base/_control/requests");
# After each of the first two pages, five of its records are modified (same values): they
# move to the end of the results while the pull is between pages.
control($base, 'config', { hubspot_touch_after_search => { count => 5, searches => 2 } });

q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, pull_interval)
VALUES ('people_hs', 'people', 'hubspot', 'people', 'email', 'email', 'pull', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES ('people_hs', 'email', 'email'), ('people_hs', 'firstname', 'first_name');
});
ok(wait_for('the cycle ends', sub {
	q_("SELECT coalesce(cursor, '0') <> '0' FROM switchboard.pull_status WHERE route = 'people_hs'") eq 't' }, 60),
	'one cycle of the pull ends');
is(control($base, 'config', {})->{hubspot_touch_after_search}{searches}, 0, 'records were moved between pages');
is(q_("SELECT count(*) FROM people"), '600', 'no record skipped: all 600 arrived');
is(q_("SELECT count(*) FROM people WHERE first_name = 'P' || substr(email, 2, strpos(email, '\@') - 2)"), '600',
	'each with its own values');
is(q_("SELECT records_failed FROM switchboard.pull_status WHERE route = 'people_hs'"), '0', 'nothing failed');
my @searches = grep { $_->{path} =~ m{/people/search$} } @{ double_requests($base, '/crm/') };
ok(!(grep { exists $_->{body}{after} } @searches), 'never paged by offset');
ok(!(grep { @{ $_->{body}{sorts} // [] } != 1 } @searches), 'one sort rule per search (all HubSpot applies)');
ok(!(grep { ($_->{status} // 0) != 200 } @searches), 'every search answered 200');

$node->stop;
done_testing();
