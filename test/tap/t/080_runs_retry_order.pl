# Runs of a key in commit order when dead letters are repaired (SPEC §7, §8):
#  1. retry(id) of a failed run while the worker is starting a newer run of its key (it has
#     locked it, and commits its start later): retry waits for the worker and refuses, instead
#     of reading the newer run as not started and letting the older one run after it (had the
#     worker adopted the newer run in the same transaction, retry could not see it at all: then
#     the worker settles the older one as stale, which 1b checks);
#  2. retry(id) that commits as the worker picks a newer run of the key (from a snapshot that
#     saw the older one failed): the worker leaves the newer one to the next round, and the
#     older one goes first;
#  3. discard(id) of a run that delivered before a later step failed: an older dead letter of
#     its key is not sent after it.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use IPC::Run;

my ($base, $double) = start_double();
my $node = new_node('retry_order', 'switchboard.route_sql_timeout' => '60s');
$node->safe_psql('postgres', <<"EOS");
CREATE EXTENSION switchboard;
CREATE TABLE leads (id int PRIMARY KEY, email text, region text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options) VALUES
	('hubspot', 'hubspot', '$base', 'hs', '{}'),
	('sales', 'webhook', '$base/hooks/sales', NULL, '{}');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, operations)
VALUES ('leads', 'leads', 'hubspot', 'contacts', 'lower(email)', 'email', '{insert,update}');
INSERT INTO switchboard.steps (route, name, position, kind, endpoint, run_if, input, options) VALUES
	-- a change to region 'gate' waits in its step SQL while the test holds advisory lock 4243;
	-- one to 'slow' takes longer than a round's budget for local steps
	('leads', 'gate', 10, 'sql', NULL, NULL,
	 \$\$CASE WHEN new.region LIKE 'gate%' THEN pg_advisory_xact_lock(4243)::text
	        WHEN new.region = 'slow' THEN pg_sleep(1.5)::text END\$\$, '{}'),
	('leads', 'create', 20, 'deliver', NULL, NULL, NULL, '{"max_attempts": 1}'),
	('leads', 'alert', 30, 'notify', 'sales', NULL, \$\$jsonb_build_object('email', new.email)\$\$,
	 '{"max_attempts": 1}');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES
	('leads', 'email', 'lower(email)'), ('leads', 'firstname', 'region');
EOS

sub idle { is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', $_[0]); }
sub remote_region
{
	my ($email) = @_;
	my ($r) = grep { $_->{key} eq $email } @{ json_get("$base/_control/records/hubspot/contacts") };
	return $r ? $r->{properties}{firstname} : undef;
}
# A psql session running sql in the background; returns the harness and its output buffers.
sub background
{
	my ($query) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $query ],
		'>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}
sub worker_waits_on_advisory_lock
{
	return sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' "
		  . "AND wait_event_type = 'Lock' AND wait_event = 'advisory'") eq '1';
}
# The run of the key that failed at its deliver step (its dead letter).
sub failed_run
{
	my ($key) = @_;
	my $id = '';
	wait_for("the run of $key fails", sub {
		$id = sql($node, "SELECT id FROM switchboard.runs WHERE key = '$key' AND state = 'failed'");
		$id ne '' }, 60);
	return $id;
}

# ---------------------------------------------------------------------------------------
# 1. retry while the worker is starting the newer run
control($base, 'faults', { kind => 'status', path_prefix => '/crm/', status => 500 });
$node->safe_psql('postgres', "INSERT INTO leads VALUES (1, 'one\@x.io', 'old')");
my $older = failed_run('one@x.io');
ok($older, 'the older run failed at its deliver step');
json_delete("$base/_control/faults");

my ($holder) = background('SELECT pg_advisory_lock(4243), pg_sleep(600)');
my $holder_pid = '';
wait_for('the lock held', sub {
	$holder_pid = sql($node, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 4243 AND granted");
	$holder_pid ne '' }, 20);
# The newer run committed before the worker starts it: the round that adopts it spends its
# budget on a run before it (of another key), and leaves it to the next round.
$node->safe_psql('postgres', "BEGIN; INSERT INTO leads VALUES (9, 'slow\@x.io', 'slow'); "
	  . "UPDATE leads SET region = 'gate-new' WHERE id = 1; COMMIT");
ok(wait_for('the worker in the newer run\'s step SQL', \&worker_waits_on_advisory_lock, 30),
	'the worker is starting the newer run (its step SQL waits)');
my ($retry, $retry_out, $retry_err) = background("SELECT switchboard.retry($older)");
# retry either returns at once (it read the newer run as not started) or waits for the worker.
sleep 2;
sql($node, "SELECT pg_terminate_backend($holder_pid)");
$holder->finish;
$retry->finish;
like($$retry_err, qr/a newer run of its key has started/, 'retry(id) waited for the worker and refused');
idle('settled');
is(remote_region('one@x.io'), 'gate-new', 'the remote keeps the newer change');
is(sql($node, "SELECT state FROM switchboard.runs WHERE id = $older"), 'failed', 'the older run is still a dead letter');

# ---------------------------------------------------------------------------------------
# 1b. the same, with the newer run adopted in the round that starts it: retry does not see it,
# and the worker settles the older run as stale when it comes to it.
control($base, 'faults', { kind => 'status', path_prefix => '/crm/', status => 500 });
$node->safe_psql('postgres', "INSERT INTO leads VALUES (4, 'four\@x.io', 'old')");
$older = failed_run('four@x.io');
json_delete("$base/_control/faults");
($holder) = background('SELECT pg_advisory_lock(4243), pg_sleep(600)');
wait_for('the lock held', sub {
	$holder_pid = sql($node, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 4243 AND granted");
	$holder_pid ne '' }, 20);
$node->safe_psql('postgres', "UPDATE leads SET region = 'gate-new' WHERE id = 4");
ok(wait_for('the worker in the newer run\'s step SQL', \&worker_waits_on_advisory_lock, 30),
	'the worker is starting the newer run it just adopted');
is(sql($node, "SELECT switchboard.retry($older)"), 't', 'retry(id) does not see it');
sql($node, "SELECT pg_terminate_backend($holder_pid)");
$holder->finish;
idle('settled');
is(remote_region('four@x.io'), 'gate-new', 'the remote keeps the newer change');
is(sql($node, "SELECT count(*) FROM switchboard.run_queue WHERE id = $older"), '0', 'the older run is settled');
like(sql($node, "SELECT outcome || ': ' || error FROM switchboard.delivery_log WHERE change_id = $older "
		  . "ORDER BY id DESC LIMIT 1"), qr/^skipped: a newer change of its key has run/, 'as skipped, saying why');

# ---------------------------------------------------------------------------------------
# 2. retry committed while the worker picks a newer run of the key
control($base, 'faults', { kind => 'status', path_prefix => '/crm/', status => 500 });
$node->safe_psql('postgres', "INSERT INTO leads VALUES (2, 'two\@x.io', 'old')");
$older = failed_run('two@x.io');
json_delete("$base/_control/faults");
json_delete("$base/_control/requests");
# A newer run of the key, adopted but not due for three seconds (as a run waiting for its turn).
my $newer = sql($node, <<"EOS");
INSERT INTO switchboard.run_queue (id, route, key, op, new, old, captured_at, position, current_step, next_attempt_at)
SELECT nextval('switchboard.queue_id_seq'), 'leads', 'two\@x.io', 'update',
       '{"id": 2, "email": "two\@x.io", "region": "new"}', '{"id": 2, "email": "two\@x.io", "region": "old"}',
       now(), 10, 'gate', now() + interval '3 s'
RETURNING id
EOS
my $session = $node->background_psql('postgres');
$session->query_safe("BEGIN; SELECT switchboard.retry($older)");
# The newer run becomes due while the retry is not committed: the round sees the older one failed.
sleep 5;
$session->query_safe('COMMIT');
$session->quit;
idle('both runs finish');
is(remote_region('two@x.io'), 'new', 'the remote keeps the newer change');
my @upserts = map { $_->{body}{inputs}[0]{properties}{firstname} }
  grep { $_->{path} =~ m{/batch/upsert$} } @{ double_requests($base, '/crm/') };
is(join(',', @upserts), 'old,new', 'the older run was sent first, the newer after it');
is(sql($node, "SELECT string_agg(state, ',' ORDER BY id) FROM switchboard.runs WHERE key = 'two\@x.io'"), 'done,done',
	'both runs done');

# ---------------------------------------------------------------------------------------
# 3. discard a run that had delivered; an older dead letter of its key stays behind it
control($base, 'faults', { kind => 'status', path_prefix => '/crm/', status => 500 });
$node->safe_psql('postgres', "INSERT INTO leads VALUES (3, 'three\@x.io', 'old')");
$older = failed_run('three@x.io');
json_delete("$base/_control/faults");
control($base, 'faults', { kind => 'status', path_prefix => '/hooks/', status => 500 });
$node->safe_psql('postgres', "UPDATE leads SET region = 'new' WHERE id = 3");
ok(wait_for('the newer run fails at its notify step', sub {
	sql($node, "SELECT current_step || ':' || state FROM switchboard.runs WHERE key = 'three\@x.io' AND id > $older")
	  eq 'alert:failed' }, 60), 'the newer run delivered, then failed at its notify step');
json_delete("$base/_control/faults");
is(remote_region('three@x.io'), 'new', 'the remote has the newer change');
$newer = sql($node, "SELECT id FROM switchboard.runs WHERE key = 'three\@x.io' AND id > $older");
sql($node, "SELECT switchboard.discard($newer)");
my ($ok, $out, $err) = $node->psql('postgres', "SELECT switchboard.retry($older)");
like($err, qr/a newer run of its key has started/, 'the older dead letter cannot be retried after it');
idle('settled');
is(remote_region('three@x.io'), 'new', 'the remote keeps the newer change');
is(sql($node, "SELECT count(*) FROM switchboard.delivered_marks WHERE key = 'three\@x.io' AND change_id = $newer"), '1',
	'the discarded run left its mark');

# The lookup retry() and discard() share runs as the extension owner only.
$node->safe_psql('postgres', "CREATE ROLE configurer; SELECT switchboard.grant_admin('configurer')");
is(sql($node, "SELECT has_function_privilege('configurer', 'switchboard._dead_letter_route(bigint)', 'EXECUTE')"),
	'f', 'a role granted configuration cannot call _dead_letter_route');
is(sql($node, "SELECT has_function_privilege('public', 'switchboard._dead_letter_route(bigint)', 'EXECUTE')"),
	'f', 'nor can PUBLIC');
done_testing();
