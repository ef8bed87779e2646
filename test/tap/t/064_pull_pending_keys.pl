# Pull, issue 10 item 6: a page is applied with one statement (the records of keys with a pending
# local change, or a deletion, go record by record, the others together), and a page does not
# compute the key of every local change of the route's backlog: the keys of changes no claim
# has keyed are computed once, as the route's owner, and kept by queue id in the worker.
# pg_stat_statements counts what ran. Kept keys must never go stale: a change committed late,
# and a key expression changed between pulls, are found with their right key.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node('pull_pending_keys', shared_preload_libraries => "'switchboard,pg_stat_statements,auto_explain'",
	'pg_stat_statements.track' => 'all', 'switchboard.enabled' => 'off', autovacuum => 'off',
	'auto_explain.log_min_duration' => '0', 'auto_explain.log_nested_statements' => 'on');
sub q_ { return $node->safe_psql('postgres', $_[0]); }
sub hs_bulk
{
	my (@records) = @_;
	json_post("$base/_control/records/hubspot/contacts",
		[ map { { key => $_->[0], key_field => 'email', properties => { email => $_->[0], firstname => $_->[1] } } } @records ]);
}
sub pgss
{
	my ($what, $like) = @_;
	return q_("SELECT coalesce(sum($what), 0) FROM pg_stat_statements WHERE query LIKE '$like'");
}
sub hold_queue { q_("UPDATE switchboard.queue SET next_attempt_at = now() + interval '1 day'"); }

my $backlog = 500;
q_(qq{
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION switchboard;
CREATE TABLE contacts (email text PRIMARY KEY, first_name text);
INSERT INTO switchboard.secrets VALUES ('hs', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret) VALUES ('hubspot', 'hubspot', '$base', 'hs');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote, direction, conflict, pull_interval)
VALUES ('c', 'contacts', 'hubspot', 'contacts', 'email', 'email', 'both', 'local', '1 hour');
INSERT INTO switchboard.mappings (route, remote_field, push_expr, pull_column) VALUES
  ('c', 'email', 'email', 'email'), ('c', 'firstname', 'first_name', 'first_name');
-- A backlog of local changes waiting to be pushed (delivery paused, then held a day), and one
-- of a key the remote has too.
INSERT INTO contacts SELECT 'local' || g || '\@x.com', 'L' || g FROM generate_series(1, $backlog) g;
INSERT INTO contacts VALUES ('both\@x.com', 'Local');
});
hold_queue();
is(q_("SELECT count(*) FROM switchboard.queue WHERE route = 'c' AND key IS NULL"), $backlog + 1, 'the backlog is queued, unkeyed');
# The worker's keyed tables with the statistics of empty ones (autovacuum off): their lookups
# must probe the primary key per key all the same (checked on the plans below).
q_('VACUUM ANALYZE switchboard.remote_ids, switchboard.pushed_state');
my $log_offset = -s $node->logfile;

# A writer whose transaction stays open over the first pages: its change has a lower queue id
# than changes queued meanwhile, and becomes visible only later.
my $late = $node->background_psql('postgres');
$late->query_safe("BEGIN; INSERT INTO contacts VALUES ('late\@x.com', 'LateLocal'); "
	. "UPDATE switchboard.queue SET next_attempt_at = now() + interval '1 day' WHERE new->>'email' = 'late\@x.com'");
q_("INSERT INTO contacts VALUES ('after\@x.com', 'AfterLocal')");
hold_queue();

# 600 remote records (three search pages of 200) and the remote version of both@x.com.
hs_bulk(map { [ "r$_\@x.com", "R$_" ] } 1 .. 600);
hs_bulk([ 'both@x.com', 'Remote' ]);
q_("SELECT pg_stat_statements_reset()");
q_("ALTER SYSTEM SET switchboard.enabled = on; SELECT pg_reload_conf()");
q_("SELECT switchboard.pull_now('c')"); # wakes the database's worker
ok(wait_for('pulled', sub { q_("SELECT records_pulled >= 600 AND records_skipped = 1 FROM switchboard.pull_status WHERE route = 'c'") eq 't' }, 60),
	'every remote record applied, the one with a pending local change skipped');
is(q_("SELECT first_name FROM contacts WHERE email = 'both\@x.com'"), 'Local', "conflict 'local': the pending local change wins");
is(q_("SELECT count(*) FROM contacts WHERE email LIKE 'r%'"), '600', 'all 600 remote records in the table');
is(q_("SELECT count(*) FROM switchboard.queue WHERE route = 'c' AND state = 'pending' AND attempts = 0"),
	$backlog + 2, 'the backlog is still pending and never tried');

# Set-based: the pages were applied by one statement each; only both@x.com went on its own.
my $page_calls = pgss('calls', 'WITH pulled AS (SELECT DISTINCT ON (u.k)%');
cmp_ok($page_calls, '>=', 3, "the pages were applied set-based ($page_calls page statements)");
is(pgss('calls', 'INSERT INTO%FROM (SELECT $1::pg_catalog.jsonb AS rec) AS pulled'), '0',
	'no record was inserted on its own (the page holding both@x.com too)');
# Each page looked its pending changes up, but the keys of the backlog were computed once.
# (pg_stat_statements shows constants as $n: the pattern names only the statement's shape.)
cmp_ok(pgss('calls', '%FROM switchboard.queue q WHERE q.route = $1 AND q.key IS NOT NULL%UNION ALL%'), '>=', 3,
	'each page looked its pending changes up');
my $computed = pgss('rows', 'SELECT k.key FROM pg_catalog.unnest($1::pg_catalog.json[]) WITH ORDINALITY%');
cmp_ok($computed, '<=', $backlog + 10, "keys of queued changes computed $computed times (once per change, not per page)");

# Each page's lookup of its keys in remote_ids probes the primary key with the key; planned
# against the empty table's statistics, = ANY read all the route's entries, casting the key
# list again for each (30-50 ms a page of 100 keys in the benchmark).
my @plans = grep { /Query Text: SELECT r\.key, r\.remote_id/ }
	split /\n(?=\S[^\n]*LOG:  duration: )/, PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset);
cmp_ok(scalar(@plans), '>=', 3, 'the pages looked their keys up in remote_ids');
is(scalar(grep { /Index Cond: \(\(route = \S+\) AND \(key = u\.k\)\)/ } @plans), scalar(@plans),
	'each by a probe of its primary key per key') or diag($plans[0]);

# The late writer commits; the remote changes its record afterwards: the pending local change,
# whose id is below changes seen since, is found and wins.
$late->query_safe('COMMIT');
$late->quit;
hold_queue();
hs_bulk([ 'late@x.com', 'LateRemote' ], [ 'r601@x.com', 'R601' ]);
q_("SELECT switchboard.pull_now('c')");
ok(wait_for('late pulled', sub { q_("SELECT count(*) FROM contacts WHERE email = 'r601\@x.com'") eq '1' }, 30), 'the next pull ran');
is(q_("SELECT first_name FROM contacts WHERE email = 'late\@x.com'"), 'LateLocal',
	'a change committed late, with a lower id than changes seen before, still counts as pending');

# The key expression changes between pulls: a change queued before, whose key was computed
# (and kept) under the old expression, is keyed by the new one. Under 'email' the change of
# MIX@x.com has the key MIX@x.com; under lower(email), mix@x.com, which the remote record has.
# (Queued and held in one transaction: the worker, running now, would push it at once.)
q_("BEGIN; INSERT INTO contacts VALUES ('MIX\@x.com', 'MixLocal'); "
	. "UPDATE switchboard.queue SET next_attempt_at = now() + interval '1 day' WHERE new->>'email' = 'MIX\@x.com'; COMMIT");
hs_bulk([ 'r602@x.com', 'R602' ]);
q_("SELECT switchboard.pull_now('c')");
ok(wait_for('pulled with the old key', sub { q_("SELECT count(*) FROM contacts WHERE email = 'r602\@x.com'") eq '1' }, 30),
	'a pull ran with the change of MIX@x.com queued');
q_("UPDATE switchboard.routes SET match_local = 'lower(email)' WHERE name = 'c'");
hs_bulk([ 'mix@x.com', 'MixRemote' ], [ 'r603@x.com', 'R603' ]);
q_("SELECT switchboard.pull_now('c')");
ok(wait_for('pulled with the new key', sub { q_("SELECT count(*) FROM contacts WHERE email = 'r603\@x.com'") eq '1' }, 30),
	'the next pull ran under the new key expression');
is(q_("SELECT first_name FROM contacts WHERE lower(email) = 'mix\@x.com'"), 'MixLocal',
	"the queued change is found under the new key: conflict 'local' keeps it (a stale key would let the remote win)")
	or diag(q_("SELECT string_agg(id || ' ' || coalesce(key, '-') || ' ' || state || ' ' || coalesce(new::text, ''), E'\n') FROM switchboard.queue WHERE new->>'email' ILIKE 'mix%'") . "\n"
	. q_("SELECT string_agg(outcome || ' ' || coalesce(key, '-') || ' ' || coalesce(error, ''), E'\n') FROM switchboard.delivery_log WHERE key ILIKE '%mix%'"));

$node->stop;
done_testing();
