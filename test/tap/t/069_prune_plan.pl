# The worker's prunes of applied inbound events and expired dead letters (and of finished runs) delete
# by ctid (a TID scan) whatever the tables' statistics say. id IN (SELECT id ... LIMIT) on
# tables last analyzed empty (autovacuum off, or not yet come round) was planned as a nested
# loop of scans: in the benchmark, one prune of 126,000 applied inbound events ran for minutes
# while the worker applied nothing. auto_explain logs the worker's plans. A dead letter retried
# while a prune runs is not deleted (the prune's condition is checked on the row as it is).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node(
	'prune_plan',
	shared_preload_libraries => "'switchboard,auto_explain'",
	autovacuum => 'off',
	'switchboard.enabled' => 'off',
	'switchboard.dead_letter_retention' => '1d',
	'auto_explain.log_min_duration' => '0',
	'auto_explain.log_nested_statements' => 'on');
setup_hubspot_route($node, $base);
sub q_ { return $node->safe_psql('postgres', $_[0]); }

# Statistics of empty tables, then history old enough to go.
q_('VACUUM ANALYZE switchboard.inbound_events, switchboard.queue');
q_(q{
INSERT INTO switchboard.inbound_events (route, event_id, received_at, kind, applied_at)
SELECT 'contacts_hs', 'e' || g, now() - interval '10 days', 'standard-webhooks', now() - interval '10 days'
  FROM generate_series(1, 30000) g;
INSERT INTO switchboard.queue (route, op, new, captured_at, state, attempts, key, last_error, failed_at)
SELECT 'contacts_hs', 'insert', '{}', now() - interval '10 days', 'dead', 5, 'k' || g, 'boom', now() - interval '10 days'
  FROM generate_series(1, 1500) g;
});
my $offset = -s $node->logfile;
q_('ALTER SYSTEM SET switchboard.enabled = on; SELECT pg_reload_conf()');
ok(wait_for('pruned', sub { q_("SELECT count(*) FROM switchboard.inbound_events") <= 20000 }, 60),
	'the first prune removed 10,000 applied inbound events');
ok(wait_for('dead letters expired', sub { q_("SELECT count(*) FROM switchboard.queue WHERE state = 'dead'") <= 500 }, 60),
	'and 1,000 expired dead letters');
is(q_("SELECT count(*) FROM switchboard.deliveries WHERE outcome = 'expired'"), '1000', 'each said so in deliveries');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
my @plans = split /\n(?=\S[^\n]*LOG:  duration: )/, $log;
for my $table ('inbound_events', 'queue') {
	my @prunes = grep { /Query Text: (?:WITH gone AS \()?DELETE FROM switchboard\.$table WHERE/ } @plans;
	ok(@prunes >= 1, "the prune of $table was logged");
	unlike(join('', @prunes), qr/Nested Loop|Hash Join|Hash Semi Join|Merge Join/, "it joins nothing")
		or diag($prunes[0]);
	like($prunes[0] // '', qr/Tid Scan on $table/, 'it deletes by ctid');
}

# A dead letter retried (by a DBA) after the prune's subquery chose it, before the prune deleted
# it, is kept: the prune's condition is checked again on its new version. Forced with a lock:
# retry() waits for nothing here, so the row is updated in an open transaction, the prune
# (run as the worker would, from a second session) blocks on it, and the update commits.
q_("ALTER SYSTEM SET switchboard.enabled = off; SELECT pg_reload_conf()");
my $id = q_("SELECT min(id) FROM switchboard.queue WHERE state = 'dead'");
my $dba = $node->background_psql('postgres');
$dba->query_safe("BEGIN; UPDATE switchboard.queue SET state = 'pending', attempts = 0, failed_at = NULL WHERE id = $id");
my $prune = $node->background_psql('postgres');
$prune->query_until(qr/started/, q{\echo started
DELETE FROM switchboard.queue WHERE ctid OPERATOR(pg_catalog.=) ANY(ARRAY(SELECT ctid FROM switchboard.queue WHERE state = 'dead' AND coalesce(failed_at, captured_at) < now() - 86400 * interval '1 second' LIMIT 1000)) AND state = 'dead' AND coalesce(failed_at, captured_at) < now() - 86400 * interval '1 second';
});
ok(wait_for('prune waits', sub { q_("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM switchboard.queue%'") eq '1' }, 30),
	'the prune waits for the retried row');
$dba->query_safe('COMMIT');
$dba->quit;
$prune->quit;
is(q_("SELECT state FROM switchboard.queue WHERE id = $id"), 'pending', 'the retried change is kept');
is(q_("SELECT count(*) FROM switchboard.queue WHERE state = 'dead'"), '0', 'the other expired dead letters went');

$node->stop;
done_testing();
