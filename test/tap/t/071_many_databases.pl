# Many databases (SPEC §10): switchboard.max_workers bounds the workers of the whole cluster;
# idle databases' workers make room and are started again on demand, fairly, so a change
# committed in each of many databases is delivered, and a database whose worker left wakes
# within a second of a commit. SB_MANY_DATABASES sets how many (default 100 here; 200 in
# scripts/many_databases.sh).
use strict;
use warnings;
use lib 't/..';
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(time sleep);

my $t0 = time;
my $n = $ENV{SB_MANY_DATABASES} || 100;
my ($base, $double) = start_double();
my $node = new_node('many', 'switchboard.max_workers' => 4, max_connections => 50);

# A template with the extension and a route; its copies are recognised as copies (their
# routes disabled until enabled, README "Copies") and take instance ids of their own.
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
setup_hubspot_route($node, $base, db => 'tmpl');
$node->safe_psql('postgres', 'ALTER DATABASE tmpl IS_TEMPLATE true');
my @dbs = map { "d$_" } 1 .. $n;
$node->safe_psql('postgres', join('', map { "CREATE DATABASE $_ TEMPLATE tmpl;\n" } @dbs));
diag(sprintf('%d databases created in %.1f s', $n, time - $t0));

my $max_seen = 0;
sub workers
{
	my $count = sql($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
	$max_seen = $count if $count > $max_seen;
	return $count;
}

# One psql for all databases: \c to each.
sub each_db
{
	my ($query) = @_;
	return $node->safe_psql('postgres', join('', map { "\\c $_\n$query\n" } @dbs));
}

ok( wait_for(
		'every copy recognised by a worker',
		sub {
			workers();
			my @disabled = grep { $_ eq 'f' } split /\n/, each_db('SELECT enabled FROM switchboard.routes;');
			return @disabled == $n;
		},
		120),
	"the workers visited all $n databases (each recognised as a copy)");

my $t1 = time;
each_db("UPDATE switchboard.routes SET enabled = true, disabled_reason = NULL; "
	  . "INSERT INTO contacts (email, first_name) SELECT current_database() || '\@x.com', 'D';");

sub remote_count
{
	my %seen = map { $_->{key} => 1 } grep { $_->{key} =~ /^d\d+\@/ }
	  @{ json_get("$base/_control/records/hubspot/contacts") };
	return scalar keys %seen;
}
ok(wait_for('every database delivered', sub { workers(); remote_count() == $n }, 120),
	"a change committed in each of $n databases is delivered");
diag(sprintf('all delivered %.1f s after the commits', time - $t1));
cmp_ok($max_seen, '<=', 4, "never more than switchboard.max_workers (4) workers ($max_seen seen)");

# A database whose worker made room wakes within a second of a commit. SB_WAKE_SAMPLES
# (scripts/many_databases.sh: 30) takes more samples and reports their p99.
my $samples = $ENV{SB_WAKE_SAMPLES} || 3;
my @took;
for my $try (1 .. $samples)
{
	my $asleep;
	wait_for(
		'a database without a worker',
		sub {
			my %awake = map { $_ => 1 } split /\n/,
			  sql($node, "SELECT datname FROM pg_stat_activity WHERE backend_type = 'switchboard worker'");
			($asleep) = grep { !$awake{$_} } @dbs[ ($try * 7) % $n .. $n - 1 ], @dbs;
			return defined $asleep;
		},
		30);
	my $key = "wake$try\@x.com";
	my $start = time;
	$node->safe_psql($asleep, "INSERT INTO contacts (email, first_name) VALUES ('$key', 'W')");
	my $delivered;
	while (time - $start < 10)
	{
		$delivered = grep { $_->{key} eq $key } @{ json_get("$base/_control/records/hubspot/contacts") };
		last if $delivered;
		sleep 0.02;
	}
	my $took = time - $start;
	push @took, $took;
	ok($delivered, "database $asleep (no worker) delivered its change");
	cmp_ok($took, '<', 1.0, sprintf('... %.0f ms after the commit', 1000 * $took));
	diag(sprintf('%s woke and delivered %.0f ms after the commit', $asleep, 1000 * $took));
}
cmp_ok(workers(), '<=', 4, 'still at most 4 workers');
# Fairness: four databases kept busy (a change committed in each faster than the slowed double
# takes them) hold all four workers; a fifth database still gets its turn, as busy workers make
# room once they have run 5 s while others wait.
control($base, 'faults', { path_prefix => '/crm/v3/objects/contacts/batch/upsert', kind => 'slow',
	delay_ms => 400, count => 100000 });
my @busy = @dbs[ 0 .. 3 ];
my $busy_serial = 0;
sub keep_busy
{
	$busy_serial++;
	$node->safe_psql('postgres', join('', map {
		"\\c $_\nINSERT INTO contacts (email, first_name) VALUES ('busy$busy_serial-$_\@x.com', 'B');\n"
	} @busy));
}
my $busy_until = time + 4;
keep_busy() while time < $busy_until;    # every worker delivering, none asleep
my $starved = $dbs[-1];
my $start = time;
$node->safe_psql($starved, "INSERT INTO contacts (email, first_name) VALUES ('starved\@x.com', 'S')");
my $served;
while (time - $start < 20)
{
	keep_busy();
	$served = grep { $_->{key} eq 'starved@x.com' } @{ json_get("$base/_control/records/hubspot/contacts") };
	last if $served;
}
diag(sprintf('starved database served after %.1f s', time - $start));
ok($served, sprintf('a database waiting behind %d busy ones is served (%.1f s)', scalar @busy, time - $start));
cmp_ok(workers(), '<=', 4, 'still at most 4 workers');
json_delete("$base/_control/faults");

my @sorted = sort { $a <=> $b } @took;
my $p99 = $sorted[ int(0.99 * $#sorted + 0.5) ];
my $processes = sql($node,
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('switchboard worker', 'switchboard launcher')");
diag(sprintf('bench: %d databases, max_workers 4: commit to delivery for a sleeping database p99 %.0f ms '
	  . '(%d samples, max %.0f ms); switchboard processes now %d (workers and launcher; at most %d workers seen)',
	$n, 1000 * $p99, scalar @took, 1000 * $sorted[-1], $processes, $max_seen));

diag(sprintf('t/071 took %.1f s', time - $t0));
done_testing();
