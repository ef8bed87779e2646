# A worker waiting for synchronous replication in a durable commit (the claim's in-flight mark)
# still stops on SIGTERM: with synchronous_standby_names naming a standby that is not there,
# pg_terminate_backend and DROP DATABASE end it within seconds (issue 13 review, item 4), and
# once the standby setting is fixed nothing captured is lost.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my ($base, $double) = start_double();
# Synchronous replication needs WAL senders (the test cluster has none by default).
my $node = new_node('syncrep', wal_level => 'replica', max_wal_senders => 4);
$node->safe_psql('postgres', 'CREATE DATABASE doomed');
setup_hubspot_route($node, $base);
setup_hubspot_route($node, $base, db => 'doomed');

# Wait for both workers, then make every durable commit wait for a standby that never comes.
my $workers_q = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker'";
ok(wait_for('two workers', sub { sql($node, $workers_q) == 2 }, 30), 'both databases have a worker');
$node->safe_psql('postgres', "ALTER SYSTEM SET synchronous_standby_names = 'nobody_here'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
sleep 0.5;

# The application's own commits must not wait (it is the worker's wait under test).
for my $db ('postgres', 'doomed')
{
	$node->safe_psql($db,
		"SET synchronous_commit = local; INSERT INTO contacts (email, first_name) VALUES ('$db\@x.com', 'S')");
}
my $waiting_q = "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity "
  . "WHERE backend_type = 'switchboard worker' AND wait_event = 'SyncRep'";
ok(wait_for('both workers waiting for the standby', sub { sql($node, $waiting_q) eq 'doomed,postgres' }, 30),
	'both workers wait for synchronous replication in their claim');

my $pid = sql($node,
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname = 'postgres'");
my $t = time;
sql($node, "SELECT pg_terminate_backend($pid)");
my $gone = wait_for('the terminated worker to exit',
	sub { sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") == 0 }, 10);
ok($gone, 'pg_terminate_backend ends a worker waiting for synchronous replication');
cmp_ok(time - $t, '<', 5, sprintf('within seconds (%.1f s)', time - $t));

$t = time;
# Local commit: the standby this session waits for is the one that is not there.
my ($rc, $out, $err) = $node->psql('postgres', 'SET synchronous_commit = local; DROP DATABASE doomed', timeout => 30);
is($rc, 0, 'DROP DATABASE succeeds while its worker waited for synchronous replication') or diag($err);
cmp_ok(time - $t, '<', 8, sprintf('and promptly (%.1f s)', time - $t));

# The standby setting fixed: the change claimed before the stop is delivered all the same.
$node->safe_psql('postgres', "ALTER SYSTEM RESET synchronous_standby_names");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( wait_for(
		'the change delivered',
		sub {
			grep { ($_->{key} // '') eq 'postgres@x.com' } @{ json_get("$base/_control/records/hubspot/contacts") };
		},
		30),
	'nothing lost: the change the stopped worker had claimed reaches the remote');
is(sql($node, "SELECT switchboard.wait_idle('30 s')"), 't', 'the queue settles');

$node->stop;
done_testing();
