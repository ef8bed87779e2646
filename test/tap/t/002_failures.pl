# Failure handling against the HubSpot double (SPEC §4): per-record rejections become dead
# letters at once while the rest of the batch is delivered, Retry-After is honoured, 5xx is
# retried up to max_attempts, timeouts and dropped connections are retried, and a long outage
# trips the circuit breaker without losing or dead-lettering anything. Repair with retry()
# and discard() (SPEC §8).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my $t0 = time;
my ($base, $double) = start_double();
my $node = new_node('failures');
setup_hubspot_route($node, $base);

ok( wait_for('worker in pg_stat_activity',
		sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker'") == 1 }),
	'worker running');

my $upsert_path = '/crm/v3/objects/contacts/batch/upsert';

sub records { return { map { $_->{key} => $_ } @{ json_get("$base/_control/records/hubspot/contacts") } }; }

# Upsert requests (in arrival order) that carried the given key.
sub upserts_for
{
	my ($key) = @_;
	return [ grep { grep { $_->{id} eq $key } @{ $_->{body}{inputs} // [] } }
		  grep { $_->{path} eq $upsert_path } @{ double_requests($base, '/crm/') } ];
}

sub fresh_double
{
	json_delete("$base/_control/faults");
	json_delete("$base/_control/requests");
}

sub set_guc
{
	my ($name, $value) = @_;
	my $cmd = defined $value ? "ALTER SYSTEM SET $name = '$value'" : "ALTER SYSTEM RESET $name";
	$node->safe_psql('postgres', $cmd);
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	# the worker picks the new value up at the start of its next round
	sleep 0.6;
}

sub wait_idle
{
	my ($secs) = @_;
	$secs //= 30;
	return sql($node, "SELECT switchboard.wait_idle('$secs s')");
}

# warm up: the endpoint is healthy
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('warm\@x.com', 'W')");
is(wait_idle(), 't', 'warm-up change delivered');

# ---------------------------------------------------------------------------------------
# 1. per-record rejection inside a 207: only that record is dead, the rest delivered
fresh_double();
control($base, 'faults', { path_prefix => $upsert_path, kind => 'reject', reject_ids => ['rej2@x.com'] });
$node->safe_psql('postgres', q{INSERT INTO contacts (email, first_name) VALUES
  ('rej1@x.com', 'One'), ('rej2@x.com', 'Two'), ('rej3@x.com', 'Three')});
is(wait_idle(), 't', 'batch with a rejected record settles');
my $calls = upserts_for('rej2@x.com');
is(scalar @$calls, 1, 'the rejected record was sent once (not retried)');
is(scalar @{ $calls->[0]{body}{inputs} // [] }, 3, 'the three records travelled in one batch');
my $recs = records();
ok($recs->{'rej1@x.com'} && $recs->{'rej3@x.com'}, 'the other records of the batch were delivered');
ok(!$recs->{'rej2@x.com'}, 'the rejected record is not at the remote');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters"), '1', 'exactly one dead letter');
my ($dl_key, $dl_error, $dl_email, $dl_first) = split /\|/,
  sql($node, "SELECT key, last_error, payload->>'email', payload->>'firstname' FROM switchboard.dead_letters");
is($dl_key, 'rej2@x.com', 'dead letter shows the key');
like($dl_error, qr/injected rejection of email=rej2\@x\.com/, "dead letter carries the remote's message");
is($dl_email, 'rej2@x.com', 'dead letter payload holds the translated email');
is($dl_first, 'Two', 'dead letter payload holds the translated fields');
is(sql($node, "SELECT pending || ',' || dead FROM switchboard.route_status"), '0,1', 'route_status counts the dead letter');
is(sql($node, "SELECT string_agg(outcome, ',' ORDER BY at) FROM switchboard.deliveries WHERE key = 'rej2\@x.com'"),
	'dead', 'deliveries shows the rejection as dead');
is(sql($node, "SELECT state FROM switchboard.endpoint_status"), 'ok',
	'a per-record rejection does not move the circuit breaker');

json_delete("$base/_control/faults");
is(sql($node, "SELECT switchboard.retry()"), '1', 'retry() re-queues the dead letter');
is(wait_idle(), 't', 're-queued change settles');
is(records()->{'rej2@x.com'}{properties}{firstname}, 'Two', 'the retried record is delivered');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters"), '0', 'dead_letters is empty after the retry');

# ---------------------------------------------------------------------------------------
# 2. 429 with Retry-After: 2 is honoured
fresh_double();
control($base, 'faults',
	{ path_prefix => $upsert_path, kind => 'status', status => 429, retry_after => '2', count => 1 });
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('ra\@x.com', 'RA')");
is(wait_idle(), 't', 'rate-limited change settles');
$calls = upserts_for('ra@x.com');
is(scalar @$calls, 2, 'one 429, one retry');
is($calls->[0]{status}, 429, 'first answer was the 429');
my $gap = $calls->[1]{at_ms} - $calls->[0]{at_ms};
cmp_ok($gap, '>=', 1900, "retry came no sooner than Retry-After (${gap} ms)");
cmp_ok($gap, '<', 15000, "retry came reasonably soon after the pause (${gap} ms)");
is($calls->[0]{body}{inputs}[0]{objectWriteTraceId}, $calls->[1]{body}{inputs}[0]{objectWriteTraceId},
	'same idempotency key on the retry');
ok(records()->{'ra@x.com'}, 'rate-limited change delivered');
is(sql($node, "SELECT string_agg(outcome || ':' || http_status, ',' ORDER BY at) FROM switchboard.deliveries WHERE key = 'ra\@x.com'"),
	'retry:429,delivered:200', 'deliveries shows the 429 and the success');

# ---------------------------------------------------------------------------------------
# 3. 5xx until cleared, max_attempts = 3: dead letter, endpoint backing off; retry(id), discard(id)
fresh_double();
set_guc('switchboard.max_attempts', 3);
control($base, 'faults', { path_prefix => $upsert_path, kind => 'status', status => 500 });
$node->safe_psql('postgres', q{INSERT INTO contacts (email, first_name) VALUES ('five1@x.com', 'F1'), ('five2@x.com', 'F2')});
is(wait_idle(60), 't', 'changes failing with 500 settle');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters WHERE key IN ('five1\@x.com', 'five2\@x.com')"), '2',
	'both changes are dead letters');
my ($id1, $att1, $st1, $err1) = split /\|/,
  sql($node, "SELECT id, attempts, last_status, last_error FROM switchboard.dead_letters WHERE key = 'five1\@x.com'");
is($att1, '3', 'dead after max_attempts = 3 attempts');
is($st1, '500', 'last_status 500');
like($err1, qr/gave up after 3 attempts/, 'error says it gave up after 3 attempts');
like($err1, qr/500/, 'error quotes the remote status');
is(scalar @{ upserts_for('five1@x.com') }, 3, 'exactly three requests carried the change');
my $id2 = sql($node, "SELECT id FROM switchboard.dead_letters WHERE key = 'five2\@x.com'");
my ($ep_state, $ep_error) = split /\|/, sql($node, "SELECT state, last_error FROM switchboard.endpoint_status");
like($ep_state, qr/^(backing_off|open)$/, "endpoint_status shows the endpoint backing off ($ep_state)");
like($ep_error // '', qr/500/, 'endpoint_status shows the last error');

json_delete("$base/_control/faults");
is(sql($node, "SELECT switchboard.retry(${id1}::bigint)"), 't', 'retry(id) re-queues one dead letter');
is(wait_idle(), 't', 'retried change settles');
is(records()->{'five1@x.com'}{properties}{firstname}, 'F1', 'retried change delivered');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters WHERE key = 'five1\@x.com'"), '0', 'no longer dead');
is(sql($node, "SELECT state FROM switchboard.endpoint_status"), 'ok', 'endpoint ok again after a success');
is(sql($node, "SELECT switchboard.discard(${id2}::bigint)"), 't', 'discard(id) drops the other dead letter');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters"), '0', 'dead_letters empty');
is(sql($node, "SELECT count(*) FROM switchboard.queue WHERE id = $id2"), '0', 'discarded change left the queue');
is(sql($node, "SELECT count(*) FROM switchboard.deliveries WHERE key = 'five2\@x.com' AND outcome = 'discarded'"), '1',
	'deliveries shows the discard');
ok(!records()->{'five2@x.com'}, 'the discarded change was never delivered');
my ($ok, $out, $err) = $node->psql('postgres', "SELECT switchboard.discard(${id2}::bigint)");
isnt($ok, 0, 'discarding it again fails');
like($err, qr/no dead letter/, '... saying there is no such dead letter');
set_guc('switchboard.max_attempts', undef);

# ---------------------------------------------------------------------------------------
# 4. timeout: the request outlives http_timeout, is retried, the remote ends up with one record
fresh_double();
set_guc('switchboard.http_timeout', '1s');
control($base, 'faults', { path_prefix => $upsert_path, kind => 'timeout', delay_ms => 3000, count => 1 });
my $t_insert = time;
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('slow\@x.com', 'S1')");
is(wait_idle(), 't', 'timed-out change settles');
$calls = upserts_for('slow@x.com');
is(scalar @$calls, 2, 'the timed-out request was retried once');
is(sql($node, "SELECT string_agg(outcome || ':' || http_status, ',' ORDER BY at) FROM switchboard.deliveries WHERE key = 'slow\@x.com'"),
	'retry:0,delivered:200', 'deliveries shows the timeout (status 0) and the success');
like(sql($node, "SELECT error FROM switchboard.deliveries WHERE key = 'slow\@x.com' AND outcome = 'retry'"),
	qr/\S/, 'the timeout has an error text');
# let the remote finish the abandoned request too before looking at the record
sleep(3.5 - (time - $t_insert)) if time - $t_insert < 3.5;
my @slow = grep { $_->{key} eq 'slow@x.com' } @{ json_get("$base/_control/records/hubspot/contacts") };
is(scalar @slow, 1, 'one record at the remote for the key (upsert is idempotent)');
is($slow[0]{properties}{firstname}, 'S1', 'the record holds the value');
$node->safe_psql('postgres', "UPDATE contacts SET first_name = 'S2' WHERE email = 'slow\@x.com'");
is(wait_idle(), 't', 'a later update settles');
is(records()->{'slow@x.com'}{properties}{firstname}, 'S2', 'the record holds the latest value');
set_guc('switchboard.http_timeout', undef);

# ---------------------------------------------------------------------------------------
# 5. dropped connection: retried until delivered
fresh_double();
control($base, 'faults', { path_prefix => $upsert_path, kind => 'drop', count => 2 });
$node->safe_psql('postgres', "INSERT INTO contacts (email, first_name) VALUES ('drop\@x.com', 'D')");
is(wait_idle(), 't', 'change hit by dropped connections settles');
is(records()->{'drop@x.com'}{properties}{firstname}, 'D', 'delivered after two dropped connections');
is(scalar @{ upserts_for('drop@x.com') }, 3, 'two dropped requests and one answered');
note('drop requests (at_ms:status): ' . join(', ', map { "$_->{at_ms}:" . ($_->{status} // '') } @{ upserts_for('drop@x.com') }));
# libcurl silently resends a request once when a reused keep-alive connection closes without
# an answer, so the two drops may show as one failed attempt or two.
my $drop_outcomes = sql($node,
	"SELECT string_agg(outcome || ':' || http_status, ',' ORDER BY at) FROM switchboard.deliveries WHERE key = 'drop\@x.com'");
like($drop_outcomes, qr/^(retry:0,){1,2}delivered:200$/,
	"deliveries shows the dropped attempts with http_status 0, then the delivery ($drop_outcomes)");
is(sql($node, "SELECT count(*) FROM switchboard.deliveries WHERE key = 'drop\@x.com' AND http_status = 0 AND coalesce(error, '') = ''"),
	'0', 'each dropped attempt has an error text');
like(sql($node, "SELECT error FROM switchboard.deliveries WHERE key = 'drop\@x.com' AND http_status = 0 ORDER BY at DESC LIMIT 1"),
	qr/transport error/, '... naming the transport error');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters"), '0', 'nothing dead');

# ---------------------------------------------------------------------------------------
# 6. an outage of minutes: the circuit breaker stops hammering, nothing is dropped
fresh_double();
is(sql($node, "SELECT state FROM switchboard.endpoint_status"), 'ok', 'endpoint ok before the outage');
control($base, 'faults', { kind => 'status', status => 503 });
my $outage_start = time;
$node->safe_psql('postgres',
	q{INSERT INTO contacts (email, first_name) SELECT 'out' || g || '@x.com', 'O' || g FROM generate_series(1, 50) g});
my (%states_seen, $max_pending_attempts);
my $dead_during = 0;
while (time - $outage_start < 70)
{
	my ($state, $dead, $att) = split /\|/, sql($node,
		"SELECT (SELECT state FROM switchboard.endpoint_status), (SELECT dead FROM switchboard.route_status), "
		  . "(SELECT coalesce(max(attempts), 0) FROM switchboard.queue)");
	$states_seen{$state}++;
	$dead_during = $dead if $dead > $dead_during;
	$max_pending_attempts = $att if !defined $max_pending_attempts || $att > $max_pending_attempts;
	sleep 0.5;
}
my @during = grep { $_->{path} =~ m{^/crm/} } @{ double_requests($base, '/crm/') };
my $n_during = scalar @during;
cmp_ok($n_during, '>=', 2, "the endpoint was tried during the outage ($n_during requests)");
cmp_ok($n_during, '<', 15, "the circuit breaker kept requests bounded during a 70 s outage ($n_during requests)");
ok($states_seen{open}, 'endpoint_status reached open (seen: ' . join(',', sort keys %states_seen) . ')');
is($dead_during, 0, 'nothing became a dead letter during the outage');
cmp_ok($max_pending_attempts, '<', 12, "attempts stayed below max_attempts ($max_pending_attempts)");
like(sql($node, "SELECT last_error FROM switchboard.endpoint_status"), qr/503/, 'endpoint_status names the 503');
is(sql($node, "SELECT pending + in_flight FROM switchboard.route_status"), '50', 'all 50 changes still waiting');

json_delete("$base/_control/faults");
my $recovered_at;
ok( wait_for(
		'all 50 rows at the remote after the outage',
		sub { scalar(grep { /^out\d+\@x\.com$/ } keys %{ records() }) == 50 },
		120),
	'every row arrives after the endpoint recovers');
$recovered_at = time - $outage_start;
note(sprintf('recovered %.1f s after the outage began', $recovered_at));
is(wait_idle(), 't', 'queue drained');
is(sql($node, "SELECT pending || ',' || in_flight || ',' || dead FROM switchboard.route_status"), '0,0,0',
	'nothing pending, nothing dead');
is(sql($node, "SELECT state FROM switchboard.endpoint_status"), 'ok', 'endpoint ok after recovery');

# ---------------------------------------------------------------------------------------
# 7. a mapping that raises at run time: the dead letter still has the record's key
$node->safe_psql('postgres', q{
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('contacts_hs', 'ratio', '(100 / score)::text');
INSERT INTO contacts (email, first_name, score) VALUES ('Zero@x.com', 'Z', 0);
});
is(wait_idle(), 't', 'settled');
my ($z_key, $z_error) = split /\|/, sql($node, "SELECT key, last_error FROM switchboard.dead_letters WHERE last_error LIKE '%ratio%'");
is($z_key, 'zero@x.com', 'the dead letter of a failed mapping is found by its key');
like($z_error, qr/mapping "ratio": division by zero/, 'and names the mapping and the error');
$node->safe_psql('postgres', "DELETE FROM switchboard.mappings WHERE remote_field = 'ratio'");

# ---------------------------------------------------------------------------------------
# 8. dead letters are kept by default; switchboard.dead_letter_retention drops old ones and
#    says so in deliveries
my $dead_before = sql($node, "SELECT count(*) FROM switchboard.dead_letters");
cmp_ok($dead_before, '>=', 1, 'dead letters are kept (default retention 0)');
$node->safe_psql('postgres', "UPDATE switchboard.queue SET failed_at = now() - interval '2 hours' WHERE state = 'dead'");
$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.dead_letter_retention = '1h'");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
ok(wait_for('dead letters older than the retention are dropped',
	sub { sql($node, "SELECT count(*) FROM switchboard.dead_letters") == 0 }, 30), 'old dead letters dropped');
is(sql($node, "SELECT count(*) FROM switchboard.deliveries WHERE outcome = 'expired'"), $dead_before,
	'each recorded as expired in deliveries');
$node->safe_psql('postgres', "ALTER SYSTEM RESET switchboard.dead_letter_retention");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");

$node->stop;
$double->kill_kill;
note(sprintf('002_failures took %.1f s', time - $t0));
done_testing();
