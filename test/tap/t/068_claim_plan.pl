# The claim reads due changes in id order from queue_pkey and marks them in flight by id,
# whatever the queue's statistics say. A queue last analyzed nearly empty (autovacuum off, or
# not yet come round) made the planner expect a few pending rows: each claim of 2,000 scanned
# and sorted the whole backlog (spilling to disk), and the in-flight update hashed the whole
# queue; a backlog of 100,000 cost the worker several times its CPU. auto_explain logs the
# worker's plans.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;

my ($base, $double) = start_double();
my $node = new_node(
	'claim_plan',
	shared_preload_libraries => "'switchboard,auto_explain'",
	autovacuum => 'off',
	'auto_explain.log_min_duration' => '0',
	'auto_explain.log_nested_statements' => 'on');
setup_hubspot_route($node, $base);

# Statistics of an empty queue, then a backlog queued while delivery is paused.
$node->safe_psql('postgres', 'ALTER SYSTEM SET switchboard.enabled = off');
$node->reload;
$node->safe_psql('postgres', 'VACUUM ANALYZE switchboard.queue');
$node->safe_psql('postgres',
	"INSERT INTO contacts (email, first_name) SELECT 'u' || g || '\@x.com', 'F' || g FROM generate_series(1, 5000) g");
my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM SET switchboard.enabled = on');
$node->reload;
is(sql($node, "SELECT switchboard.wait_idle('120 s')"), 't', 'the backlog is delivered');
is(sql($node, "SELECT delivered FROM switchboard.route_status WHERE route = 'contacts_hs'"), 5000, 'all of it');

# The plans the worker logged, one per statement: from "duration: ... plan:" to the next.
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
my @plans = split /\n(?=\S[^\n]*LOG:  duration: )/, $log;
my @claims = grep { /Query Text: SELECT q\.id, q\.route, q\.op/ } @plans;
my @marks  = grep { /Query Text: UPDATE switchboard\.queue q SET state = k\.state/ } @plans;
ok(@claims >= 3, 'claims were logged (' . scalar(@claims) . ')');
ok(@marks >= 3, 'in-flight marks were logged (' . scalar(@marks) . ')');
is(scalar(grep { !/Index Scan using queue_pkey on queue q/ || /Sort Key: q\.id/ || /Seq Scan on queue q/ } @claims),
	0, 'every claim read the queue in id order from queue_pkey, no scan and sort of the whole queue')
  or diag((grep { /Seq Scan on queue q|Sort Key/ } @claims)[0]);
is(scalar(grep { /Seq Scan on queue q|Hash Join/ } @marks), 0, 'every in-flight mark found its rows by id')
  or diag((grep { /Seq Scan on queue q|Hash Join/ } @marks)[0]);

$node->stop;
done_testing();
