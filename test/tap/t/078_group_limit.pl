# A rate_limit_group's limit is the strictest of the limit declared with the group in
# switchboard.rate_limit_groups (name=limit) and its member endpoints' own rate_limit (issue 13
# review, README "Cluster-wide rate limits"): two databases whose endpoints differ in
# rate_limit share one group against one endpoint of the double, and at the double's clock the
# strictest limit holds — first a member's (the declared one is looser), then the declared one
# (stricter than every member) after a reload.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my $t0 = time;
my ($base, $double) = start_double();
my $window_ms = 500;
my $node = new_node('grouplimit', 'switchboard.rate_limit_groups' => "'acct=20/${window_ms}ms'");
my $upsert_path = '/crm/v3/objects/contacts/batch/upsert';
# postgres: 4 per window, other: 8 per window; the declared 20 is the loosest.
my %own = (postgres => 4, other => 8);
$node->safe_psql('postgres', 'CREATE DATABASE other');
for my $db (sort keys %own)
{
	setup_hubspot_route($node, $base,
		db      => $db,
		options => qq({"batch_size": 1, "rate_limit": "$own{$db}/${window_ms}ms", "rate_limit_group": "acct"}));
}

sub reload_with
{
	my ($setting, $value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $setting = '$value'");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}

my $serial = 0;
# Both databases get a backlog at once (paused, filled, resumed); returns the arrival times
# of its requests at the double.
sub burst
{
	my ($per_db) = @_;
	reload_with('switchboard.enabled', 'off');
	sleep 0.5;
	for my $db (sort keys %own)
	{
		my $from = $serial + 1;
		$serial += $per_db;
		$node->safe_psql($db,
			"INSERT INTO contacts (email, first_name) SELECT '$db' || g || '\@x.com', 'G' FROM generate_series($from, $serial) g"
		);
	}
	json_delete("$base/_control/requests");
	reload_with('switchboard.enabled', 'on');
	for my $db (sort keys %own)
	{
		is(sql($node, "SELECT switchboard.wait_idle('60 s')", $db), 't', "database $db delivered its backlog");
	}
	return sort { $a <=> $b } map { $_->{at_ms} } @{ double_requests($base, $upsert_path) };
}

sub busiest { return busiest_window($window_ms, @_); }

# Each member's limit counts once it used the group: one change of each database first.
burst(1);

# 1. The declared limit (20) is looser than both members: the stricter member's 4 holds for
#    both databases together, also for the database whose own limit is 8.
my $per_db = 12;
my @at = burst($per_db);
is(scalar @at, 2 * $per_db, 'one request per change, from both databases');
my $b = busiest(@at);
cmp_ok($b, '<=', $own{postgres},
	"declared 20, members 4 and 8: at most $own{postgres} requests in any $window_ms ms at the double ($b)");
my $span = ($at[-1] - $at[0]) / 1000;
cmp_ok($span, '>=', (2 * $per_db / $own{postgres} - 1) * $window_ms / 1000,
	sprintf('the group ran at the strictest member limit (%.1f s for %d requests)', $span, scalar @at));

# 2. The declared limit stricter than every member: it holds.
my $declared = 2;
reload_with('switchboard.rate_limit_groups', "acct=$declared/${window_ms}ms");
sleep 0.5;
@at = burst($per_db);
is(scalar @at, 2 * $per_db, 'one request per change, from both databases, after the reload');
$b = busiest(@at);
cmp_ok($b, '<=', $declared,
	"declared $declared, members 4 and 8: at most $declared requests in any $window_ms ms at the double ($b)");
$span = ($at[-1] - $at[0]) / 1000;
cmp_ok($span, '>=', (2 * $per_db / $declared - 1) * $window_ms / 1000,
	sprintf('the group ran at the declared limit (%.1f s for %d requests)', $span, scalar @at));

# A malformed entry is refused at the reload (the old value stays).
my ($rc, $out, $err) =
  $node->psql('postgres', "ALTER SYSTEM SET switchboard.rate_limit_groups = 'acct=lots'");
like($err, qr/acct.*count\/duration/, 'a malformed group limit is refused');

diag(sprintf('t/078 took %.1f s', time - $t0));
$node->stop;
done_testing();
