# Lowering switchboard.max_workers takes effect at the reload (issue 13 review, item 6): the
# launcher asks surplus workers to make room, idle ones first, without waiting for new demand;
# afterwards every database is still served within the new bound.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my ($base, $double) = start_double();
my $node = new_node('lowermax', 'switchboard.max_workers' => 4);
my @dbs = ('postgres', 'a', 'b', 'c');
$node->safe_psql('postgres', "CREATE DATABASE $_") for @dbs[1 .. 3];
setup_hubspot_route($node, $base, db => $_) for @dbs;

my $max_seen = 0;
sub workers
{
	my $n = sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
	$max_seen = $n if $n > $max_seen;
	return $n;
}
ok(wait_for('four workers', sub { workers() == 4 }, 30), 'four databases, four workers');
sleep 1; # all idle now

$node->safe_psql('postgres', 'ALTER SYSTEM SET switchboard.max_workers = 2');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
my $t = time;
ok(wait_for('two workers left', sub { workers() <= 2 }, 15), 'the reload alone brings the workers down to 2');
diag(sprintf('surplus workers gone after %.1f s', time - $t));

$max_seen = 0;
for my $db (@dbs)
{
	$node->safe_psql($db, "INSERT INTO contacts (email, first_name) VALUES ('$db\@x.com', 'M')");
}
my %want = map { ("$_\@x.com" => 1) } @dbs;
ok( wait_for(
		'every database delivered',
		sub {
			workers();
			my %got = map { ($_->{key} // '') => 1 } @{ json_get("$base/_control/records/hubspot/contacts") };
			return !grep { !$got{$_} } keys %want;
		},
		60),
	'every database is still served');
for (1 .. 10) { workers(); sleep 0.1; }
cmp_ok($max_seen, '<=', 2, "never more than the new max_workers meanwhile ($max_seen)");

$node->stop;
done_testing();
