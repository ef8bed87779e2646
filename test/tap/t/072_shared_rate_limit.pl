# Cluster-wide rate limits (issue 13.4): two databases whose endpoints name the same
# rate_limit_group share one limiter in shared memory, so the remote account behind both sees
# no more than the limit in any window at its clock; without the group each database would
# use the whole limit by itself.
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my $t0 = time;
my ($base, $double) = start_double();
my $node = new_node('limits', 'switchboard.rate_limit_groups' => "'acct\@postgres other, other_acct\@postgres'");
my $upsert_path = '/crm/v3/objects/contacts/batch/upsert';
my ($count, $window_ms) = (4, 500);
my $options = qq({"batch_size": 1, "rate_limit": "$count/${window_ms}ms", "rate_limit_group": "acct"});
$node->safe_psql('postgres', 'CREATE DATABASE other');
setup_hubspot_route($node, $base, options => $options);
setup_hubspot_route($node, $base, db => 'other', options => $options);

my ($rc, $out, $err) =
  $node->psql('postgres', q{UPDATE switchboard.endpoints SET options = options || '{"rate_limit_group": ""}'});
like($err, qr/rate_limit_group/, 'an empty group name is refused');
# A group is shared by every database: only one a superuser declared may be named.
($rc, $out, $err) =
  $node->psql('postgres', q{UPDATE switchboard.endpoints SET options = options || '{"rate_limit_group": "not_declared"}'});
like($err, qr/rate_limit_group "not_declared" is not declared in switchboard.rate_limit_groups/,
	'a group the superuser did not declare is refused');
# A group lists the databases that may share it: a configuration role of another database
# cannot join it (and so cannot throttle or pause its members).
$node->safe_psql('postgres', 'CREATE DATABASE third');
$node->safe_psql('third', 'CREATE EXTENSION switchboard');
($rc, $out, $err) = $node->psql('third',
	qq{INSERT INTO switchboard.endpoints (name, kind, base_url, options) VALUES ('x', 'hubspot', '$base', '{"rate_limit": "1/1h", "rate_limit_group": "acct"}')});
like($err, qr/rate_limit_group "acct" is not open to database "third"/, 'a database the group does not list cannot join it');
($rc, $out, $err) =
  $node->psql('other', q{UPDATE switchboard.endpoints SET options = options || '{"rate_limit_group": "other_acct"}'});
like($err, qr/is not open to database "other"/, 'nor one listed only for another group');

# Both databases get their backlog at once: paused, filled, resumed.
sub set_enabled
{
	my ($on) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET switchboard.enabled = $on");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}
set_enabled('off');
sleep 0.5;
my $per_db = 16;
for my $db ('postgres', 'other')
{
	$node->safe_psql($db,
		"INSERT INTO contacts (email, first_name) SELECT '$db' || g || '\@x.com', 'R' FROM generate_series(1, $per_db) g"
	);
}
json_delete("$base/_control/requests");
set_enabled('on');

for my $db ('postgres', 'other')
{
	my $w0 = time;
	is(sql($node, "SELECT switchboard.wait_idle('60 s')", $db), 't', "database $db delivered its backlog");
	diag(sprintf("%s settled after %.1f s", $db, time - $w0));
}

my @at = sort { $a <=> $b } map { $_->{at_ms} } @{ double_requests($base, $upsert_path) };
is(scalar @at, 2 * $per_db, 'one request per change, from both databases');
my $busiest = 0;
for my $i (0 .. $#at)
{
	my $n = grep { $_ >= $at[$i] && $_ < $at[$i] + $window_ms } @at;
	$busiest = $n if $n > $busiest;
}
cmp_ok($busiest, '<=', $count,
	"at the double's clock, at most $count requests in any $window_ms ms from both databases together ($busiest)");
my $span = ($at[-1] - $at[0]) / 1000;
cmp_ok($span, '>=', (2 * $per_db / $count - 1) * $window_ms / 1000,
	sprintf('the two databases took turns under the one limit (%.1f s for %d requests)', $span, scalar @at));
# A database finding the group's slots held by the other's requests in flight looks again
# shortly; it must not wait out their timeout (30 s) as if they were its own.
cmp_ok($span, '<', 3 * (2 * $per_db / $count) * $window_ms / 1000, 'and neither waited for the other beyond the limit');

diag(sprintf('t/072 took %.1f s', time - $t0));
done_testing();
