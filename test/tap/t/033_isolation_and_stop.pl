# Failures stay contained, stops are prompt (SPEC §4, §8), against the CRM double:
# 1. a HubSpot 400 for a whole batch (an empty id, ids equal but for case) is split until the
#    offending change is alone: only it becomes a dead letter, the others are delivered, and
#    their remote ids are matched by id although the results come back in reverse order;
# 2. while requests wait on a remote that takes 20 s to answer, CREATE/DROP DATABASE elsewhere
#    and DROP DATABASE of a database with a worker finish within seconds (the worker absorbs
#    the barrier and stops without waiting for its requests);
# 3. SIGTERM abandons the requests in flight: the worker exits at once, the changes are sent
#    again afterwards, and the abandoned attempt costs them nothing (max_attempts = 1).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my ($base, $double) = start_double();
my $node = new_node('isolation_stop', 'switchboard.max_attempts' => 1);
my $contacts_upsert = '/crm/v3/objects/contacts/batch/upsert';
my $companies_upsert = '/crm/v3/objects/companies/batch/upsert';

sub worker_pid
{
	my ($db) = @_;
	return sql($node,
		"SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = '$db'");
}

sub hubspot_route
{
	my ($db, $table, $object, $key_field, $options) = @_;
	$node->safe_psql($db, <<"EOS");
CREATE EXTENSION IF NOT EXISTS switchboard;
CREATE TABLE $table (id serial PRIMARY KEY, k text);
INSERT INTO switchboard.secrets VALUES ('hs_$table', 'hs-test-token');
INSERT INTO switchboard.endpoints (name, kind, base_url, secret, options)
VALUES ('ep_$table', 'hubspot', '$base', 'hs_$table', '$options');
INSERT INTO switchboard.routes (name, source, endpoint, remote_object, match_local, match_remote)
VALUES ('r_$table', '$table', 'ep_$table', '$object', 'k', '$key_field');
INSERT INTO switchboard.mappings (route, remote_field, push_expr) VALUES ('r_$table', 'label', '''L'' || id');
EOS
}

# ---------------------------------------------------------------------------------------
# 1. Whole-batch 400: 50 changes in one batch, one with an empty key, two keys equal but for
#    case. HubSpot's results are not in input order: the double reverses them.
control($base, 'config', { hubspot_results_order => 'reversed' });
hubspot_route('postgres', 'people', 'contacts', 'email', '{"batch_size": 50}');
ok(wait_for('worker running', sub { worker_pid('postgres') > 0 }), 'worker running');
$node->safe_psql('postgres', <<"EOS");
INSERT INTO people (k) SELECT 'p' || g || '\@x.com' FROM generate_series(1, 46) g;
INSERT INTO people (k) VALUES (''), ('Dup\@x.com'), ('dup\@x.com'), ('p47\@x.com');
EOS
ok( wait_for('the batch settled',
		sub { sql($node, "SELECT count(*) FROM switchboard.queue WHERE route = 'r_people' AND state <> 'dead'") == 0 },
		30),
	'every change of the refused batch settled');
is(sql($node, "SELECT count(*) || ':' || string_agg(quote_literal(key), ',') FROM switchboard.dead_letters"),
	"1:''", 'only the change with the empty id is a dead letter');
like(sql($node, "SELECT last_error FROM switchboard.dead_letters"), qr/HTTP 400 VALIDATION_ERROR/,
	'its error is the 400 HubSpot gave it alone');
my %remote = map { $_->{key} => $_->{id} } @{ json_get("$base/_control/records/hubspot/contacts") };
is(scalar(keys %remote), 49, 'the 49 others are at the remote');
my %ours = map { split /\|/ } split /\n/,
  sql($node, "SELECT key || '|' || remote_id FROM switchboard.remote_ids WHERE route = 'r_people'");
is(scalar(keys %ours), 49, 'a remote id for each of them');
is(scalar(grep { ($remote{$_} // '') ne $ours{$_} } keys %ours), 0,
	'each remote id is that of its own record (matched by id, not by position)');
my @sizes = map { scalar @{ $_->{body}{inputs} } } @{ double_requests($base, $contacts_upsert) };
cmp_ok(scalar(@sizes), '<=', 1 + 2 * 6 + 2, 'bisection took few requests (' . scalar(@sizes) . ')');
control($base, 'config', { hubspot_results_order => 'input' });
$node->safe_psql('postgres', "DELETE FROM switchboard.queue WHERE state = 'dead'");

# ---------------------------------------------------------------------------------------
# 2. A remote that answers after 20 s, for the worker of postgres and for that of shop.
control($base, 'faults', [
	{ path_prefix => $contacts_upsert, kind => 'slow', delay_ms => 20000 },
	{ path_prefix => $companies_upsert, kind => 'slow', delay_ms => 20000 } ]);
$node->safe_psql('postgres', 'CREATE DATABASE shop');
hubspot_route('shop', 'orders', 'companies', 'domain', '{"batch_size": 10}');
ok(wait_for('worker of shop running', sub { worker_pid('shop') > 0 }), 'worker of shop running');
my $before = json_get("$base/_control/stats")->{in_flight};
$node->safe_psql('postgres', "INSERT INTO people (k) SELECT 's' || g || '\@x.com' FROM generate_series(1, 3) g");
$node->safe_psql('shop', "INSERT INTO orders (k) SELECT 'o' || g || '.com' FROM generate_series(1, 3) g");
ok(wait_for('both workers waiting on the remote', sub { json_get("$base/_control/stats")->{in_flight} >= $before + 2 }, 20),
	'both workers have a request in flight');
my $slow_since = time;

my $t0 = time;
$node->safe_psql('postgres', 'CREATE DATABASE scratch');
$node->safe_psql('postgres', 'DROP DATABASE scratch');
my $took = time - $t0;
cmp_ok($took, '<', 5, sprintf('CREATE + DROP DATABASE elsewhere took %.1f s while the workers wait', $took));

$t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE shop');
$took = time - $t0;
is($rc, 0, 'DROP DATABASE of a database whose worker waits on a remote succeeds') or diag($err);
cmp_ok($took, '<', 5, sprintf('and took %.1f s', $took));

# ---------------------------------------------------------------------------------------
# 3. SIGTERM while a request waits: the worker exits at once; with the remote fast again the
#    changes are delivered, although max_attempts is 1 (the abandoned try cost nothing).
my $pid = worker_pid('postgres');
cmp_ok(time - $slow_since, '<', 15, 'the slow request is still out') or BAIL_OUT('too slow to test a stop');
json_delete("$base/_control/faults");
$t0 = time;
sql($node, "SELECT pg_terminate_backend($pid)");
ok(wait_for('the worker gone', sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") == 0 }, 20),
	'the worker exited');
$took = time - $t0;
cmp_ok($took, '<', 3, sprintf('SIGTERM with a request in flight: the worker exited in %.1f s', $took));
ok( wait_for('the 3 changes delivered',
		sub { scalar(grep { $_->{key} =~ /^s\d\@x\.com$/ } @{ json_get("$base/_control/records/hubspot/contacts") }) == 3 },
		30),
	'the abandoned changes are delivered once the worker is back');
cmp_ok(time - $slow_since, '<', 20, 'before the abandoned request would have been answered');
is(sql($node, "SELECT count(*) FROM switchboard.dead_letters"), '0',
	'no dead letter: the abandoned attempt was not counted (max_attempts = 1)');
is(sql($node, "SELECT string_agg(outcome, ',' ORDER BY at) FROM switchboard.deliveries WHERE key = 's1\@x.com'"),
	'delivered', 'deliveries shows one delivery per change (an abandoned try is not an attempt)');

$node->stop;
$double->kill_kill;
done_testing();
