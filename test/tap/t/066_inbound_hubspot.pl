# Inbound HubSpot events (issue 12 item 4, SPEC §9): they name object ids only, so the worker
# reads the records back with POST /crm/v3/objects/{object}/batch/read (the mapped properties,
# at most 100 ids per request, one request for the events of a batch) and applies them like a
# pull. A 503 leaves the events pending and they are tried again; an id HubSpot no longer has is
# a deletion of the record the route knows; a deletion event likewise. The cursor stays.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use HTTP::Tiny;
use JSON::PP;

my ($base, $double) = start_double();
my $node = new_node('inbound_hubspot', 'switchboard.naptime' => "'10s'");
sub q_ { return $node->safe_psql('postgres', $_[0]); }

q_(q{
CREATE EXTENSION switchboard;
CREATE TABLE contacts (id serial PRIMARY KEY, email text UNIQUE, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
});
q_("INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs')");
q_(q{
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, on_delete, pull_interval)
VALUES ('contacts_hs', 'contacts', 'hubspot', 'contacts', 'email', 'email', 'pull', 'delete', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, pull_column) VALUES
  ('contacts_hs', 'email', 'email'), ('contacts_hs', 'firstname', 'first_name');
});
ok(wait_for('first pull', sub { q_("SELECT last_pull_at IS NOT NULL AND next_pull_at > now() FROM switchboard.pull_status WHERE route = 'contacts_hs'") eq 't' }, 30),
	'the route polled once');
my $cursor_sql = "SELECT cursor, last_pull_at, records_pulled, next_pull_at FROM switchboard.pull_status WHERE route = 'contacts_hs'";
my $cursor_before = q_($cursor_sql);

my $http = HTTP::Tiny->new;
sub crm_put
{
	my ($email, $first) = @_;
	my $res = $http->request('PUT', "$base/_control/records/hubspot/contacts/$email",
		{ headers => { 'Content-Type' => 'application/json' }, content => encode_json({ properties => { firstname => $first } }) });
	die "PUT: $res->{status} $res->{content}" unless $res->{success};
	return json_get("$base/_control/records/hubspot/contacts/$email")->{id};
}
my $serial = 0;
sub event
{
	my ($id, $type) = @_;
	$type //= 'contact.propertyChange';
	my $deleted = $type =~ /deletion$/ ? 'true' : 'false';
	$serial++;
	return "INSERT INTO switchboard.inbound_events (route, event_id, kind, object_id, type, property, deleted, occurred_at, resource, read_back) "
	  . "VALUES ('contacts_hs', '$serial', 'hubspot-v3', '$id', '$type', 'firstname', $deleted, clock_timestamp(), NULL, true);";
}
sub applied_all
{
	return wait_for('events applied', sub { q_("SELECT count(*) FROM switchboard.inbound_events WHERE applied_at IS NULL") eq '0' }, 30);
}
sub reads { return scalar grep { $_->{path} =~ m{/batch/read$} } @{ double_requests($base, '/crm/') }; }

# ---- events of three objects, one of them twice: one batch/read --------------------------
my %id = map { $_ => crm_put("$_\@x.io", ucfirst $_) } qw(ann bob cy);
json_delete("$base/_control/requests");
q_('BEGIN; ' . join('', map { event($id{$_}) } qw(ann bob ann cy)) . 'SELECT switchboard.wake(); COMMIT');
ok(applied_all(), 'the events are applied');
is(q_("SELECT string_agg(email || ':' || first_name, ',' ORDER BY email) FROM contacts"), 'ann@x.io:Ann,bob@x.io:Bob,cy@x.io:Cy',
	'the records read back are upserted');
is(reads(), 1, 'one batch/read for the events of the batch');
my ($read) = grep { $_->{path} =~ m{/batch/read$} } @{ double_requests($base, '/crm/') };
is(scalar @{ $read->{body}{inputs} }, 3, 'each object asked once');
ok((grep { $_ eq 'firstname' } @{ $read->{body}{properties} }), 'with the mapped properties');
is(q_($cursor_sql), $cursor_before, 'the polling cursor is untouched');

# ---- a 503 from batch/read: pending, then retried --------------------------------------
crm_put('ann@x.io', 'Annie');
control($base, 'faults', { path_prefix => '/crm/v3/objects/contacts/batch/read', kind => 'status', status => 503, count => 1 });
json_delete("$base/_control/requests");
q_(event($id{ann}) . 'SELECT switchboard.wake()');
ok(wait_for('the 503', sub { reads() >= 1 }, 30), 'the read-back is tried');
is(q_("SELECT attempts || ' ' || (applied_at IS NULL) FROM switchboard.inbound_events WHERE event_id = '$serial'"), '0 true',
	'after the 503 the event is still pending, no attempt counted');
ok(applied_all(), 'tried again after a backoff, the event is applied');
is(reads(), 2, 'the read-back was sent again');
is(q_("SELECT first_name FROM contacts WHERE email = 'ann\@x.io'"), 'Annie', 'and applied');

# ---- ids HubSpot no longer has, and deletion events ------------------------------------
json_delete("$base/_control/records/hubspot/contacts/bob\@x.io");
q_(event($id{bob}) . event($id{cy}, 'contact.deletion') . event('424242', 'contact.deletion') . 'SELECT switchboard.wake()');
ok(applied_all(), 'applied');
is(q_("SELECT string_agg(email, ',' ORDER BY email) FROM contacts"), 'ann@x.io',
	'an id absent from the answer and a deletion event delete the records the route knows; an unknown id deletes nothing');

# ---- 150 objects: two requests of at most 100 ids --------------------------------------
my @many = map { crm_put("m$_\@x.io", "M$_") } 1 .. 150;
json_delete("$base/_control/requests");
q_('BEGIN; ' . join('', map { event($_) } @many) . 'SELECT switchboard.wake(); COMMIT');
ok(applied_all(), 'applied');
is(q_("SELECT count(*) FROM contacts WHERE email LIKE 'm%'"), '150', 'all 150 records applied');
my @sizes = map { scalar @{ $_->{body}{inputs} } } grep { $_->{path} =~ m{/batch/read$} } @{ double_requests($base, '/crm/') };
is_deeply([ sort { $a <=> $b } @sizes ], [ 50, 100 ], 'read back in requests of at most 100 ids');
is(q_($cursor_sql), $cursor_before, 'the polling cursor was never touched');

$node->stop;
done_testing();
