# Metrics: the real prometheus-postgres-exporter, with contrib/prometheus/switchboard_queries.yaml,
# connected as a pg_monitor member, exposes switchboard.metrics with the right values on /metrics.
use strict;
use warnings;
use lib 't/..';
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IO::Socket::INET;
use IPC::Run;
use SwitchboardTest;
use Test::More;
use Time::HiRes qw(usleep);

my $exporter_bin = '/usr/bin/prometheus-postgres-exporter';
BAIL_OUT("$exporter_bin missing: apt-get install prometheus-postgres-exporter (scripts/install-deps.sh)")
  unless -x $exporter_bin;
my $queries = File::Spec->rel2abs(dirname(__FILE__) . '/../../../contrib/prometheus/switchboard_queries.yaml');
ok(-f $queries, "queries file $queries");

my ($base, $double) = start_double();
my $exporter;
END
{
	$exporter->kill_kill if $exporter;    # stopped by its pid (SIGTERM, then SIGKILL)
	$double->kill_kill if $double;
}

my $node = new_node('metrics', 'switchboard.enabled' => 'off');
setup_hubspot_route($node, $base);
$node->safe_psql('postgres', 'CREATE ROLE exporter LOGIN IN ROLE pg_monitor');

# An ephemeral port on 127.0.0.1 for the exporter.
my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die "bind: $!";
my $port = $probe->sockport;
close $probe;

my $dsn = sprintf('host=%s port=%d dbname=postgres user=exporter sslmode=disable', $node->host, $node->port);
my $exporter_log = "$PostgreSQL::Test::Utils::tmp_check/exporter.log";
$ENV{DATA_SOURCE_NAME} = $dsn;
$exporter = IPC::Run::start(
	[
		$exporter_bin, "--web.listen-address=127.0.0.1:$port", "--extend.query-path=$queries",
		'--disable-settings-metrics', '--no-collector.database', '--no-collector.bgwriter', '--log.level=warn'
	],
	'>', $exporter_log, '2>&1');

my $http = HTTP::Tiny->new(timeout => 10);
my $scrape = '';
sub scrape
{
	my $res = $http->get("http://127.0.0.1:$port/metrics");
	$scrape = $res->{success} ? $res->{content} : '';
	return $scrape;
}

# The value of a switchboard series for our route, or undef.
sub metric
{
	my ($name) = @_;
	for my $line (split /\n/, $scrape)
	{
		next unless $line =~ /^\Q$name\E\{([^}]*)\} (\S+)$/;
		my ($labels, $value) = ($1, $2);
		return $value + 0 if $labels =~ /route="contacts_hs"/ && $labels =~ /database="postgres"/;
	}
	return undef;
}

ok(wait_for('exporter serving /metrics', sub { scrape() =~ /switchboard_route_pending/ }, 30),
	'/metrics exposes switchboard_route_* series')
  or diag(PostgreSQL::Test::Utils::slurp_file($exporter_log));
like($scrape, qr/^pg_up 1$/m, 'the exporter reaches the cluster');
unlike($scrape, qr/^pg_exporter_user_queries_load_error\{[^}]*\} 1$/m, 'the queries file loads');
like($scrape, qr/^# TYPE switchboard_route_delivered_total counter$/m, 'delivered_total is a counter');
like($scrape, qr/^# TYPE switchboard_route_pending gauge$/m, 'pending is a gauge');
like($scrape, qr/^switchboard_route_pending\{[^}]*endpoint="hubspot"[^}]*kind="hubspot"[^}]*\} /m,
	'series carry endpoint and kind labels');
is(metric('switchboard_route_pending'), 0, 'nothing pending yet');
is(metric('switchboard_route_state'), 0, 'state 0 (ok)');

# Three changes while delivery is paused.
$node->safe_psql('postgres',
	"INSERT INTO contacts (email, first_name) VALUES ('m1\@x.com', 'M1'), ('m2\@x.com', 'M2'), ('m3\@x.com', 'M3')");
usleep(1_100_000);
scrape();
is(metric('switchboard_route_pending'), 3, 'pending 3 after three changes with delivery paused');
is(metric('switchboard_route_dead'), 0, 'no dead letter');
cmp_ok(metric('switchboard_route_oldest_pending_seconds'), '>=', 1, 'oldest_pending_seconds counts the backlog age');

# One of them becomes a dead letter.
$node->safe_psql('postgres', q{
UPDATE switchboard.queue SET state = 'dead', last_error = 'rejected', failed_at = now()
 WHERE id = (SELECT min(id) FROM switchboard.queue)});
scrape();
is(metric('switchboard_route_dead'), 1, 'a dead letter: dead 1');
is(metric('switchboard_route_pending'), 2, 'pending 2');

# Breaker and disabled states as numbers.
$node->safe_psql('postgres', "INSERT INTO switchboard.endpoint_state (endpoint, state) VALUES ('hubspot', 'open') ON CONFLICT (endpoint) DO UPDATE SET state = 'open'");
scrape();
is(metric('switchboard_route_state'), 2, 'an open breaker: state 2');
$node->safe_psql('postgres', "UPDATE switchboard.endpoints SET enabled = false WHERE name = 'hubspot'");
scrape();
is(metric('switchboard_route_state'), 3, 'a disabled endpoint: state 3');
$node->safe_psql('postgres', "UPDATE switchboard.endpoints SET enabled = true WHERE name = 'hubspot'");
$node->safe_psql('postgres', "DELETE FROM switchboard.endpoint_state");

# Delivery resumes: the two pending changes are delivered, the dead letter stays.
$node->safe_psql('postgres', 'ALTER SYSTEM SET switchboard.enabled = on');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
is(sql($node, "SELECT switchboard.wait_idle('60 s')"), 't', 'delivery resumed');
scrape();
is(metric('switchboard_route_delivered_total'), 2, 'delivered_total 2');
is(metric('switchboard_route_pending'), 0, 'pending 0');
is(metric('switchboard_route_dead'), 1, 'dead still 1');
is(metric('switchboard_route_oldest_pending_seconds'), 0, 'no backlog: oldest_pending_seconds 0');
is(metric('switchboard_route_state'), 0, 'state back to 0');
cmp_ok(metric('switchboard_route_requests_total'), '>=', 1, 'requests_total counts the requests');
unlike($scrape, qr/^switchboard_pull_lag_seconds/m, 'a push-only route has no pull lag series');
is(metric('switchboard_route_capture_broken'), 0, 'capture intact: capture_broken 0');

# A capture trigger dropped behind switchboard's back shows, until the route is updated.
$node->safe_psql('postgres', 'DROP TRIGGER switchboard_contacts_hs_update ON contacts');
scrape();
is(metric('switchboard_route_capture_broken'), 1, 'a missing capture trigger: capture_broken 1');
$node->safe_psql('postgres', "UPDATE switchboard.routes SET enabled = true WHERE name = 'contacts_hs'");
scrape();
is(metric('switchboard_route_capture_broken'), 0, 'attached again: capture_broken 0');

$exporter->kill_kill;
undef $exporter;
$node->stop;
done_testing();
