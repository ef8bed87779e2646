# DROP DATABASE never loses to a worker being started (issue 13 review, item 5): a worker the
# launcher registered but that has not claimed its slot yet is waited for and kept out by the
# hold (ClaimWorkerSlot refuses a held database), so DROP DATABASE neither blocks for its
# five seconds nor fails with "being accessed by other users". The race is forced by creating
# a database (a worker is started for it at once) and dropping it at once, many times, at
# varying delays.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my ($base, $double) = start_double();
my $node = new_node('droprace');
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
setup_hubspot_route($node, $base, db => 'tmpl');
$node->safe_psql('postgres', 'ALTER DATABASE tmpl IS_TEMPLATE true');

my $rounds = 12;
my ($failed, $slowest) = (0, 0);
for my $i (1 .. $rounds)
{
	$node->safe_psql('postgres', "CREATE DATABASE r$i TEMPLATE tmpl");
	# A capturing commit wakes the launcher, which starts this database's worker at once.
	$node->safe_psql("r$i", "INSERT INTO contacts (email) VALUES ('r$i\@x.com')");
	sleep(($i % 6) * 0.004);
	my $t = time;
	my ($rc, $out, $err) = $node->psql('postgres', "DROP DATABASE r$i", timeout => 30);
	my $took = time - $t;
	$slowest = $took if $took > $slowest;
	if ($rc != 0 || $took > 3)
	{
		$failed++;
		diag(sprintf('round %d: rc %d in %.1f s: %s', $i, $rc, $took, $err));
		$node->psql('postgres', "DROP DATABASE IF EXISTS r$i WITH (FORCE)");
	}
}
is($failed, 0, "every DROP DATABASE racing a starting worker succeeded at once ($rounds rounds)");
diag(sprintf('slowest DROP DATABASE: %.2f s', $slowest));

# The held database stays held: no worker is left behind for a dropped database.
sleep 1.5;
is(sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker' AND datname ~ '^r\\d+\$'"),
	'0', 'no worker of a dropped database survives');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
unlike($log, qr/being accessed by other users/, 'no DROP DATABASE found a worker in its way');

$node->stop;
done_testing();
