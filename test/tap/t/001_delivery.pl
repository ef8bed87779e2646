# Delivery to HubSpot: only committed changes, per-key order, coalescing, batching,
# stable idempotency keys, deletes by remembered remote id.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time);

my ($base, $double) = start_double();
my $node = new_node('delivery');
setup_hubspot_route($node, $base);

ok( wait_for('worker in pg_stat_activity',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker'") == 1 }),
	'one worker for the database, with its own backend_type');
like(sql($node, "SELECT backend_type FROM pg_stat_activity WHERE backend_type LIKE 'switchboard%' ORDER BY 1 LIMIT 1"),
	qr/switchboard launcher/, 'the launcher is visible too');

sub records { return { map { $_->{key} => $_ } @{ json_get("$base/_control/records/hubspot/contacts") } }; }
sub upserts { return [ grep { $_->{path} =~ m{/batch/upsert$} } @{ double_requests($base, '/crm/') } ]; }

# commit-only
$node->safe_psql('postgres', q{
BEGIN; INSERT INTO contacts (email, first_name) VALUES ('rolled@x.com', 'Never'); ROLLBACK;
INSERT INTO contacts (email, first_name) VALUES ('Kept@x.com', 'Kept');
});
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'wait_idle returns true once delivered');
my $recs = records();
ok($recs->{'kept@x.com'}, 'committed change delivered');
ok(!$recs->{'rolled@x.com'}, 'rolled-back change never delivered');
is($recs->{'kept@x.com'}{properties}{firstname}, 'Kept', 'mapped property sent');

# batching: 250 rows in one transaction -> upserts of at most 100 inputs
json_delete("$base/_control/requests");
$node->safe_psql('postgres',
	q{INSERT INTO contacts (email, first_name) SELECT 'u' || g || '@x.com', 'U' || g FROM generate_series(1, 250) g});
sql($node, "SELECT switchboard.wait_idle('30 s')");
my $calls = upserts();
my @sizes = map { scalar @{ $_->{body}{inputs} } } @$calls;
ok(@sizes >= 3, 'at least three calls for 250 records (' . join(',', @sizes) . ')');
ok(!(grep { $_ > 100 } @sizes), 'no call carries more than 100 inputs');
my $total = 0;
$total += $_ for @sizes;
is($total, 250, 'each record sent once');
is(scalar(grep { /^u\d+\@x\.com$/ } keys %{ records() }), 250, 'all 250 records at the remote');

# per-key order: 30 committed updates of one key, each its own transaction
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "UPDATE contacts SET first_name = 'v' || $_ WHERE email = 'Kept\@x.com'") for 1 .. 30;
sql($node, "SELECT switchboard.wait_idle('30 s')");
my @seen = map { $_->{properties}{firstname} } grep { $_->{id} eq 'kept@x.com' } map { @{ $_->{body}{inputs} } } @{ upserts() };
my @order = map { /^v(\d+)$/ ? $1 : -1 } @seen;
is_deeply(\@order, [ sort { $a <=> $b } @order ], 'changes of one key arrive in commit order (' . join(',', @order) . ')');
is($order[-1], 30, 'the last state arrives last');
is(records()->{'kept@x.com'}{properties}{firstname}, 'v30', 'remote holds the latest state');

# coalescing: while the endpoint is paused, 20 updates of one key become one upsert
$node->safe_psql('postgres', "UPDATE switchboard.endpoints SET enabled = false WHERE name = 'hubspot'");
$node->safe_psql('postgres', "UPDATE contacts SET first_name = 'c' || $_ WHERE email = 'Kept\@x.com'") for 1 .. 20;
is(sql($node, "SELECT pending FROM switchboard.route_status"), '20', 'changes wait while the endpoint is disabled');
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "UPDATE switchboard.endpoints SET enabled = true WHERE name = 'hubspot'");
sql($node, "SELECT switchboard.wait_idle('30 s')");
my @inputs = grep { $_->{id} eq 'kept@x.com' } map { @{ $_->{body}{inputs} } } @{ upserts() };
is(scalar @inputs, 1, '20 pending changes of one key coalesced into one upsert');
is($inputs[0]{properties}{firstname}, 'c20', 'the coalesced upsert carries the latest state');

# idempotency key: stable across a retry
json_delete("$base/_control/requests");
control($base, 'faults', { path_prefix => '/crm/v3/objects/contacts/batch/upsert', kind => 'status', status => 503, count => 1 });
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('retry\@x.com', 'R')");
sql($node, "SELECT switchboard.wait_idle('30 s')");
my @tries = map { $_->{body}{inputs}[0]{objectWriteTraceId} } @{ upserts() };
is(scalar @tries, 2, 'a 503 is retried');
is($tries[0], $tries[1], 'the retry carries the same objectWriteTraceId');
is(records()->{'retry@x.com'}{writes}, 1, 'effectively once at the remote');
is(sql($node, "SELECT string_agg(outcome || ':' || http_status, ',' ORDER BY at) FROM switchboard.deliveries WHERE key = 'retry\@x.com'"),
	'retry:503,delivered:200', 'deliveries shows both attempts');

# deletes archive the remote record by the id the upsert returned
my $remote_id = sql($node, "SELECT remote_id FROM switchboard.remote_ids WHERE key = 'retry\@x.com'");
is($remote_id, records()->{'retry@x.com'}{id}, 'remote id remembered from the upsert answer');
json_delete("$base/_control/requests");
$node->safe_psql('postgres', "DELETE FROM contacts WHERE email = 'retry\@x.com'");
sql($node, "SELECT switchboard.wait_idle('30 s')");
my ($archive) = grep { $_->{path} =~ m{/batch/archive$} } @{ double_requests($base, '/crm/') };
is_deeply($archive->{body}, { inputs => [ { id => $remote_id } ] }, 'archive request names the remote id');
is(sql($node, "SELECT count(*) FROM switchboard.remote_ids WHERE key = 'retry\@x.com'"), '0', 'remote id forgotten');

# status views after all that
is(sql($node, "SELECT pending || ',' || dead FROM switchboard.route_status"), '0,0', 'nothing pending, nothing dead');
is(sql($node, "SELECT state FROM switchboard.endpoint_status"), 'ok', 'endpoint ok');

$node->stop;
$double->kill_kill;
done_testing();
